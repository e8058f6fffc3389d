//! Kernel struct member offsets, read from BTF at start.
//!
//! aya gives Rust eBPF programs no CO-RE relocations, so the kernel programs
//! cannot name `struct sock` fields portably. Instead the agent reads the
//! layout of the few structs it needs from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), and passes the byte offsets in through
//! [`KernelConfig`](wirespan_common::config::KernelConfig); the programs
//! then read fields with `bpf_probe_read_kernel(base + offset)`.
//!
//! Many of the fields sit inside anonymous unions and structs (in
//! `struct sock_common`, `skc_daddr` lives in an anonymous struct inside the
//! anonymous union that also holds `skc_addrpair`), so a lookup descends
//! into anonymous members and sums their offsets, as a C compiler would.
//! BTF records member offsets in bits; bitfield members are refused, since
//! a byte offset cannot describe them.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, BtfType, Member, Struct, Type};
use wirespan_common::config::{FdTableOffsets, SockOffsets};

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Longest chain of typedef/const/volatile/restrict/type-tag followed when
/// resolving a member's type. Real chains are a few links long; the limit
/// only guards against a malformed (cyclic) BTF.
const MAX_TYPE_CHAIN: usize = 32;

/// Deepest nesting of anonymous members searched. The kernel's deepest is
/// three or four levels; the limit guards against malformed BTF.
const MAX_ANON_DEPTH: usize = 16;

/// Errors from reading BTF or resolving a member offset.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read BTF from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not valid BTF.
    #[error("cannot parse BTF from {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    /// No struct (or union) of that name in the BTF.
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    /// The struct has no member of that name, not even inside an anonymous
    /// struct or union member.
    #[error("member {member} not found in struct {strukt}")]
    NoMember { strukt: String, member: String },
    /// The member is a bitfield, which has no byte offset.
    #[error("member {member} of struct {strukt} is a bitfield")]
    Bitfield { strukt: String, member: String },
    /// A member path tried to descend into a member that is not a struct or
    /// union (for instance a pointer: offsets do not follow pointers).
    #[error("member {member} of struct {strukt} is not a struct or union")]
    NotComposite { strukt: String, member: String },
    /// `offset_of` was given no member names.
    #[error("empty member path for struct {0}")]
    EmptyPath(String),
    /// The offset does not fit in a `u32`.
    #[error("offset of {0} does not fit in 32 bits")]
    Overflow(String),
    /// The BTF is inconsistent (dangling type id, bad string offset, type
    /// chain too long).
    #[error("malformed BTF while resolving {context}: {detail}")]
    Malformed { context: String, detail: String },
}

/// The kernel's BTF, parsed once and queried for member offsets.
pub struct KernelBtf {
    btf: Btf,
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBtf").finish_non_exhaustive()
    }
}

/// A member found by [`KernelBtf::find_member`]: its offset in bits from the
/// start of the struct searched, and the member itself.
struct Found {
    bit_offset: u64,
    member: Member,
}

