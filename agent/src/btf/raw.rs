//! A minimal, zero-copy reader of raw BTF (the format of
//! `/sys/kernel/btf/vmlinux`; see the kernel's `include/uapi/linux/btf.h`
//! and `Documentation/bpf/btf.rst`).
//!
//! The agent needs the member offsets of a dozen structs out of ~150k
//! types. A general BTF library materialises every type (and its strings)
//! in memory, which costs ~45 MB of peak RSS for a 5.5 MB file. This reader
//! keeps the file's bytes as they are and builds only an index from type id
//! to byte offset (4 bytes per type); types, members and names are decoded
//! on demand from the bytes.
//!
//! The bytes are untrusted: every length and offset is checked, and
//! nothing is allocated beyond the bytes themselves and the index, whose
//! length is bounded by the type section's (a type takes at least 12
//! bytes). Only little-endian BTF is read (every target the agent runs on).

use std::ops::Range;

/// The magic number, as read little-endian from the first two bytes.
const MAGIC: u16 = 0xeb9f;
/// The magic number of big-endian BTF, read little-endian.
const MAGIC_SWAPPED: u16 = 0x9feb;
/// The only BTF version there is.
const VERSION: u8 = 1;
/// `struct btf_header`: magic, version, flags, hdr_len, then the offsets
/// and lengths of the type and string sections. Later kernels may append
/// fields (`hdr_len` says how long the header is); they are skipped.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size-or-type.
const TYPE_HEADER_LEN: usize = 12;

/// What is wrong with a BTF blob: found while indexing it (then reported as
/// [`BtfError::Parse`](super::BtfError::Parse)) or, for ids and names only
/// checked when followed, during a lookup (as
/// [`BtfError::Malformed`](super::BtfError::Malformed)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("header truncated: {len} bytes, a BTF header has {HEADER_LEN}")]
    HeaderTruncated { len: usize },
    #[error("bad magic {0:#06x}, expected 0xeb9f")]
    BadMagic(u16),
    #[error("big-endian BTF (magic bytes eb 9f) is not supported, only little-endian")]
    BigEndian,
    #[error("unsupported BTF version {0}, expected 1")]
    UnsupportedVersion(u8),
    #[error("header length {hdr_len} is shorter than {HEADER_LEN} or past the end of {len} bytes")]
    BadHeaderLen { hdr_len: u32, len: usize },
    #[error(
        "{section} section out of bounds: offset {off} + length {len} past the \
         {available} bytes after the header"
    )]
    SectionOutOfBounds {
        section: &'static str,
        off: u32,
        len: u32,
        available: usize,
    },
    #[error("type id {id} truncated by the end of the type section")]
    TypeTruncated { id: u32 },
    #[error("unknown BTF kind {kind} at type id {id}")]
    UnknownKind { kind: u32, id: u32 },
    #[error("dangling type id {id} (the BTF has {count} types)")]
    DanglingTypeId { id: u32, count: u32 },
    #[error("string offset {off} out of bounds (the string section has {len} bytes)")]
    StringOutOfBounds { off: u32, len: usize },
    #[error("string at offset {off} is not NUL-terminated")]
    StringUnterminated { off: u32 },
}

/// A BTF type kind (`BTF_KIND_*`); kind 0 (`UNKN`) is only ever type id 0,
/// void, which has no entry in the type section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(kind: u32) -> Option<Self> {
        Some(match kind {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the 12-byte common header: every kind's must be
    /// skipped, whether we use it or not, to find the next type.
    fn trailing_len(self, vlen: u16) -> usize {
        // At most 12 * 0xffff: no overflow.
        let vlen = usize::from(vlen);
        match self {
            // The encoding (signedness, bit offset and size).
            Self::Int => 4,
            // `struct btf_array`: element type, index type, count.
            Self::Array => 12,
            // `struct btf_member`: name_off, type, offset.
            Self::Struct | Self::Union => 12 * vlen,
            // `struct btf_enum`: name_off, 32-bit value.
            Self::Enum => 8 * vlen,
            // `struct btf_param`: name_off, type.
            Self::FuncProto => 8 * vlen,
            // `struct btf_var`: linkage.
            Self::Var => 4,
            // `struct btf_var_secinfo`: type, offset, size.
            Self::Datasec => 12 * vlen,
            // `struct btf_decl_tag`: component index.
            Self::DeclTag => 4,
            // `struct btf_enum64`: name_off, value low and high halves.
            Self::Enum64 => 12 * vlen,
            // FUNC's vlen is its linkage, not a count: nothing follows.
            Self::Ptr
            | Self::Fwd
            | Self::Typedef
            | Self::Volatile
            | Self::Const
            | Self::Restrict
            | Self::Func
            | Self::Float
            | Self::TypeTag => 0,
        }
    }
}

/// One type, decoded from the bytes it borrows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Type<'a> {
    pub kind: Kind,
    /// Offset of the name in the string section; 0 for anonymous types.
    pub name_off: u32,
    kind_flag: bool,
    /// The size (INT, STRUCT, UNION, ENUM, DATASEC, FLOAT) or the
    /// referenced type id (PTR, TYPEDEF, qualifiers, FUNC, VAR, tags).
    size_or_type: u32,
    trailing: &'a [u8],
}

