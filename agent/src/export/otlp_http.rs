//! OTLP over HTTP/protobuf: `POST` of a protobuf `ExportTraceServiceRequest`
//! (optionally gzipped) to the traces URL, with reqwest on rustls.

use std::{
    io::Write as _,
    time::{Duration, SystemTime},
};

use flate2::{Compression as Level, write::GzEncoder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::{
    StatusCode,
    header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, RETRY_AFTER},
};

use super::retry::Attempt;
use crate::otel_env::{Compression, OtlpSettings};

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("OTLP CA certificate: {0}")]
    Certificate(reqwest::Error),
    #[error("OTLP HTTP client: {0}")]
    Client(reqwest::Error),
}

pub struct HttpTransport {
    client: reqwest::Client,
    url: url::Url,
    gzip: bool,
}

impl HttpTransport {
    pub fn new(s: &OtlpSettings) -> Result<Self, HttpSetupError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &s.headers {
            headers.append(k.clone(), v.clone());
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("wirespan/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(s.timeout);
        if let Some(pem) = &s.ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem).map_err(HttpSetupError::Certificate)?
            {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(Self {
            client: b.build().map_err(HttpSetupError::Client)?,
            url: s.endpoint.clone(),
            gzip: s.compression == Compression::Gzip,
        })
    }

    /// The request body from the encoded request (`otlp_encode`),
    /// compressed once per batch so that retries resend the same bytes.
    pub fn body(&self, raw: Vec<u8>) -> std::io::Result<bytes::Bytes> {
        if !self.gzip {
            return Ok(raw.into());
        }
        let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Level::fast());
        gz.write_all(&raw)?;
        Ok(gz.finish()?.into())
    }

    pub async fn send(&self, body: bytes::Bytes, timeout: Duration) -> Attempt {
        let mut rb = self
            .client
            .post(self.url.clone())
            .timeout(timeout)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        if self.gzip {
            rb = rb.header(CONTENT_ENCODING, "gzip");
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            // Connection refused or reset, DNS, TLS, timeouts: the
            // collector may come back.
            Err(e) if e.is_builder() => return Attempt::Fatal(error_chain(&e)),
            Err(e) => {
                return Attempt::Retry {
                    reason: error_chain(&e),
                    after: None,
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            // A body that does not decode is still a success.
            let partial = match resp.bytes().await {
                Ok(b) => ExportTraceServiceResponse::decode(b)
                    .ok()
                    .and_then(|r| r.partial_success),
                Err(_) => None,
            };
            return Attempt::Done {
                rejected: partial
                    .as_ref()
                    .map_or(0, |p| p.rejected_spans.max(0) as u64),
                message: partial.map(|p| p.error_message).unwrap_or_default(),
            };
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        classify(status, retry_after)
    }
}

/// The spec's retryable HTTP answers: 429, 502, 503, 504.
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
    let reason = format!("the collector answered HTTP {status}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Attempt::Retry {
            reason,
            after: retry_after,
        },
        _ => Attempt::Fatal(reason),
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (a date in the past means
/// now).
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An error with its causes: reqwest's top-level message alone ("error
/// sending request") hides the useful part ("Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // The obsolete forms HTTP-date allows.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:57 1994", now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retryable_statuses() {
        let after = Some(Duration::from_secs(3));
        for code in [429, 502, 503, 504] {
            let a = classify(StatusCode::from_u16(code).unwrap(), after);
            assert!(
                matches!(a, Attempt::Retry { after: a, .. } if a == after),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 413, 500] {
            let a = classify(StatusCode::from_u16(code).unwrap(), after);
            assert!(matches!(a, Attempt::Fatal(_)), "{code}");
        }
    }

    #[test]
    fn gzip_body_round_trips() {
        use std::io::Read as _;
        let s = crate::otel_env::OtlpSettings {
            protocol: crate::otel_env::Protocol::HttpProtobuf,
            endpoint: "http://127.0.0.1:4318/v1/traces".parse().unwrap(),
            headers: Vec::new(),
            timeout: Duration::from_secs(1),
            compression: Compression::Gzip,
            ca_pem: None,
        };
        let t = HttpTransport::new(&s).unwrap();
        let req =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default();
        let body = t.body(req.encode_to_vec()).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, req.encode_to_vec());
    }
}
