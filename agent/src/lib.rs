//! wirespan agent library: everything but the wiring in `main.rs`.
//!
//! The parts follow DESIGN.md's data flow: `loader` attaches the kernel
//! programs, `capture` reads their events, `conn` keeps the connection
//! table and feeds `protocol` parsers, `span` turns finished exchanges
//! into spans, `pipeline` batches them and `export` writes them out.

pub mod btf;
pub mod capture;
pub mod cidr;
pub mod clock;
pub mod compact;
pub mod config;
pub mod conn;
pub mod export;
pub mod inthash;
pub mod kernel_counters;
pub mod kernel_filter;
pub mod link;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod otel_env;
pub mod pipeline;
pub mod probe;
pub mod process;
pub mod protocol;
pub mod run;
pub mod select;
pub mod sockops;
pub mod span;
pub mod stats;
pub mod tls;
