//! Harness for wirespan's root-only integration tests.
//!
//! Everything here drives real processes: the agent binary, real servers
//! (Python `ThreadingHTTPServer`, nginx, node, redis, a TCP echo server) and
//! real clients (curl, Python urllib/http.client, raw TCP sockets). Nothing is
//! mocked. Waiting is done by polling a condition with a deadline, never by a
//! fixed sleep.
//!
//! The tests share kernel state (probes, ring buffers), so run them with
//! `--test-threads=1`, as root:
//!
//! ```text
//! WIRESPAN_BIN=$PWD/target/release/wirespan cargo test -p wirespan-tests -- --test-threads=1
//! ```

pub mod agent;
pub mod cgroup;
pub mod chain;
pub mod clients;
pub mod data;
pub mod env;
pub mod expect;
pub mod metrics;
pub mod otlp;
pub mod servers;
pub mod span;
pub mod tls;

pub use agent::{Agent, Stopped};
pub use span::{Span, SpanKind};
