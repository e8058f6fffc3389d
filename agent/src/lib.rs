//! wirespan agent library: everything but the wiring in `main.rs`.
//!
//! The parts follow DESIGN.md's data flow: `capture` reads kernel events,
//! `conn` keeps the connection table and feeds `protocol` parsers, `span`
//! turns finished exchanges into spans, and `export` writes them out.

pub mod protocol;
