//! The inbound `traceparent` of a server request, read in the kernel at
//! the moment the request is read, so that the thread's next client call
//! (often microseconds later, long before the agent has parsed anything)
//! carries that trace in its TCP option or injected header. Only the
//! strict W3C form is taken (version 00, lower-case hex, non-zero ids);
//! anything else is left to the agent, which then starts a new trace and
//! corrects the kernel (see `link::ThreadTraceSink`).

use crate::maps::Scratch;

/// Head bytes searched at most (the payload is in a map value; a loop over
/// it whose only state is the index verifies linearly).
const SCAN: usize = 1024;
/// `00-` + 32 + `-` + 16 + `-` + 2.
const VALUE: usize = 55;

#[inline(always)]
pub fn byte(s: &Scratch, i: usize) -> u8 {
    s.ev.payload[i & (SCAN * 2 - 1)]
}

#[inline(always)]
fn read_u64(s: &Scratch, i: usize) -> u64 {
    let i = i & (SCAN * 2 - 1);
    // SAFETY: i < 2 * SCAN <= MAX_CAPTURE, and the payload is followed by
    // the overflow area, so 8 bytes from i are inside the map value.
    unsafe { core::ptr::read_unaligned(s.ev.payload.as_ptr().add(i).cast::<u64>()) }
}

#[inline(always)]
fn read_u32(s: &Scratch, i: usize) -> u32 {
    let i = i & (SCAN * 2 - 1);
    // SAFETY: as in read_u64.
    unsafe { core::ptr::read_unaligned(s.ev.payload.as_ptr().add(i).cast::<u32>()) }
}

/// What a search of read bytes found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// A valid `traceparent`: `s.inbound` holds its trace id and parent id.
    Found,
    /// The head ended (or a `traceparent` line was invalid) without one.
    None,
    /// The bytes ended before the head did: the rest comes in later reads.
    Open,
}

/// Searches `s.ev.payload[..got]` (within the first SCAN bytes) for a
/// valid `traceparent` line.
///
/// Only the read that starts the request is searched. A head split across
/// reads (a client writing it in pieces, a server reading it in pieces)
/// gives `Open`: the agent then corrects the thread's trace once it has
/// parsed the whole head, and calls made before that are counted
/// (`trace_option_mismatches`). Our own injection keeps the head in one
/// segment (see `inject`). Searching the following reads as well doubled
/// this code in every read program and broke the verifier's budget ("BPF
/// program is too large").
#[inline(always)]
pub fn traceparent(s: &mut Scratch, got: usize) -> Inbound {
    let at = match find(s, got, &TRACEPARENT) {
        Found::At(at) => at,
        Found::HeadEnd => return Inbound::None,
        Found::Open => return Inbound::Open,
    };
    // Likewise: which of the SCAN offsets matched is forgotten, so `parse`
    // is verified once rather than once per offset.
    let at = launder(s, at);
    if parse(s, at & (SCAN - 1), got) {
        Inbound::Found
    } else {
        Inbound::None
    }
}

pub enum Found {
    /// Offset just past `traceparent:`.
    At(usize),
    HeadEnd,
    Open,
}

/// [`crate::maps::forget`] through the scratch's stash.
#[inline(always)]
pub fn launder(s: &mut Scratch, v: usize) -> usize {
    crate::maps::forget(&mut s.stash, v)
}

/// A header name to search for, as the words `find` compares: its first
/// 8 bytes, the next 4 masked to the rest of the name and the colon.
pub struct Name {
    first8: u64,
    next4: u32,
    mask4: u32,
    /// Length with the colon.
    len: usize,
}

const TRACEPARENT: Name = Name {
    first8: u64::from_le_bytes(*b"tracepar"),
    next4: u32::from_le_bytes(*b"ent:"),
    mask4: u32::MAX,
    len: 12,
};

pub const TRACESTATE: Name = Name {
    first8: u64::from_le_bytes(*b"tracesta"),
    next4: u32::from_le_bytes(*b"te:\0"),
    mask4: 0x00ff_ffff,
    len: 11,
};

/// Offset just past `<name>:` of the first line that starts with it (any
/// case), before the head's end.
#[inline(always)]
pub fn find(s: &Scratch, got: usize, name: &Name) -> Found {
    let mut i = 0usize;
    while i < SCAN {
        // Too few bytes left for a match here (and a head end in them is
        // taken as open, which is handled alike).
        if i + 1 + name.len > got {
            return Found::Open;
        }
        match step(s, i, name) {
            Step::HeadEnd => return Found::HeadEnd,
            Step::Match => return Found::At(i + 1 + name.len),
            Step::Miss => {}
        }
        i += 1;
    }
    Found::Open
}

