//! Types shared by the kernel programs (`wirespan-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding so that the byte
//! layout is identical on both sides. The kernel writes these structs into
//! ring-buffer memory; the agent decodes them with [`event::user`].
#![cfg_attr(not(feature = "user"), no_std)]

pub mod config;
pub mod event;
pub mod hooks;
pub mod maps;
