//! OTLP over gRPC: `TraceService/Export` through tonic's generated client,
//! on rustls for `https://` endpoints.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, uri::PathAndQuery};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, skip_field},
};
use tonic::{
    Code, GrpcMethod, Status,
    client::Grpc,
    codec::CompressionEncoding,
    metadata::MetadataMap,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use tonic_types::StatusExt;

use super::retry::Attempt;
use crate::otel_env::{Compression, OtlpSettings};

#[derive(Debug, thiserror::Error)]
#[error("OTLP gRPC channel to {endpoint}: {source}")]
pub struct GrpcSetupError {
    endpoint: String,
    source: tonic::transport::Error,
}

const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// An `ExportTraceServiceRequest` encoded once per batch (by
/// `otlp_encode`). gRPC needs an owned message per attempt, and cloning the
/// request deep-copied every span's strings on every attempt, the first one
/// included; these bytes clone by reference count. It only ever encodes:
/// decoding skips fields.
#[derive(Clone, Debug, Default)]
pub struct EncodedRequest(Bytes);

impl From<Vec<u8>> for EncodedRequest {
    fn from(encoded: Vec<u8>) -> Self {
        Self(encoded.into())
    }
}

impl Message for EncodedRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

pub struct GrpcTransport {
    /// What the generated `TraceServiceClient` wraps, used directly so
    /// that the message can be [`EncodedRequest`].
    grpc: Grpc<Channel>,
    metadata: MetadataMap,
}

impl GrpcTransport {
    /// Connects lazily: a collector that is down at start is retried like
    /// any other failure. Must run inside a tokio runtime.
    pub fn new(s: &OtlpSettings) -> Result<Self, GrpcSetupError> {
        let err = |source| GrpcSetupError {
            endpoint: s.endpoint.to_string(),
            source,
        };
        let mut ep = Endpoint::from_shared(s.endpoint.to_string())
            .map_err(err)?
            .user_agent(concat!("wirespan/", env!("CARGO_PKG_VERSION")))
            .map_err(err)?
            .connect_timeout(s.timeout);
        if s.endpoint.scheme() == "https" {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(pem) = &s.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            ep = ep.tls_config(tls).map_err(err)?;
        }
        let mut grpc = Grpc::new(ep.connect_lazy()).accept_compressed(CompressionEncoding::Gzip);
        if s.compression == Compression::Gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &s.headers {
            headers.append(k.clone(), v.clone());
        }
        Ok(Self {
            grpc,
            metadata: MetadataMap::from_headers(headers),
        })
    }

    pub async fn send(&self, req: EncodedRequest, timeout: Duration) -> Attempt {
        match self.export(req, timeout).await {
            Ok(resp) => {
                let partial = resp.into_inner().partial_success;
                Attempt::Done {
                    rejected: partial
                        .as_ref()
                        .map_or(0, |p| p.rejected_spans.max(0) as u64),
                    message: partial.map(|p| p.error_message).unwrap_or_default(),
                }
            }
            Err(status) => classify(&status),
        }
    }
}

/// The OTLP spec's retryable gRPC codes; RESOURCE_EXHAUSTED only when the
/// server says when to come back (RetryInfo).
impl GrpcTransport {
    /// What the generated client's `export` does, with [`EncodedRequest`].
    async fn export(
        &self,
        req: EncodedRequest,
        timeout: Duration,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        // Clones share the channel; a clone is cheap.
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
        let mut request = tonic::Request::new(req);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(timeout);
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "Export"));
        let codec =
            tonic_prost::ProstCodec::<EncodedRequest, ExportTraceServiceResponse>::default();
        grpc.unary(request, PathAndQuery::from_static(EXPORT_PATH), codec)
            .await
    }
}

fn classify(status: &Status) -> Attempt {
    let after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let mut reason = format!("gRPC {:?}", status.code());
    if !status.message().is_empty() {
        reason = format!("{reason}: {}", status.message());
    }
    // The root cause ("Connection refused"), unless the message says it.
    let mut root = std::error::Error::source(status);
    while let Some(next) = root.and_then(std::error::Error::source) {
        root = Some(next);
    }
    if let Some(root) = root.map(|r| r.to_string())
        && !status.message().contains(&root)
    {
        reason = format!("{reason}: {root}");
    }
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Attempt::Retry { reason, after },
        Code::ResourceExhausted if after.is_some() => Attempt::Retry { reason, after },
        _ => Attempt::Fatal(reason),
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::ErrorDetails;

    use super::*;

    fn with_retry_info(code: Code, secs: u64) -> Status {
        Status::with_error_details(
            code,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(secs))),
        )
    }

    #[test]
    fn retryable_codes() {
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            let a = classify(&Status::new(code, "x"));
            assert!(matches!(a, Attempt::Retry { after: None, .. }), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
            Code::Internal,
            Code::ResourceExhausted,
        ] {
            let a = classify(&Status::new(code, "x"));
            assert!(matches!(a, Attempt::Fatal(_)), "{code:?}");
        }
    }

    #[test]
    fn retry_info_is_honoured() {
        let a = classify(&with_retry_info(Code::Unavailable, 7));
        assert_eq!(
            a,
            Attempt::Retry {
                reason: "gRPC Unavailable: slow down".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        let a = classify(&with_retry_info(Code::ResourceExhausted, 2));
        assert!(matches!(a, Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(2)));
    }
}