impl<'a> Type<'a> {
    /// The size in bytes, for the kinds that have one. Only the tests'
    /// plausibility checks need it.
    #[cfg(test)]
    pub fn size(&self) -> u32 {
        self.size_or_type
    }

    /// The type referred to, for the kinds that refer to one.
    pub fn referenced_type(&self) -> u32 {
        self.size_or_type
    }

    /// The members of a STRUCT or UNION; none for other kinds.
    pub fn members(&self) -> impl Iterator<Item = Member> + 'a {
        let kind_flag = self.kind_flag;
        let trailing = match self.kind {
            Kind::Struct | Kind::Union => self.trailing,
            _ => &[],
        };
        trailing.chunks_exact(12).map(move |m| {
            let word = |at: usize| read_u32(m, at).unwrap_or(0);
            let offset = word(8);
            // With kind_flag set, the top byte is the bitfield size and
            // the low 24 bits the bit offset.
            let (bit_offset, bitfield_size) = if kind_flag {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            Member {
                name_off: word(0),
                type_id: word(4),
                bit_offset,
                bitfield_size,
            }
        })
    }
}

/// A member of a STRUCT or UNION.
#[derive(Debug, Clone, Copy)]
pub(super) struct Member {
    pub name_off: u32,
    pub type_id: u32,
    /// In bits from the start of the enclosing struct or union.
    pub bit_offset: u32,
    /// 0 unless the member is a bitfield.
    pub bitfield_size: u32,
}

/// A BTF blob and the index of its types.
pub(super) struct RawBtf {
    bytes: Vec<u8>,
    types: Range<usize>,
    strings: Range<usize>,
    /// Byte offset in the type section of type id `i + 1` (id 0 is void).
    index: Vec<u32>,
}

impl RawBtf {
    /// Check the header and index the type section.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, FormatError> {
        let len = bytes.len();
        match read_u16(&bytes, 0) {
            None => return Err(FormatError::HeaderTruncated { len }),
            Some(MAGIC) => {}
            Some(MAGIC_SWAPPED) => return Err(FormatError::BigEndian),
            Some(magic) => return Err(FormatError::BadMagic(magic)),
        }
        let word = |at: usize| read_u32(&bytes, at).ok_or(FormatError::HeaderTruncated { len });
        let hdr_len = word(4)?;
        let [type_off, type_len, str_off, str_len] = [word(8)?, word(12)?, word(16)?, word(20)?];
        let version = bytes.get(2).copied().unwrap_or(0);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let body = usize::try_from(hdr_len)
            .ok()
            .filter(|&h| h >= HEADER_LEN && h <= len)
            .ok_or(FormatError::BadHeaderLen { hdr_len, len })?;
        let section = |off: u32, sec_len: u32| {
            let start = body.checked_add(usize::try_from(off).ok()?)?;
            let end = start.checked_add(usize::try_from(sec_len).ok()?)?;
            (end <= len).then_some(start..end)
        };
        let out_of_bounds = |section, off, sec_len| FormatError::SectionOutOfBounds {
            section,
            off,
            len: sec_len,
            available: len.saturating_sub(body),
        };
        let types =
            section(type_off, type_len).ok_or_else(|| out_of_bounds("type", type_off, type_len))?;
        let strings =
            section(str_off, str_len).ok_or_else(|| out_of_bounds("string", str_off, str_len))?;

