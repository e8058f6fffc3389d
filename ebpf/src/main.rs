//! wirespan kernel programs. Entry points are thin wrappers; each concern
//! lives in its own module:
//! - `syscalls`: read/write family tracepoints, payload capture;
//! - `sock`: `sock:sock_{send,recv}_length`, which tell socket fds apart;
//! - `lifecycle`: accept, connect, close;
//! - `process`: exec and exit of processes;
//! - `propagate`, `sockops`: trace context in a TCP header option.
#![no_std]
#![no_main]

mod config;
mod counters;
mod fdtable;
mod inbound;
mod inject;
mod lifecycle;
mod maps;
mod process;
mod propagate;
mod sock;
mod sockops;
mod syscalls;
mod tls;
mod tracestate;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach here; this only
    // satisfies the no_std requirement.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