impl KernelBtf {
    /// Read the running kernel's BTF from `/sys/kernel/btf/vmlinux`.
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_path(Path::new(VMLINUX_BTF))
    }

    /// Read BTF from a file: a raw BTF blob as found under
    /// `/sys/kernel/btf/` (not an ELF file's `.BTF` section).
    pub fn from_path(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Parse a raw BTF blob held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        Self::parse(bytes, Path::new("<memory>"))
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_bytes(bytes).map_err(|source| BtfError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self { btf })
    }

    /// Byte offset of a member of `strukt`, reached through `member_path`.
    ///
    /// Each element of `member_path` names a member of the struct reached so
    /// far; members inside anonymous structs and unions are found as if they
    /// were direct members (as in C). Every element but the last must be a
    /// struct or union (typedefs and qualifiers are looked through), so
    /// `offset_of("sock", &["__sk_common", "skc_family"])` is the offset of
    /// `sk->__sk_common.skc_family` from the start of `struct sock`.
    pub fn offset_of(&self, strukt: &str, member_path: &[&str]) -> Result<u32, BtfError> {
        if member_path.is_empty() {
            return Err(BtfError::EmptyPath(strukt.to_string()));
        }
        let mut current = self.find_struct(strukt)?;
        let mut current_name = strukt.to_string();
        let mut bits: u64 = 0;

        for (i, &name) in member_path.iter().enumerate() {
            let found = self
                .find_member(&current, &current_name, name, 0)?
                .ok_or_else(|| BtfError::NoMember {
                    strukt: current_name.clone(),
                    member: name.to_string(),
                })?;
            if found.member.bitfield_size().is_some_and(|size| size != 0)
                || found.bit_offset % 8 != 0
            {
                return Err(BtfError::Bitfield {
                    strukt: current_name,
                    member: name.to_string(),
                });
            }
            bits += found.bit_offset;

            if i + 1 < member_path.len() {
                let context = format!("{current_name}.{name}");
                let next = self.composite_of(&found.member, &context)?.ok_or_else(|| {
                    BtfError::NotComposite {
                        strukt: current_name.clone(),
                        member: name.to_string(),
                    }
                })?;
                let next_name = self.name_of(&next, &context)?;
                current_name = if next_name.is_empty() {
                    context
                } else {
                    next_name
                };
                current = next;
            }
        }

        u32::try_from(bits / 8)
            .map_err(|_| BtfError::Overflow(format!("{strukt}.{}", member_path.join("."))))
    }

    /// Offsets of the `struct sock_common` fields the kernel programs read,
    /// counted from the start of `struct sock` (its `__sk_common` member is
    /// at offset 0 on every kernel so far; were it not, its offset would be
    /// included here).
    pub fn sock_offsets(&self) -> Result<SockOffsets, BtfError> {
        let field = |name: &str| self.offset_of("sock", &["__sk_common", name]);
        Ok(SockOffsets {
            skc_family: field("skc_family")?,
            skc_daddr: field("skc_daddr")?,
            skc_rcv_saddr: field("skc_rcv_saddr")?,
            skc_dport: field("skc_dport")?,
            skc_num: field("skc_num")?,
            skc_v6_daddr: field("skc_v6_daddr")?,
            skc_v6_rcv_saddr: field("skc_v6_rcv_saddr")?,
            // Only trace propagation needs it: its absence loses that, not
            // the 4-tuple.
            skc_cookie: field("skc_cookie").unwrap_or(u32::MAX),
            // Only skipping body middles needs them (stream positions):
            // their absence sends those bytes, it loses nothing.
            tcp_copied_seq: self
                .offset_of("tcp_sock", &["copied_seq"])
                .unwrap_or(u32::MAX),
            tcp_write_seq: self
                .offset_of("tcp_sock", &["write_seq"])
                .unwrap_or(u32::MAX),
        })
    }

    /// Offsets for walking a task's file table to the `struct sock` behind
    /// an fd.
    pub fn fdtable_offsets(&self) -> Result<FdTableOffsets, BtfError> {
        Ok(FdTableOffsets {
            task_files: self.offset_of("task_struct", &["files"])?,
            files_fdt: self.offset_of("files_struct", &["fdt"])?,
            fdtable_max_fds: self.offset_of("fdtable", &["max_fds"])?,
            fdtable_fd: self.offset_of("fdtable", &["fd"])?,
            file_private_data: self.offset_of("file", &["private_data"])?,
            file_f_inode: self.offset_of("file", &["f_inode"])?,
            inode_i_mode: self.offset_of("inode", &["i_mode"])?,
            socket_sk: self.offset_of("socket", &["sk"])?,
            socket_type: self.offset_of("socket", &["type"])?,
            _pad: 0,
        })
    }

    /// The struct (or union) named `name`. Forward declarations and other
    /// kinds sharing the name are skipped; of several full definitions the
    /// first is taken (vmlinux BTF is deduplicated, so there is one).
    fn find_struct(&self, name: &str) -> Result<Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| malformed(name, e))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) | Type::Union(s) => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// Search `s` for a member called `name`, descending into anonymous
    /// struct and union members. The offset returned is in bits from the
    /// start of `s`.
    fn find_member(
        &self,
        s: &Struct,
        s_name: &str,
        name: &str,
        depth: usize,
    ) -> Result<Option<Found>, BtfError> {
        // Anonymous members have the empty name; never match them by name.
        if name.is_empty() {
            return Ok(None);
        }
        if depth > MAX_ANON_DEPTH {
            return Err(BtfError::Malformed {
                context: format!("{s_name}.{name}"),
                detail: "anonymous members nested too deep".to_string(),
            });
        }
        for member in &s.members {
            let member_name = self.name_of(member, s_name)?;
            if member_name == name {
                return Ok(Some(Found {
                    bit_offset: u64::from(member.bit_offset()),
                    member: member.clone(),
                }));
            }
            if !member_name.is_empty() {
                continue;
            }
            let Some(inner) = self.composite_of(member, s_name)? else {
                // An anonymous non-composite member: padding (`int :3;`).
                continue;
            };
            if let Some(found) = self.find_member(&inner, s_name, name, depth + 1)? {
                return Ok(Some(Found {
                    bit_offset: u64::from(member.bit_offset()) + found.bit_offset,
                    member: found.member,
                }));
            }
        }
        Ok(None)
    }

    /// The struct or union a member's type resolves to, looking through
    /// typedefs, qualifiers and type tags; `None` if it is anything else.
    fn composite_of(&self, member: &Member, context: &str) -> Result<Option<Struct>, BtfError> {
        let mut t = self
            .btf
            .resolve_chained_type(member)
            .map_err(|e| malformed(context, e))?;
        for _ in 0..MAX_TYPE_CHAIN {
            t = match t {
                Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
                Type::Typedef(ref x) => self.btf.resolve_chained_type(x),
                Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => {
                    self.btf.resolve_chained_type(x)
                }
                Type::TypeTag(ref x) => self.btf.resolve_chained_type(x),
                _ => return Ok(None),
            }
            .map_err(|e| malformed(context, e))?;
        }
        Err(BtfError::Malformed {
            context: context.to_string(),
            detail: "type chain too long".to_string(),
        })
    }

    /// The name of a type or member; the empty string when anonymous.
    fn name_of(&self, t: &dyn BtfType, context: &str) -> Result<String, BtfError> {
        if t.get_name_offset().is_none() {
            return Ok(String::new());
        }
        self.btf.resolve_name(t).map_err(|e| malformed(context, e))
    }
}

