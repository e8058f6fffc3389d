//! [`CompactStr`]: the text of requests and spans (methods, targets,
//! hosts, span names, attribute values) without a heap allocation when it
//! is short or static.
//!
//! A span is built on the capture thread and dropped on the export thread,
//! so each String it carried cost a malloc on one thread and a free on the
//! other, glibc's slow path both ways. Most of these strings are short: a
//! path like `/api/v1/users`, a host like `10.0.0.7:8080`, a name like
//! `GET /users/{id}`. Up to [`INLINE`] bytes live in the value itself, the
//! size of a `String`.

use std::{borrow::Borrow, fmt, ops::Deref, ops::Range};

/// Bytes stored inline: what fits beside a length and a tag in 24 bytes.
pub const INLINE: usize = 22;

/// An immutable string: static, inline or boxed.
#[derive(Clone)]
pub struct CompactStr(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    /// `buf[..len]` is always a whole `&str` copied in (see `CompactStr::new`).
    Inline {
        len: u8,
        buf: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl CompactStr {
    /// A copy of `s`: inline when it fits, else on the heap.
    pub fn new(s: &str) -> Self {
        Self::inline(s).unwrap_or_else(|| Self(Repr::Heap(s.into())))
    }

    pub const fn from_static(s: &'static str) -> Self {
        Self(Repr::Static(s))
    }

    fn inline(s: &str) -> Option<Self> {
        let len = u8::try_from(s.len())
            .ok()
            .filter(|&n| usize::from(n) <= INLINE)?;
        let mut buf = [0; INLINE];
        buf[..s.len()].copy_from_slice(s.as_bytes());
        Some(Self(Repr::Inline { len, buf }))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Inline { len, buf } => {
                let bytes = buf.get(..usize::from(*len)).unwrap_or_default();
                // SAFETY: `inline`, the one place that makes an `Inline`,
                // copies in a whole `&str` and its length; the fields are
                // private and never changed after. Checking the bytes
                // instead cost every use of every string (the exporter
                // reads each one, the span assembly several times).
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Heap(s) => s,
        }
    }

    /// The part `range` of this string (char boundaries, as for slicing
    /// a `str`; an empty string if not). A boxed string that the part
    /// starts keeps its allocation, shrunk, rather than copying it.
    pub fn into_sub(self, range: Range<usize>) -> Self {
        match self.0 {
            Repr::Static(s) => Self(Repr::Static(s.get(range).unwrap_or(""))),
            Repr::Heap(b)
                if range.start == 0 && range.end > INLINE && b.is_char_boundary(range.end) =>
            {
                let mut s = String::from(b);
                s.truncate(range.end);
                Self(Repr::Heap(s.into_boxed_str()))
            }
            _ => Self::new(self.as_str().get(range).unwrap_or("")),
        }
    }
}

impl Default for CompactStr {
    fn default() -> Self {
        Self::from_static("")
    }
}

impl Deref for CompactStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for CompactStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for CompactStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for CompactStr {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for CompactStr {
    fn from(s: String) -> Self {
        Self::inline(&s).unwrap_or_else(|| Self(Repr::Heap(s.into_boxed_str())))
    }
}

impl PartialEq for CompactStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CompactStr {}

impl PartialEq<str> for CompactStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for CompactStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for CompactStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl fmt::Debug for CompactStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CompactStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_big_as_a_string() {
        assert_eq!(size_of::<CompactStr>(), size_of::<String>());
    }

    #[test]
    fn short_text_is_inline_and_long_text_boxed() {
        let short = "é".repeat(11);
        assert!(matches!(CompactStr::new(&short).0, Repr::Inline { .. }));
        assert_eq!(CompactStr::new(&short), short);
        let long = "x".repeat(INLINE + 1);
        assert!(matches!(CompactStr::new(&long).0, Repr::Heap(_)));
        assert!(matches!(CompactStr::from(long.clone()).0, Repr::Heap(_)));
        assert!(matches!(
            CompactStr::from(short.clone()).0,
            Repr::Inline { .. }
        ));
        assert!(matches!(CompactStr::from("static").0, Repr::Static(_)));
        assert_eq!(CompactStr::new(""), CompactStr::default());
    }

    #[test]
    fn parts() {
        let long = format!("/{}?q=1", "a".repeat(40));
        let sub = |s: CompactStr, r: Range<usize>| s.into_sub(r).to_string();
        assert_eq!(sub(CompactStr::new(&long), 0..41), long[..41]);
        assert_eq!(sub(CompactStr::new(&long), 1..5), "aaaa");
        assert_eq!(sub(CompactStr::new("/a?b"), 0..2), "/a");
        assert_eq!(sub(CompactStr::from("static text"), 7..11), "text");
        assert_eq!(sub(CompactStr::new("é"), 0..1), "");
        assert_eq!(sub(CompactStr::new(&long), 0..99), "");
        assert!(matches!(
            CompactStr::new(&long).into_sub(0..30).0,
            Repr::Heap(_)
        ));
        assert!(matches!(
            CompactStr::new(&long).into_sub(0..3).0,
            Repr::Inline { .. }
        ));
    }
}
