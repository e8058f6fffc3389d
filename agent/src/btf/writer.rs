//! A tiny BTF writer, for test fixtures independent of the kernel.

//!
//! The kind numbers and layouts are written out here from the kernel's
//! `include/uapi/linux/btf.h`, apart from the reader in `raw.rs`, so a
//! fixture checks the reader rather than repeating it.

pub(super) const KIND_INT: u32 = 1;
pub(super) const KIND_PTR: u32 = 2;
pub(super) const KIND_ARRAY: u32 = 3;
pub(super) const KIND_STRUCT: u32 = 4;
pub(super) const KIND_UNION: u32 = 5;
pub(super) const KIND_ENUM: u32 = 6;
pub(super) const KIND_FWD: u32 = 7;
pub(super) const KIND_TYPEDEF: u32 = 8;
pub(super) const KIND_VOLATILE: u32 = 9;
pub(super) const KIND_CONST: u32 = 10;
pub(super) const KIND_RESTRICT: u32 = 11;
pub(super) const KIND_FUNC: u32 = 12;
pub(super) const KIND_FUNC_PROTO: u32 = 13;
pub(super) const KIND_VAR: u32 = 14;
pub(super) const KIND_DATASEC: u32 = 15;
pub(super) const KIND_FLOAT: u32 = 16;
pub(super) const KIND_DECL_TAG: u32 = 17;
pub(super) const KIND_TYPE_TAG: u32 = 18;
pub(super) const KIND_ENUM64: u32 = 19;

/// Byte offsets of the header's words, for tests that corrupt them.
pub(super) const HDR_LEN_AT: usize = 4;
pub(super) const TYPE_OFF_AT: usize = 8;
pub(super) const TYPE_LEN_AT: usize = 12;
pub(super) const STR_OFF_AT: usize = 16;
pub(super) const STR_LEN_AT: usize = 20;

/// A type's `info` word: kind in bits 24-28, vlen in bits 0-15.
pub(super) fn info(kind: u32, vlen: u32) -> u32 {
    (kind << 24) | vlen
}

/// Overwrite the little-endian word at `at`.
pub(super) fn patch(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// `(name, type id, bit offset, bitfield size)`.
pub(super) type M<'a> = (&'a str, u32, u32, u32);

pub(super) struct Builder {
    types: Vec<u8>,
    strs: Vec<u8>,
    next_id: u32,
}

impl Builder {
    pub(super) fn new() -> Self {
        Self {
            types: Vec::new(),
            strs: vec![0],
            next_id: 1,
        }
    }

    pub(super) fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strs.len() as u32;
        self.strs.extend_from_slice(name.as_bytes());
        self.strs.push(0);
        off
    }

    /// Raw bytes appended to the string section (no NUL added); their
    /// offset.
    pub(super) fn raw_string(&mut self, bytes: &[u8]) -> u32 {
        let off = self.strs.len() as u32;
        self.strs.extend_from_slice(bytes);
        off
    }

    /// Any type: the common header (`name`, `info`, size or type), then
    /// the kind's trailing words as given.
    pub(super) fn any(
        &mut self,
        name: &str,
        info: u32,
        size_or_type: u32,
        trailing: &[u32],
    ) -> u32 {
        let n = self.s(name);
        let mut words = vec![n, info, size_or_type];
        words.extend_from_slice(trailing);
        self.put(&words)
    }

    pub(super) fn put(&mut self, words: &[u32]) -> u32 {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(super) fn int(&mut self, name: &str, bytes: u32) -> u32 {
        let n = self.s(name);
        self.put(&[n, KIND_INT << 24, bytes, bytes * 8])
    }

    pub(super) fn ptr(&mut self, to: u32) -> u32 {
        self.put(&[0, KIND_PTR << 24, to])
    }

    pub(super) fn typedef(&mut self, name: &str, to: u32) -> u32 {
        let n = self.s(name);
        self.put(&[n, KIND_TYPEDEF << 24, to])
    }

    pub(super) fn konst(&mut self, to: u32) -> u32 {
        self.put(&[0, KIND_CONST << 24, to])
    }

    pub(super) fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[M]) -> u32 {
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

    pub(super) fn build(&self) -> Vec<u8> {
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
