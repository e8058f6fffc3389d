//! Pure protocol parsers: bytes in, messages out. Nothing here knows about
//! ring buffers, connections tables or exporters.

pub mod http1;
