//! Body framing: counts and skips body bytes without keeping them. The
//! chunked decoder is a byte-level state machine, so framing may be split
//! at any byte across feeds.

/// How the rest of a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Body {
    /// This many bytes remain (never 0 while in use).
    Length(u64),
    Chunked(Chunked),
    /// Runs until the connection closes (response without a length).
    UntilClose,
    /// Length lost to a capture gap: runs until a feed begins with the next
    /// response's start line, or until close.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyStep {
    /// All input consumed; the body goes on.
    NeedMore,
    /// The body ended; input after the consumed bytes belongs to the next message.
    Done,
    /// Chunk framing is broken.
    Malformed,
}

impl Body {
    pub(super) fn chunked() -> Self {
        Self::Chunked(Chunked::Size {
            value: 0,
            digits: 0,
        })
    }

    /// Consumes body bytes from `data`; returns how many.
    pub(super) fn consume(&mut self, data: &[u8]) -> (usize, BodyStep) {
        match self {
            Self::Length(rem) => {
                let n = (*rem).min(data.len() as u64);
                *rem -= n;
                let step = if *rem == 0 {
                    BodyStep::Done
                } else {
                    BodyStep::NeedMore
                };
                (n as usize, step)
            }
            Self::Chunked(c) => c.consume(data),
            Self::UntilClose | Self::Unknown => (data.len(), BodyStep::NeedMore),
        }
    }
}

/// Position inside `chunk-size [; ext] CRLF data CRLF ... 0 CRLF trailers CRLF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunked {
    /// Reading the hex chunk size.
    Size {
        value: u64,
        digits: u8,
    },
    /// Skipping whitespace / extensions after the size, up to the line end.
    Ext(u64),
    /// Saw CR ending the size line.
    SizeLf(u64),
    /// This many data bytes remain in the chunk.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR at the start of a line: the final CRLF.
    TrailerEndLf,
}

/// Most hex digits a chunk size may have (fits in a u64).
const MAX_SIZE_DIGITS: u8 = 16;

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

fn after_size(value: u64) -> Chunked {
    if value == 0 {
        Chunked::TrailerStart
    } else {
        Chunked::Data(value)
    }
}

impl Chunked {
    fn consume(&mut self, data: &[u8]) -> (usize, BodyStep) {
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            match *self {
                Self::Size { value, digits } => {
                    if let Some(h) = hex(b) {
                        if digits >= MAX_SIZE_DIGITS {
                            return (i, BodyStep::Malformed);
                        }
                        *self = Self::Size {
                            value: value << 4 | h,
                            digits: digits + 1,
                        };
                    } else if digits == 0 {
                        return (i, BodyStep::Malformed);
                    } else {
                        *self = match b {
                            b';' | b' ' | b'\t' => Self::Ext(value),
                            b'\r' => Self::SizeLf(value),
                            b'\n' => after_size(value),
                            _ => return (i, BodyStep::Malformed),
                        };
                    }
                    i += 1;
                }
                Self::Ext(value) => {
                    match data[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                        None => i = data.len(),
                        Some(k) => {
                            i += k;
                            *self = if data[i] == b'\r' {
                                Self::SizeLf(value)
                            } else {
                                after_size(value)
                            };
                            i += 1;
                        }
                    }
                }
                Self::SizeLf(value) => {
                    if b != b'\n' {
                        return (i, BodyStep::Malformed);
                    }
                    *self = after_size(value);
                    i += 1;
                }
                Self::Data(rem) => {
                    let n = rem.min((data.len() - i) as u64);
                    i += n as usize;
                    *self = if n == rem {
                        Self::DataCr
                    } else {
                        Self::Data(rem - n)
                    };
                }
                Self::DataCr | Self::DataLf => {
                    *self = match (*self, b) {
                        (Self::DataCr, b'\r') => Self::DataLf,
                        (_, b'\n') => Self::Size {
                            value: 0,
                            digits: 0,
                        },
                        _ => return (i, BodyStep::Malformed),
                    };
                    i += 1;
                }
                Self::TrailerStart => {
                    i += 1;
                    *self = match b {
                        b'\r' => Self::TrailerEndLf,
                        b'\n' => return (i, BodyStep::Done),
                        _ => Self::TrailerLine,
                    };
                }
                Self::TrailerLine => match data[i..].iter().position(|&b| b == b'\n') {
                    None => i = data.len(),
                    Some(k) => {
                        i += k + 1;
                        *self = Self::TrailerStart;
                    }
                },
                Self::TrailerEndLf => {
                    if b != b'\n' {
                        return (i, BodyStep::Malformed);
                    }
                    return (i + 1, BodyStep::Done);
                }
            }
        }
        (i, BodyStep::NeedMore)
    }
}