fn malformed(context: &str, e: btf_rs::Error) -> BtfError {
    BtfError::Malformed {
        context: context.to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // ---- A tiny BTF writer, for fixtures independent of the kernel. ----

    const KIND_INT: u32 = 1;
    const KIND_PTR: u32 = 2;
    const KIND_STRUCT: u32 = 4;
    const KIND_UNION: u32 = 5;
    const KIND_TYPEDEF: u32 = 8;
    const KIND_CONST: u32 = 10;

    /// `(name, type id, bit offset, bitfield size)`.
    type M<'a> = (&'a str, u32, u32, u32);

    struct Builder {
        types: Vec<u8>,
        strs: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strs: vec![0],
                next_id: 1,
            }
        }

        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strs.len() as u32;
            self.strs.extend_from_slice(name.as_bytes());
            self.strs.push(0);
            off
        }

        fn put(&mut self, words: &[u32]) -> u32 {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let n = self.s(name);
            self.put(&[n, KIND_INT << 24, bytes, bytes * 8])
        }

        fn ptr(&mut self, to: u32) -> u32 {
            self.put(&[0, KIND_PTR << 24, to])
        }

        fn typedef(&mut self, name: &str, to: u32) -> u32 {
            let n = self.s(name);
            self.put(&[n, KIND_TYPEDEF << 24, to])
        }

        fn konst(&mut self, to: u32) -> u32 {
            self.put(&[0, KIND_CONST << 24, to])
        }

        fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[M]) -> u32 {
            let n = self.s(name);
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | members.len() as u32;
            let mut words = vec![n, info, size];
            for &(mname, ty, off, bits) in members {
                let mn = self.s(mname);
                let off = if kind_flag { (bits << 24) | off } else { off };
                words.extend_from_slice(&[mn, ty, off]);
            }
            self.put(&words)
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            for w in [
                24,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strs.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strs);
            out
        }
    }

    /// A miniature `struct sock_common` / `struct sock`, shaped like the
    /// kernel's but with `__sk_common` at a non-zero offset.
    fn fixture() -> KernelBtf {
        let mut b = Builder::new();
        let u8_ = b.int("u8", 1);
        let u16_ = b.int("u16", 2);
        let u32_ = b.int("u32", 4);
        let u64_ = b.int("u64", 8);
        let addrs = b.composite(
            KIND_STRUCT,
            "",
            8,
            &[("skc_daddr", u32_, 0, 0), ("skc_rcv_saddr", u32_, 32, 0)],
        );
        let addrpair = b.composite(
            KIND_UNION,
            "",
            8,
            &[("skc_addrpair", u64_, 0, 0), ("", addrs, 0, 0)],
        );
        let ports = b.composite(
            KIND_STRUCT,
            "",
            4,
            &[("skc_dport", u16_, 0, 0), ("skc_num", u16_, 16, 0)],
        );
        let portpair = b.composite(
            KIND_UNION,
            "",
            4,
            &[("skc_portpair", u32_, 0, 0), ("", ports, 0, 0)],
        );
        // An anonymous struct nested two levels deep, behind a typedef.
        let deep = b.composite(KIND_STRUCT, "", 4, &[("skc_deep", u32_, 0, 0)]);
        let deep_union = b.composite(KIND_UNION, "", 4, &[("", deep, 0, 0)]);
        let deep_td = b.typedef("deep_t", deep_union);
        let proto = b.composite(KIND_STRUCT, "proto", 4, &[("p", u32_, 0, 0)]);
        let proto_ptr = b.ptr(proto);
        let common = b.composite(
            KIND_STRUCT,
            "sock_common",
            32,
            &[
                ("", addrpair, 0, 0),
                ("", portpair, 64, 0),
                ("skc_family", u16_, 96, 0),
                ("skc_reuse", u8_, 112, 4),
                ("skc_reuseport", u8_, 116, 1),
                ("", deep_td, 128, 0),
                ("skc_prot", proto_ptr, 192, 0),
            ],
        );
        let common_td = b.typedef("sock_common_t", common);
        let common_const = b.konst(common_td);
        b.composite(
            KIND_STRUCT,
            "sock",
            48,
            &[
                ("sk_pad", u64_, 0, 0),
                ("__sk_common", common_const, 128, 0),
            ],
        );
        KernelBtf::from_bytes(&b.build()).expect("fixture BTF parses")
    }

    #[test]
    fn finds_members_inside_anonymous_unions_and_structs() {
        let btf = fixture();
        let off = |m: &str| btf.offset_of("sock_common", &[m]).expect(m);
        assert_eq!(off("skc_addrpair"), 0);
        assert_eq!(off("skc_daddr"), 0);
        assert_eq!(off("skc_rcv_saddr"), 4);
        assert_eq!(off("skc_portpair"), 8);
        assert_eq!(off("skc_dport"), 8);
        assert_eq!(off("skc_num"), 10);
        assert_eq!(off("skc_family"), 12);
        assert_eq!(off("skc_deep"), 16);
        assert_eq!(off("skc_prot"), 24);
    }

    #[test]
    fn descends_through_named_members_typedefs_and_qualifiers() {
        let btf = fixture();
        assert_eq!(btf.offset_of("sock", &["__sk_common"]).unwrap(), 16);
        assert_eq!(
            btf.offset_of("sock", &["__sk_common", "skc_num"]).unwrap(),
            16 + 10
        );
        assert_eq!(
            btf.offset_of("sock", &["__sk_common", "skc_rcv_saddr"])
                .unwrap(),
            16 + 4
        );
        assert_eq!(btf.offset_of("proto", &["p"]).unwrap(), 0);
    }

    #[test]
    fn unknown_struct_is_an_error() {
        let btf = fixture();
        let err = btf.offset_of("no_such_struct", &["x"]).unwrap_err();
        assert!(matches!(&err, BtfError::NoStruct(s) if s == "no_such_struct"));
        assert_eq!(
            err.to_string(),
            "struct no_such_struct not found in kernel BTF"
        );
        // A name that exists but is not a struct: `u32` is an int.
        assert!(matches!(
            btf.offset_of("u32", &["x"]),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn unknown_member_is_an_error() {
        let btf = fixture();
        let err = btf.offset_of("sock_common", &["skc_bogus"]).unwrap_err();
        assert!(matches!(
            &err,
            BtfError::NoMember { strukt, member } if strukt == "sock_common" && member == "skc_bogus"
        ));
        assert_eq!(
            err.to_string(),
            "member skc_bogus not found in struct sock_common"
        );
        // Reported against the nested struct's own name.
        let err = btf.offset_of("sock", &["__sk_common", "nope"]).unwrap_err();
        assert!(matches!(
            &err,
            BtfError::NoMember { strukt, member } if strukt == "sock_common" && member == "nope"
        ));
        // Anonymous members cannot be named by the empty string.
        assert!(matches!(
            btf.offset_of("sock_common", &[""]),
            Err(BtfError::NoMember { .. })
        ));
        // Members of a nested struct are not members of the outer one.
        assert!(matches!(
            btf.offset_of("sock", &["skc_num"]),
            Err(BtfError::NoMember { .. })
        ));
    }

    #[test]
    fn bitfields_are_refused() {
        let btf = fixture();
        for m in ["skc_reuse", "skc_reuseport"] {
            assert!(matches!(
                btf.offset_of("sock_common", &[m]),
                Err(BtfError::Bitfield { .. })
            ));
        }
    }

    #[test]
    fn other_errors() {
        let btf = fixture();
        assert!(matches!(
            btf.offset_of("sock_common", &["skc_prot", "p"]),
            Err(BtfError::NotComposite { .. })
        ));
        assert!(matches!(
            btf.offset_of("sock_common", &["skc_family", "x"]),
            Err(BtfError::NotComposite { .. })
        ));
        assert!(matches!(
            btf.offset_of("sock_common", &[]),
            Err(BtfError::EmptyPath(_))
        ));
        // The fixture has no skc_v6_daddr.
        assert!(matches!(
            btf.sock_offsets(),
            Err(BtfError::NoMember { member, .. }) if member == "skc_v6_daddr"
        ));
        assert!(matches!(
            KernelBtf::from_path(Path::new("/nonexistent/btf")),
            Err(BtfError::Read { .. })
        ));
        assert!(matches!(
            KernelBtf::from_bytes(b"not btf at all, definitely not"),
            Err(BtfError::Parse { .. })
        ));
    }

    // ---- The running kernel. ----

    /// Outside CI a missing prerequisite skips with a message; in CI
    /// (`CI=true`, where `cargo xtask setup` installs bpftool) it fails.
    fn skip(reason: &str) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and: {reason}"
        );
        eprintln!("SKIPPED: {reason}");
    }

    fn kernel() -> Option<KernelBtf> {
        if !Path::new(VMLINUX_BTF).exists() {
            skip(&format!(
                "{VMLINUX_BTF} is absent (kernel without CONFIG_DEBUG_INFO_BTF)"
            ));
            return None;
        }
        let start = std::time::Instant::now();
        let btf = KernelBtf::from_sys().expect("kernel BTF parses");
        eprintln!("parsed {VMLINUX_BTF} in {:?}", start.elapsed());
        Some(btf)
    }

    #[test]
    fn kernel_sock_offsets_are_plausible() {
        let Some(btf) = kernel() else { return };
        let s = btf.sock_offsets().expect("sock offsets");
        eprintln!("{s:?}");
        // The layout of struct sock_common: the address pair, then the port
        // pair, then the family; the IPv6 addresses come later.
        assert_eq!(s.skc_rcv_saddr, s.skc_daddr + 4);
        assert_eq!(s.skc_num, s.skc_dport + 2, "skc_dport/skc_num are a pair");
        assert!(s.skc_daddr < s.skc_dport);
        assert!(s.skc_dport < s.skc_family);
        assert!(s.skc_family < s.skc_v6_daddr);
        assert_eq!(s.skc_v6_rcv_saddr, s.skc_v6_daddr + 16);
        assert_ne!(s.skc_cookie, u32::MAX, "skc_cookie found");
        // struct tcp_sock begins with struct inet_connection_sock, which
        // begins with struct sock: its own fields come after those.
        let sock = btf.find_struct("sock").unwrap().size() as u32;
        assert!(s.tcp_copied_seq >= sock, "copied_seq {}", s.tcp_copied_seq);
        assert!(s.tcp_write_seq >= sock, "write_seq {}", s.tcp_write_seq);
        assert_ne!(s.tcp_copied_seq, s.tcp_write_seq);
        // __sk_common is at the start of struct sock, so the offsets from
        // struct sock equal those within struct sock_common.
        assert_eq!(btf.offset_of("sock", &["__sk_common"]).unwrap(), 0);
        assert_eq!(
            btf.offset_of("sock_common", &["skc_dport"]).unwrap(),
            s.skc_dport
        );
        let size = btf.find_struct("sock_common").unwrap().size() as u32;
        assert!(s.skc_v6_rcv_saddr + 16 <= size);
    }

    #[test]
    fn kernel_fdtable_offsets_are_plausible() {
        let Some(btf) = kernel() else { return };
        let f = btf.fdtable_offsets().expect("fdtable offsets");
        eprintln!("{f:?}");
        let size = |s: &str| btf.find_struct(s).unwrap().size() as u32;
        assert!(f.task_files + 8 <= size("task_struct"));
        assert!(f.files_fdt + 8 <= size("files_struct"));
        assert!(f.fdtable_max_fds + 4 <= size("fdtable"));
        assert!(f.fdtable_fd + 8 <= size("fdtable"));
        assert!(f.file_private_data + 8 <= size("file"));
        assert!(f.file_f_inode + 8 <= size("file"));
        assert!(f.inode_i_mode + 2 <= size("inode"));
        assert!(f.socket_sk + 8 <= size("socket"));
        // Pointers are 8-byte aligned on 64-bit kernels.
        for off in [
            f.task_files,
            f.files_fdt,
            f.fdtable_fd,
            f.file_private_data,
            f.file_f_inode,
            f.socket_sk,
        ] {
            assert_eq!(off % 8, 0);
        }
        // i_mode is the first member of struct inode.
        assert_eq!(f.inode_i_mode, 0);
    }

    /// One type from `bpftool btf dump ... format raw`.
    #[derive(Default)]
    struct RawType {
        kind: String,
        name: String,
        type_id: Option<u32>,
        /// `(name, type id, bit offset, bitfield size)`.
        members: Vec<(String, u32, u64, u32)>,
    }

    fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_end_matches(','))
    }

    fn quoted(line: &str) -> String {
        let mut parts = line.split('\'');
        parts.next();
        match parts.next() {
            Some("(anon)") | None => String::new(),
            Some(n) => n.to_string(),
        }
    }

    fn parse_bpftool_raw(text: &str) -> HashMap<u32, RawType> {
        let mut types = HashMap::new();
        let mut current: Option<u32> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('[') {
                let (id, rest) = rest.split_once("] ").expect("raw type header");
                let id: u32 = id.parse().expect("type id");
                let kind = rest.split_whitespace().next().unwrap_or("").to_string();
                let t = RawType {
                    kind,
                    name: quoted(rest),
                    type_id: field(rest, "type_id").map(|v| v.parse().unwrap()),
                    members: Vec::new(),
                };
                types.insert(id, t);
                current = Some(id);
            } else if let Some(rest) = line.strip_prefix('\t') {
                let Some(t) = current.and_then(|id| types.get_mut(&id)) else {
                    continue;
                };
                if t.kind != "STRUCT" && t.kind != "UNION" {
                    continue;
                }
                t.members.push((
                    quoted(rest),
                    field(rest, "type_id").unwrap().parse().unwrap(),
                    field(rest, "bits_offset").unwrap().parse().unwrap(),
                    field(rest, "bitfield_size").map_or(0, |v| v.parse().unwrap()),
                ));
            }
        }
        types
    }

    /// Independent of btf-rs: the offset in bits of a member path, from
    /// bpftool's (libbpf's) reading of the same BTF.
    fn raw_offset(types: &HashMap<u32, RawType>, strukt: &str, path: &[&str]) -> Option<u64> {
        fn composite(types: &HashMap<u32, RawType>, mut id: u32) -> Option<u32> {
            loop {
                let t = types.get(&id)?;
                match t.kind.as_str() {
                    "STRUCT" | "UNION" => return Some(id),
                    "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => id = t.type_id?,
                    _ => return None,
                }
            }
        }
        fn find(types: &HashMap<u32, RawType>, id: u32, name: &str) -> Option<(u64, u32)> {
            for (n, ty, off, bits) in &types.get(&id)?.members {
                if n == name {
                    assert_eq!(*bits, 0, "{name} is a bitfield");
                    return Some((*off, *ty));
                }
                if n.is_empty()
                    && let Some(inner) = composite(types, *ty)
                    && let Some((o, t)) = find(types, inner, name)
                {
                    return Some((off + o, t));
                }
            }
            None
        }
        let mut id = *types
            .iter()
            .find(|(_, t)| t.kind == "STRUCT" && t.name == strukt)?
            .0;
        let mut total = 0;
        for (i, name) in path.iter().enumerate() {
            let (off, ty) = find(types, id, name)?;
            total += off;
            if i + 1 < path.len() {
                id = composite(types, ty)?;
            }
        }
        Some(total)
    }

    #[test]
    fn kernel_offsets_match_bpftool() {
        let Some(btf) = kernel() else { return };
        let out = match std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX_BTF, "format", "raw"])
            .output()
        {
            Ok(out) if out.status.success() => out,
            Ok(out) => {
                skip(&format!(
                    "bpftool failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
                return;
            }
            Err(e) => {
                skip(&format!(
                    "bpftool not available ({e}); `cargo xtask setup` installs it"
                ));
                return;
            }
        };
        let types = parse_bpftool_raw(&String::from_utf8_lossy(&out.stdout));
        let check = |strukt: &str, path: &[&str], ours: u32| {
            let bits = raw_offset(&types, strukt, path)
                .unwrap_or_else(|| panic!("bpftool dump lacks {strukt}.{}", path.join(".")));
            assert_eq!(bits % 8, 0);
            assert_eq!(
                u64::from(ours),
                bits / 8,
                "{strukt}.{} differs from bpftool",
                path.join(".")
            );
        };

        let s = btf.sock_offsets().expect("sock offsets");
        for (name, ours) in [
            ("skc_family", s.skc_family),
            ("skc_daddr", s.skc_daddr),
            ("skc_rcv_saddr", s.skc_rcv_saddr),
            ("skc_dport", s.skc_dport),
            ("skc_num", s.skc_num),
            ("skc_v6_daddr", s.skc_v6_daddr),
            ("skc_v6_rcv_saddr", s.skc_v6_rcv_saddr),
            ("skc_cookie", s.skc_cookie),
        ] {
            check("sock", &["__sk_common", name], ours);
            check("sock_common", &[name], ours);
        }

        let f = btf.fdtable_offsets().expect("fdtable offsets");
        check("task_struct", &["files"], f.task_files);
        check("files_struct", &["fdt"], f.files_fdt);
        check("fdtable", &["max_fds"], f.fdtable_max_fds);
        check("fdtable", &["fd"], f.fdtable_fd);
        check("file", &["private_data"], f.file_private_data);
        check("file", &["f_inode"], f.file_f_inode);
        check("inode", &["i_mode"], f.inode_i_mode);
        check("socket", &["sk"], f.socket_sk);
    }
}
