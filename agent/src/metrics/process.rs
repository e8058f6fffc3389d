//! The agent's own CPU time and memory from /proc/self, for the standard
//! Prometheus process metrics.

/// One reading of /proc/self/stat.
#[derive(Debug, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
}

impl ProcessSample {
    /// None when /proc is unreadable; the scrape then leaves these out.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        parse_stat(&stat, u64::try_from(ticks).ok()?, u64::try_from(page).ok()?)
    }
}

/// Fields of proc(5) `stat`, counted after the `(comm)` field, which may
/// itself hold spaces and parentheses: utime and stime (14, 15) in clock
/// ticks, vsize (23) in bytes, rss (24) in pages.
fn parse_stat(stat: &str, ticks_per_sec: u64, page: u64) -> Option<ProcessSample> {
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    if ticks_per_sec == 0 {
        return None;
    }
    Some(ProcessSample {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_per_sec as f64,
        resident_bytes: field(24)? * page,
        virtual_bytes: field(23)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_comm() {
        let stat = "4242 (wire span) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 3 0 12345 104857600 2560 18446744073709551615";
        let s = parse_stat(stat, 100, 4096).unwrap();
        assert_eq!(
            s,
            ProcessSample {
                cpu_seconds: 3.0,
                resident_bytes: 2560 * 4096,
                virtual_bytes: 104_857_600,
            }
        );
        assert!(parse_stat("garbage", 100, 4096).is_none());
    }

    #[test]
    fn reads_itself() {
        let s = ProcessSample::read().unwrap();
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
    }
}
