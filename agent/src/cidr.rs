//! Destination networks given as `10.0.0.0/8,fd00::/8` (`--inject-cidrs`).
//!
//! The kernel keeps one longest-prefix-match trie for both families: an
//! IPv4 network is stored as its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`,
//! prefix + 96), which is also how a dual-stack socket reports an IPv4
//! peer, so one lookup serves both.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

/// One network: its address as 16 bytes (IPv4 mapped) and its prefix
/// length over those 128 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: [u8; 16],
    pub prefix: u8,
    /// As given, for messages (`10.0.0.0/8`, not its mapped form).
    shown: IpAddr,
    shown_prefix: u8,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an address/prefix (expected e.g. 10.0.0.0/8 or fd00::/8)")]
    Syntax(String),
    #[error("`{0}`: the prefix length is larger than the address")]
    Prefix(String),
    #[error("`{given}`: bits are set past the prefix (did you mean {fixed}?)")]
    HostBits { given: String, fixed: String },
    #[error("empty list (expected e.g. 10.0.0.0/8,fd00::/8)")]
    Empty,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.into()))?;
        let ip: IpAddr = ip.parse().map_err(|_| CidrError::Syntax(s.into()))?;
        let len: u8 = len.parse().map_err(|_| CidrError::Syntax(s.into()))?;
        let (addr, prefix) = match ip {
            IpAddr::V4(v4) if len <= 32 => (v4.to_ipv6_mapped().octets(), len + 96),
            IpAddr::V6(v6) if len <= 128 => (v6.octets(), len),
            _ => return Err(CidrError::Prefix(s.into())),
        };
        let masked = mask(addr, prefix);
        if masked != addr {
            let fixed = match ip {
                IpAddr::V4(_) => Ipv6Addr::from(masked)
                    .to_ipv4_mapped()
                    .map_or_else(String::new, |v4| v4.to_string()),
                IpAddr::V6(_) => Ipv6Addr::from(masked).to_string(),
            };
            return Err(CidrError::HostBits {
                given: s.into(),
                fixed: format!("{fixed}/{len}"),
            });
        }
        Ok(Cidr {
            addr,
            prefix,
            shown: ip,
            shown_prefix: len,
        })
    }
}

/// `addr` with every bit past `prefix` cleared.
fn mask(addr: [u8; 16], prefix: u8) -> [u8; 16] {
    let bits = u128::from_be_bytes(addr);
    let keep = match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p)),
    };
    (bits & keep).to_be_bytes()
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.shown, self.shown_prefix)
    }
}

/// Networks given as a comma-separated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrList(Vec<Cidr>);

impl CidrList {
    pub fn iter(&self) -> impl Iterator<Item = &Cidr> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for CidrList {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let list = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(CidrError::Empty);
        }
        Ok(CidrList(list))
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_stored_mapped() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        let mut want = [0u8; 16];
        want[10] = 0xff;
        want[11] = 0xff;
        want[12] = 10;
        want[13] = 1;
        assert_eq!(c.addr, want);
        assert_eq!(c.prefix, 112);
        assert_eq!(c.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn ipv6_as_given() {
        let c: Cidr = "fd00::/8".parse().unwrap();
        assert_eq!(c.addr[0], 0xfd);
        assert_eq!(c.prefix, 8);
        let all: Cidr = "::/0".parse().unwrap();
        assert_eq!((all.addr, all.prefix), ([0; 16], 0));
        let one: Cidr = "127.0.0.1/32".parse().unwrap();
        assert_eq!(one.prefix, 128);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits {
                given: "10.0.0.1/8".into(),
                fixed: "10.0.0.0/8".into()
            })
        );
        assert_eq!(
            "fd00::1/8".parse::<Cidr>().unwrap_err().to_string(),
            "`fd00::1/8`: bits are set past the prefix (did you mean fd00::/8?)"
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix("10.0.0.0/33".into()))
        );
        for bad in ["10.0.0.0", "10.0.0/8", "x/8", "10.0.0.0/-1", "::/129x"] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))),
                "{bad}"
            );
        }
        assert_eq!(" , ".parse::<CidrList>(), Err(CidrError::Empty));
    }

    #[test]
    fn list_round_trips() {
        let l: CidrList = "127.0.0.0/8, ::1/128".parse().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l.to_string(), "127.0.0.0/8,::1/128");
    }
}
