//! Converts kernel CLOCK_MONOTONIC timestamps (bpf_ktime_get_ns) to Unix
//! time, with an offset measured once at start.

/// Offset such that `unix_ns = monotonic_ns + offset`.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC now, the clock of the kernel's event timestamps.
pub fn monotonic_now_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC).clamp(0, u64::MAX as i128) as u64
}

impl BootClock {
    /// Measures the offset, keeping the sample with the tightest bracket
    /// of monotonic reads around the realtime read.
    pub fn measure() -> Self {
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..16 {
            let m0 = now_ns(libc::CLOCK_MONOTONIC);
            let r = now_ns(libc::CLOCK_REALTIME);
            let m1 = now_ns(libc::CLOCK_MONOTONIC);
            let spread = m1 - m0;
            let offset = r - (m0 + spread / 2);
            if best.is_none_or(|(s, _)| spread < s) {
                best = Some((spread, offset));
            }
        }
        Self {
            offset_ns: best.map_or(0, |(_, o)| o),
        }
    }

    pub fn to_unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_now() {
        let c = BootClock::measure();
        let mono = now_ns(libc::CLOCK_MONOTONIC) as u64;
        let unix = now_ns(libc::CLOCK_REALTIME) as u64;
        let diff = c.to_unix_ns(mono) as i128 - unix as i128;
        assert!(diff.abs() < 5_000_000, "diff {diff} ns");
    }
}
