//! A tiny BTF writer, for test fixtures independent of the kernel.

pub(super) const KIND_INT: u32 = 1;
pub(super) const KIND_PTR: u32 = 2;
pub(super) const KIND_STRUCT: u32 = 4;
pub(super) const KIND_UNION: u32 = 5;
pub(super) const KIND_TYPEDEF: u32 = 8;
pub(super) const KIND_CONST: u32 = 10;

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