/// Counts the lines that start with `<name>:` before the head's end (or
/// the end of the bytes), in `s.tail.lines`, and leaves the offset past
/// the first one's colon in `s.tail.first`. In map memory, so that the
/// loop's only state is its index: one pass, verified once.
#[inline(always)]
pub fn count(s: &mut Scratch, got: usize, name: &Name) {
    // SAFETY: plain accesses to our own map value.
    unsafe {
        core::ptr::write_volatile(&mut s.tail.lines, 0);
        core::ptr::write_volatile(&mut s.tail.first, 0);
    }
    let mut i = 0usize;
    while i < SCAN {
        if i + 1 + name.len > got {
            return;
        }
        match step(s, i, name) {
            Step::HeadEnd => return,
            // Volatile: kept in registers instead, the count would be loop
            // state again, one verifier path per value.
            // SAFETY: plain accesses to our own map value.
            Step::Match => unsafe {
                let lines = core::ptr::read_volatile(&s.tail.lines);
                if lines == 0 {
                    core::ptr::write_volatile(&mut s.tail.first, (i + 1 + name.len) as u64);
                }
                core::ptr::write_volatile(&mut s.tail.lines, lines + 1);
            },
            Step::Miss => {}
        }
        i += 1;
    }
}

enum Step {
    HeadEnd,
    Match,
    Miss,
}

/// Whether the head ends at `i`, or a line starting with `<name>:` does.
#[inline(always)]
fn step(s: &Scratch, i: usize, name: &Name) -> Step {
    // OR-ing 0x20 lower-cases letters and leaves ':' as it is.
    const LOW8: u64 = 0x2020_2020_2020_2020;
    const LOW4: u32 = 0x2020_2020;
    let four = read_u32(s, i);
    if four == u32::from_le_bytes(*b"\r\n\r\n") {
        return Step::HeadEnd;
    }
    // One branch per step, not one per compared part: a path that matched
    // a part and failed the next would leave the loop with different
    // knowledge than the main path, and go on alone to the end of the loop
    // (quadratic: "BPF program is too large").
    let miss = ((read_u64(s, i + 1) | LOW8) ^ name.first8)
        | u64::from(((read_u32(s, i + 9) | LOW4) ^ name.next4) & name.mask4)
        | u64::from((four & 0xff) ^ u32::from(b'\n'));
    if miss == 0 { Step::Match } else { Step::Miss }
}

/// Value of each byte as a lower-case hex digit, 0xff when it is not one.
/// A table, not a `match`: with two ranges per digit each of the 50 digits
/// would double the verifier's paths (known values 0..=9 vs 10..=15), and
/// they never merge ("BPF program is too large").
static HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[inline(always)]
fn nibble(c: u8) -> Option<u8> {
    let v = HEX_VALUE[c as usize];
    (v < 16).then_some(v)
}

/// `at` past the optional whitespace after a colon, as much as a sane
/// client sends.
#[inline(always)]
pub fn skip_ows(s: &Scratch, at: usize) -> usize {
    let mut a = at;
    for _ in 0..2 {
        let c = byte(s, a);
        if c == b' ' || c == b'\t' {
            a += 1;
        }
    }
    a
}

/// Parses `OWS 00-<trace>-<parent>-<flags>` at `at` into `s.inbound`.
#[inline(always)]
fn parse(s: &mut Scratch, mut at: usize, got: usize) -> bool {
    parse_into(s, &mut at, got).is_some()
}

#[inline(always)]
fn parse_into(s: &mut Scratch, at: &mut usize, got: usize) -> Option<()> {
    let a = skip_ows(s, *at);
    *at = a;
    if a + VALUE > got {
        return None;
    }
    if byte(s, a) != b'0' || byte(s, a + 1) != b'0' || byte(s, a + 2) != b'-' {
        return None;
    }
    let mut k = 0usize;
    while k < 16 {
        let hi = nibble(byte(s, a + 3 + 2 * k))?;
        let lo = nibble(byte(s, a + 4 + 2 * k))?;
        s.inbound.trace_id[k & 15] = hi << 4 | lo;
        k += 1;
    }
    if byte(s, a + 35) != b'-' {
        return None;
    }
    let mut k = 0usize;
    while k < 8 {
        let hi = nibble(byte(s, a + 36 + 2 * k))?;
        let lo = nibble(byte(s, a + 37 + 2 * k))?;
        s.inbound.span_id[k & 7] = hi << 4 | lo;
        k += 1;
    }
    if byte(s, a + 52) != b'-' {
        return None;
    }
    nibble(byte(s, a + 53))?;
    nibble(byte(s, a + 54))?;
    // W3C: all-zero ids are invalid. Read back from map memory (unknown
    // to the verifier), compared as words.
    let t = &s.inbound.trace_id;
    let (t0, t1) = (
        u64::from_ne_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]),
        u64::from_ne_bytes([t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15]]),
    );
    let p = u64::from_ne_bytes(s.inbound.span_id);
    ((t0 | t1) != 0 && p != 0).then_some(())
}
