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
//!
//! The BTF is read by [`raw`], which keeps the file's bytes and an index of
//! its types rather than decoding all ~150k of them: the agent looks up a
//! dozen, and start-up's peak memory is what an agent's limit must cover.

mod raw;

use std::path::{Path, PathBuf};

use raw::{Kind, Member, RawBtf, Type};
use wirespan_common::config::{FdTableOffsets, SockOffsets};

pub use raw::FormatError;

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
        source: FormatError,
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
    raw: RawBtf,
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBtf")
            .field("types", &self.raw.type_count())
            .finish_non_exhaustive()
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
        Self::parse(bytes, path)
    }

    /// Parse a raw BTF blob held in memory (a copy of it is kept).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        Self::parse(bytes.to_vec(), Path::new("<memory>"))
    }

    fn parse(bytes: Vec<u8>, path: &Path) -> Result<Self, BtfError> {
        let raw = RawBtf::parse(bytes).map_err(|source| BtfError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self { raw })
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
            if found.member.bitfield_size != 0 || found.bit_offset % 8 != 0 {
                return Err(BtfError::Bitfield {
                    strukt: current_name,
                    member: name.to_string(),
                });
            }
            let overflow = || BtfError::Overflow(format!("{strukt}.{}", member_path.join(".")));
            bits = bits.checked_add(found.bit_offset).ok_or_else(overflow)?;

            if i + 1 < member_path.len() {
                let context = format!("{current_name}.{name}");
                let next = self
                    .composite_of(found.member.type_id, &context)?
                    .ok_or_else(|| BtfError::NotComposite {
                        strukt: current_name.clone(),
                        member: name.to_string(),
                    })?;
                let next_name = self.name_of(next.name_off, &context)?;
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
    ///
    /// A linear scan of every type: there is no name index to build, and a
    /// scan of vmlinux (~150k types) takes ~0.1 ms, done ~20 times at start.
    fn find_struct(&self, name: &str) -> Result<Type<'_>, BtfError> {
        if name.is_empty() {
            return Err(BtfError::NoStruct(String::new()));
        }
        for t in self.raw.types() {
            let t = t.map_err(|e| malformed(name, e))?;
            if matches!(t.kind, Kind::Struct | Kind::Union)
                && t.name_off != 0
                && self
                    .raw
                    .name_is(t.name_off, name.as_bytes())
                    .map_err(|e| malformed(name, e))?
            {
                return Ok(t);
            }
        }
        Err(BtfError::NoStruct(name.to_string()))
    }

    /// Search `s` for a member called `name`, descending into anonymous
    /// struct and union members. The offset returned is in bits from the
    /// start of `s`.
    fn find_member(
        &self,
        s: &Type<'_>,
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
        let name_is = |off, name: &str| {
            self.raw
                .name_is(off, name.as_bytes())
                .map_err(|e| malformed(s_name, e))
        };
        for member in s.members() {
            // Compared in place: no member name is copied out.
            let anonymous = member.name_off == 0 || name_is(member.name_off, "")?;
            if !anonymous {
                if name_is(member.name_off, name)? {
                    return Ok(Some(Found {
                        bit_offset: u64::from(member.bit_offset),
                        member,
                    }));
                }
                continue;
            }
            let Some(inner) = self.composite_of(member.type_id, s_name)? else {
                // An anonymous non-composite member: padding (`int :3;`).
                continue;
            };
            if let Some(found) = self.find_member(&inner, s_name, name, depth + 1)? {
                let bit_offset = u64::from(member.bit_offset)
                    .checked_add(found.bit_offset)
                    .ok_or_else(|| BtfError::Overflow(format!("{s_name}.{name}")))?;
                return Ok(Some(Found {
                    bit_offset,
                    member: found.member,
                }));
            }
        }
        Ok(None)
    }

    /// The struct or union type `type_id` resolves to, looking through
    /// typedefs, qualifiers and type tags; `None` if it is anything else.
    fn composite_of(&self, type_id: u32, context: &str) -> Result<Option<Type<'_>>, BtfError> {
        let resolve = |id| self.raw.type_by_id(id).map_err(|e| malformed(context, e));
        let mut t = resolve(type_id)?;
        for _ in 0..MAX_TYPE_CHAIN {
            let Some(ty) = t else {
                // void
                return Ok(None);
            };
            t = match ty.kind {
                Kind::Struct | Kind::Union => return Ok(Some(ty)),
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    resolve(ty.referenced_type())?
                }
                _ => return Ok(None),
            };
        }
        Err(BtfError::Malformed {
            context: context.to_string(),
            detail: "type chain too long".to_string(),
        })
    }

    /// The name at `name_off`; the empty string when anonymous (0). Names
    /// are for messages, so bytes that are not UTF-8 are replaced.
    fn name_of(&self, name_off: u32, context: &str) -> Result<String, BtfError> {
        if name_off == 0 {
            return Ok(String::new());
        }
        let name = self.raw.name(name_off).map_err(|e| malformed(context, e))?;
        Ok(String::from_utf8_lossy(name).into_owned())
    }
}

fn malformed(context: &str, e: FormatError) -> BtfError {
    BtfError::Malformed {
        context: context.to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod raw_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod writer;
