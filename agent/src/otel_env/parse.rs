//! Parsers for the value formats of the OpenTelemetry environment
//! variables. Each returns a short problem description; the caller adds
//! the name of the variable or flag.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

/// Percent-decodes `s` (`%2C` -> `,`); None when the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Splits a `key1=value1,key2=value2` list, the format of
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`. Keys and
/// values are trimmed and percent-decoded; empty entries are skipped. Each
/// item is a pair or the problem with that entry.
pub fn kv_list(s: &str) -> impl Iterator<Item = Result<(String, String), String>> + '_ {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (k, v) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry `{entry}` has no `=` (expected key=value)"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(format!("entry `{entry}` has an empty key"));
            }
            let k = percent_decode(k).ok_or_else(|| format!("key `{k}` is not UTF-8"))?;
            let v = percent_decode(v).ok_or_else(|| format!("value of `{k}` is not UTF-8"))?;
            Ok((k, v))
        })
}

/// A strict `key=value` list: the first bad entry is an error.
pub fn kv_list_strict(s: &str) -> Result<Vec<(String, String)>, String> {
    kv_list(s).collect()
}

/// A `key=value` list from a source we do not control (a traced process's
/// environment): bad entries are skipped.
pub fn kv_list_lenient(s: &str) -> Vec<(String, String)> {
    kv_list(s).filter_map(Result::ok).collect()
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: a `key=value` list whose keys are HTTP
/// header names (lower-cased, as gRPC metadata needs) and whose values are
/// valid header values.
pub fn headers(s: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    kv_list(s)
        .map(|kv| {
            let (k, v) = kv?;
            let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("`{k}` is not a valid header name"))?;
            if name.as_str().ends_with("-bin") {
                return Err(format!("`{k}`: binary (-bin) headers are not supported"));
            }
            let value = HeaderValue::from_str(&v)
                .map_err(|_| format!("the value of `{k}` is not a valid header value"))?;
            Ok((name, value))
        })
        .collect()
}

/// An OTLP endpoint: an absolute `http://` or `https://` URL with a host.
pub fn endpoint(s: &str) -> Result<Url, String> {
    let s = s.trim();
    let url = Url::parse(s)
        .map_err(|e| format!("`{s}` is not a URL ({e}); expected e.g. http://collector:4317"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{s}` has scheme `{}`; expected http:// or https:// (e.g. http://collector:4317)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{s}` must not have a query or fragment"));
    }
    Ok(url)
}

/// The spec's rule for HTTP: the generic `OTEL_EXPORTER_OTLP_ENDPOINT` is a
/// base URL to which the signal path `v1/traces` is appended (relative to
/// its path, with or without a trailing slash). The signal-specific
/// endpoint is used as-is and never passes through here.
pub fn with_traces_path(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/v1/traces", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// A whole number of milliseconds. `nonzero` refuses 0.
pub fn millis(s: &str, nonzero: bool) -> Result<Duration, String> {
    let ms: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of milliseconds"))?;
    if nonzero && ms == 0 {
        return Err("must be more than 0 milliseconds".into());
    }
    Ok(Duration::from_millis(ms))
}

/// A count of at least 1.
pub fn count(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{s}` is not a positive whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_lists() {
        let l = kv_list_strict(" a=1 , b = x%2Cy ,,c=, key%20x=v=w").unwrap();
        assert_eq!(
            l,
            [
                ("a".into(), "1".into()),
                ("b".into(), "x,y".into()),
                ("c".into(), String::new()),
                ("key x".into(), "v=w".into()),
            ]
        );
        assert!(kv_list_strict("a=1,b").unwrap_err().contains("`b`"));
        assert!(kv_list_strict("=1").is_err());
        assert!(kv_list_strict("a=%FF").is_err());
        assert_eq!(kv_list_lenient("a=1,junk,=2,b=%FF,c=3").len(), 2);
        assert!(kv_list_strict("").unwrap().is_empty());
    }

    #[test]
    fn header_lists() {
        let h = headers("Authorization=Bearer%20abc,x-tenant=t1").unwrap();
        assert_eq!(h[0].0.as_str(), "authorization");
        assert_eq!(h[0].1, "Bearer abc");
        assert_eq!(h[1].0.as_str(), "x-tenant");
        assert!(headers("no-equals").is_err());
        assert!(headers("bad name=1").is_err());
        assert!(headers("k=line%0Abreak").is_err());
        assert!(headers("k-bin=AAAA").is_err());
    }

    #[test]
    fn endpoints() {
        assert!(endpoint("http://collector:4317").is_ok());
        assert!(endpoint("https://collector.example/otlp").is_ok());
        assert!(endpoint("collector:4317").unwrap_err().contains("scheme"));
        assert!(endpoint("localhost:4317").is_err());
        assert!(endpoint("ftp://x").is_err());
        assert!(endpoint("http://").is_err());
        assert!(endpoint("not a url").is_err());
        assert!(endpoint("http://h:99999").is_err());
        assert!(endpoint("http://h:4318/?q=1").is_err());
    }

    #[test]
    fn traces_path_is_appended_to_the_base_path() {
        let t = |s: &str| with_traces_path(&endpoint(s).unwrap()).to_string();
        assert_eq!(t("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(t("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(t("https://c/otlp"), "https://c/otlp/v1/traces");
        assert_eq!(t("https://c/otlp/"), "https://c/otlp/v1/traces");
    }

    #[test]
    fn numbers() {
        assert_eq!(millis("250", true), Ok(Duration::from_millis(250)));
        assert_eq!(millis("0", false), Ok(Duration::ZERO));
        assert!(millis("0", true).is_err());
        assert!(millis("5s", false).is_err());
        assert!(millis("-1", false).is_err());
        assert_eq!(count("2048"), Ok(2048));
        assert!(count("0").is_err());
        assert!(count("x").is_err());
    }
}