        let type_section = bytes.get(types.clone()).unwrap_or(&[]);
        // Two passes: the first checks every type and counts them, so the
        // index is allocated once at its exact size (no doubling: the
        // index is the only memory besides the bytes).
        let mut count = 0usize;
        walk_types(type_section, |_| count += 1)?;
        let mut index = Vec::with_capacity(count);
        walk_types(type_section, |off| index.push(off))?;
        Ok(Self {
            bytes,
            types,
            strings,
            index,
        })
    }

    /// How many types there are, not counting void (id 0).
    pub fn type_count(&self) -> u32 {
        // The index has at most u32::MAX / 12 entries (see `walk_types`).
        u32::try_from(self.index.len()).unwrap_or(u32::MAX)
    }

    /// The type of id `id`; `None` for void (id 0).
    pub fn type_by_id(&self, id: u32) -> Result<Option<Type<'_>>, FormatError> {
        if id == 0 {
            return Ok(None);
        }
        self.non_void(id).map(Some)
    }

    /// Every type, in id order from 1.
    pub fn types(&self) -> impl Iterator<Item = Result<Type<'_>, FormatError>> + '_ {
        (1..=self.type_count()).map(|id| self.non_void(id))
    }

    fn non_void(&self, id: u32) -> Result<Type<'_>, FormatError> {
        let dangling = FormatError::DanglingTypeId {
            id,
            count: self.type_count(),
        };
        let slot = id.checked_sub(1).ok_or(dangling.clone())?;
        let off = usize::try_from(slot)
            .ok()
            .and_then(|slot| self.index.get(slot))
            .and_then(|&off| usize::try_from(off).ok())
            .ok_or(dangling)?;
        decode(self.type_section(), off, id).map(|(t, _)| t)
    }

    /// The string at `off` in the string section, without its NUL.
    pub fn name(&self, off: u32) -> Result<&[u8], FormatError> {
        let tail = self.string_tail(off)?;
        let end = memchr::memchr(0, tail).ok_or(FormatError::StringUnterminated { off })?;
        Ok(tail.get(..end).unwrap_or(&[]))
    }

    /// Whether the string at `off` is `name`; cheaper than [`Self::name`]
    /// as it reads no further than `name`'s length plus one.
    pub fn name_is(&self, off: u32, name: &[u8]) -> Result<bool, FormatError> {
        let tail = self.string_tail(off)?;
        Ok(tail.get(..name.len()) == Some(name) && tail.get(name.len()) == Some(&0))
    }

    fn string_tail(&self, off: u32) -> Result<&[u8], FormatError> {
        let strings = self.bytes.get(self.strings.clone()).unwrap_or(&[]);
        usize::try_from(off)
            .ok()
            .and_then(|off| strings.get(off..))
            .filter(|tail| !tail.is_empty())
            .ok_or(FormatError::StringOutOfBounds {
                off,
                len: strings.len(),
            })
    }

    fn type_section(&self) -> &[u8] {
        self.bytes.get(self.types.clone()).unwrap_or(&[])
    }
}

/// Step through the type section, calling `each` with every type's offset
/// in it; fails on an unknown kind or a type cut short by the section's end.
fn walk_types(section: &[u8], mut each: impl FnMut(u32)) -> Result<(), FormatError> {
    let mut off = 0usize;
    let mut id: u32 = 1;
    while off < section.len() {
        // Offsets below the section's length fit in 32 bits, since the
        // header gives that length as a u32.
        each(u32::try_from(off).map_err(|_| FormatError::TypeTruncated { id })?);
        off = decode(section, off, id)?.1;
        id = id.checked_add(1).ok_or(FormatError::TypeTruncated { id })?;
    }
    Ok(())
}

/// The type at `off` in the type section, and the offset just past it.
fn decode(section: &[u8], off: usize, id: u32) -> Result<(Type<'_>, usize), FormatError> {
    let truncated = FormatError::TypeTruncated { id };
    let word = |at: usize| {
        off.checked_add(at)
            .and_then(|at| read_u32(section, at))
            .ok_or(truncated.clone())
    };
    let (name_off, info, size_or_type) = (word(0)?, word(4)?, word(8)?);
    // info: vlen in bits 0-15, kind in bits 24-28, kind_flag in bit 31.
    let raw_kind = (info >> 24) & 0x1f;
    let kind = Kind::from_raw(raw_kind).ok_or(FormatError::UnknownKind { kind: raw_kind, id })?;
    let vlen = (info & 0xffff) as u16;
    let start = off.checked_add(TYPE_HEADER_LEN).ok_or(truncated.clone())?;
    let end = start
        .checked_add(kind.trailing_len(vlen))
        .ok_or(truncated.clone())?;
    let trailing = section.get(start..end).ok_or(truncated)?;
    let t = Type {
        kind,
        name_off,
        kind_flag: info >> 31 == 1,
        size_or_type,
        trailing,
    };
    Ok((t, end))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(b.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}
