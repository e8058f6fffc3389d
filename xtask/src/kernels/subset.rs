//! The integration tests each guest kernel runs: the one list to edit.
//!
//! A guest runs on TCG, about 17 times slower than the host, so it runs the
//! core of the suite rather than all of it: HTTP/1 spans from a Python
//! server and from nginx (and from Python with the file-table walk forced,
//! so kernels that select the tracepoints exercise the fallback too),
//! keep-alive, pipelining, client spans from curl, a
//! connection opened before the agent started (found through the socket
//! classification strategy the kernel selected), our OTLP/JSON decoded by
//! PyPI's opentelemetry-proto, and OTLP/gRPC export to the independent
//! receiver, the three-runtime chain, and header injection with the
//! `tracestate` capture, and a long upload whose middle goes as lengths
//! only. The host (6.18) runs the whole suite. Every entry is checked
//! against the test binary's `--list` before any guest boots.

/// `(test binary, test name)`: the binary is the file stem under
/// `tests/tests/`, the name is the `#[test]` function (matched exactly).
pub const GUEST_TESTS: &[(&str, &str)] = &[
    ("servers", "python_threading_http_server"),
    ("servers", "nginx"),
    ("servers", "python_with_fd_table_classifier"),
    ("pairing", "keep_alive_100_requests_python"),
    ("pairing", "pipelined_10_requests_python"),
    ("clients", "curl_client_spans"),
    ("attach", "connection_opened_before_the_agent"),
    (
        "otlp_json",
        "otlp_json_decodes_with_pypi_opentelemetry_proto",
    ),
    ("otlp_export", "otlp_grpc_export_decodes_with_pypi_receiver"),
    // Linking across runtimes; on kernels before 6.2 the RequestIntent of a
    // new connection resolves its socket with the file-table walk.
    (
        "trace_chain",
        "curl_python_java_nginx_one_trace_per_request",
    ),
    // The middle of long bodies as lengths only (stream positions from
    // struct tcp_sock), then keep-alive.
    (
        "bodies",
        "long_upload_goes_as_lengths_and_keep_alive_follows",
    ),
    // sock_ops and sk_msg in a child cgroup, header injection, and the
    // read programs' tail call into the tracestate capture.
    (
        "trace_inject",
        "tracestate_travels_with_the_injected_traceparent",
    ),
];

/// The subset narrowed by `filters` (substrings of `binary::name`; none
/// keeps everything), like libtest's name filters.
pub fn selected(filters: &[String]) -> Vec<(&'static str, &'static str)> {
    GUEST_TESTS
        .iter()
        .filter(|(bin, name)| {
            let full = format!("{bin}::{name}");
            filters.is_empty() || filters.iter().any(|f| full.contains(f.as_str()))
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_narrow_the_subset() {
        assert_eq!(selected(&[]).len(), GUEST_TESTS.len());
        let only = selected(&["servers::nginx".to_string()]);
        assert_eq!(only, [("servers", "nginx")]);
        assert!(selected(&["no-such-test".to_string()]).is_empty());
    }
}
