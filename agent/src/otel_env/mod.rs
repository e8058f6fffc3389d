//! The OpenTelemetry exporter settings: each standard `OTEL_*` variable is
//! also a flag. The raw strings are checked here, before anything starts,
//! so a bad value is one line naming the variable (or flag) and exit 2.

pub mod parse;

use std::{path::PathBuf, time::Duration};

use clap::{ArgMatches, parser::ValueSource};
use http::{HeaderName, HeaderValue};
use url::Url;

mod args;
pub use args::OtlpArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// Where and how spans go over OTLP.
#[derive(Clone, Debug)]
pub struct OtlpSettings {
    pub protocol: Protocol,
    /// The URL requests go to: for HTTP the full `.../v1/traces` URL, for
    /// gRPC the server's origin.
    pub endpoint: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Per request (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub timeout: Duration,
    pub compression: Compression,
    /// PEM CA certificate(s) trusted for `https://` endpoints, besides the
    /// system and webpki roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// `OTEL_BSP_*`: the batch span processor in front of the OTLP exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BspSettings {
    pub schedule_delay: Duration,
    /// Longest one batch may take, retries included.
    pub export_timeout: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    /// Batches being exported (sent, or waiting to be retried) at once.
    pub max_concurrent_exports: usize,
}

/// Most batches in flight at once that `OTEL_BSP_MAX_CONCURRENT_EXPORTS`
/// may ask for: each holds its encoded request until it is done.
pub const MAX_CONCURRENT_EXPORTS: usize = 64;

impl Default for BspSettings {
    fn default() -> Self {
        Self {
            schedule_delay: Duration::from_millis(5000),
            export_timeout: Duration::from_millis(30000),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            max_concurrent_exports: 4,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// None when no endpoint is configured: no OTLP export.
    pub otlp: Option<OtlpSettings>,
    pub bsp: BspSettings,
    /// The agent's own `OTEL_RESOURCE_ATTRIBUTES`, added to every resource.
    pub resource_attributes: Vec<(String, String)>,
    /// How long pending spans may take to flush at shutdown.
    pub shutdown_timeout: Duration,
}

/// A bad setting, named as the user gave it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

/// One setting as given: its value and the name to blame.
struct Given<'a> {
    value: &'a str,
    name: &'static str,
}

impl Given<'_> {
    fn parse<T>(&self, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        f(self.value).map_err(|problem| ConfigError {
            name: self.name,
            problem,
        })
    }
}

/// Which argument ids got their value from the environment, so errors
/// name the variable the user set rather than the flag.
pub trait Sources {
    fn is_env(&self, id: &str) -> bool;
}

impl Sources for ArgMatches {
    fn is_env(&self, id: &str) -> bool {
        self.value_source(id) == Some(ValueSource::EnvVariable)
    }
}

/// Checks and resolves the settings. The signal-specific (`_TRACES_`)
/// variables win over the generic ones.
pub fn resolve(a: &OtlpArgs, src: &dyn Sources) -> Result<ExportSettings, ConfigError> {
    let given = |id: &'static str| -> Option<Given<'_>> {
        let (value, flag, env) = a.get(id)?;
        let value = value.trim();
        (!value.is_empty()).then(|| Given {
            value,
            name: if src.is_env(id) { env } else { flag },
        })
    };
    let pick =
        |traces: &'static str, generic: &'static str| given(traces).or_else(|| given(generic));

    let protocol = match pick("traces_protocol", "protocol") {
        None => Protocol::Grpc,
        Some(g) => g.parse(|v| match v {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => {
                Err("`http/json` is not supported; use `grpc` or `http/protobuf`".into())
            }
            other => Err(format!(
                "unknown protocol `{other}`; expected `grpc` or `http/protobuf`"
            )),
        })?,
    };
    let endpoint = match (given("traces_endpoint"), given("endpoint")) {
        (Some(g), _) => Some(g.parse(parse::endpoint)?),
        (None, Some(g)) => {
            let base = g.parse(parse::endpoint)?;
            Some(match protocol {
                Protocol::HttpProtobuf => parse::with_traces_path(&base),
                Protocol::Grpc => base,
            })
        }
        (None, None) => None,
    };
    let headers = match pick("traces_headers", "headers") {
        Some(g) => g.parse(parse::headers)?,
        None => Vec::new(),
    };
    let timeout = match pick("traces_timeout", "timeout") {
        Some(g) => g.parse(|v| parse::millis(v, true))?,
        None => Duration::from_millis(10000),
    };
    let compression = match pick("traces_compression", "compression") {
        None => Compression::None,
        Some(g) => g.parse(|v| match v {
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression `{other}`; expected `gzip` or `none`"
            )),
        })?,
    };
    let ca_pem = match pick("traces_certificate", "certificate") {
        Some(g) => Some(g.parse(read_certificate)?),
        None => None,
    };
    let resource_attributes = match given("resource_attributes") {
        Some(g) => g.parse(parse::kv_list_strict)?,
        None => Vec::new(),
    };

    let d = BspSettings::default();
    let ms = |id, default| match given(id) {
        Some(g) => g.parse(|v| parse::millis(v, true)),
        None => Ok(default),
    };
    let n = |id, default| match given(id) {
        Some(g) => g.parse(parse::count),
        None => Ok(default),
    };
    let max_queue_size = n("bsp_max_queue_size", d.max_queue_size)?;
    let bsp = BspSettings {
        schedule_delay: match given("bsp_schedule_delay") {
            Some(g) => g.parse(|v| parse::millis(v, false))?,
            None => d.schedule_delay,
        },
        export_timeout: ms("bsp_export_timeout", d.export_timeout)?,
        max_queue_size,
        // The spec: the batch size must not exceed the queue size.
        max_export_batch_size: n("bsp_max_export_batch_size", d.max_export_batch_size)?
            .min(max_queue_size),
        max_concurrent_exports: n("bsp_max_concurrent_exports", d.max_concurrent_exports)?
            .min(MAX_CONCURRENT_EXPORTS),
    };
    let shutdown_timeout = ms("shutdown_timeout", Duration::from_millis(5000))?;

    Ok(ExportSettings {
        otlp: endpoint.map(|endpoint| OtlpSettings {
            protocol,
            endpoint,
            headers,
            timeout,
            compression,
            ca_pem,
        }),
        bsp,
        resource_attributes,
        shutdown_timeout,
    })
}

fn read_certificate(path: &str) -> Result<Vec<u8>, String> {
    let path = PathBuf::from(path);
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests;
