//! Per-CPU counters; the agent sums them across CPUs.

use wirespan_common::event::Counter;

use crate::maps::COUNTERS;

#[inline(always)]
pub fn bump(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *p += 1 };
    }
}
