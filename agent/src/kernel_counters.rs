//! The kernel's per-CPU COUNTERS map (ring-buffer reservations that failed,
//! full in-flight tables, ...), taken out of the eBPF object at start so
//! that both `/metrics` scrapes and the exit line can read it while the
//! object itself belongs to the TLS attacher.

use anyhow::Context;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use wirespan_common::{event::Counter, maps};

pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    /// Takes COUNTERS out of `ebpf`; the programs keep using it (they hold
    /// the map by fd), and it stays open as long as this value lives.
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map(maps::COUNTERS)
            .context("map COUNTERS missing")?;
        let map = PerCpuArray::try_from(map).context("map COUNTERS is not a per-CPU array")?;
        Ok(Self { map })
    }

    /// Every counter, summed over CPUs, in `Counter::ALL` order. A slot that
    /// cannot be read (it always can, short of a kernel bug) reads 0.
    pub fn read(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|c| {
                let sum = self
                    .map
                    .get(&(*c as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (c.name(), sum)
            })
            .collect()
    }
}
