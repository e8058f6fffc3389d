//! Bad OTLP configuration: an unparseable endpoint, an unknown protocol or
//! a malformed headers string is refused before anything is loaded, with
//! exit code 2 and one stderr line that names the variable.
//!
//! No eBPF needed; as root the agent would otherwise start, so these runs
//! also prove the configuration is checked first.

use std::process::{Command, Output};
use std::time::Duration;

use wirespan_tests::clients::run_with_timeout;
use wirespan_tests::env;

/// Bad input must be rejected before anything is loaded, so quickly.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the agent with only `envs` among the OTEL_* variables.
fn run_agent_env(envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env::agent_bin());
    cmd.env(wirespan_tests::agent::PROPAGATION_ENV, "none");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied()).args(["--pid", "1"]);
    run_with_timeout(&mut cmd, CLI_TIMEOUT)
}

/// Exit code 2, nothing on stdout, and exactly one non-empty stderr line
/// that names `variable`.
fn assert_config_error(what: &str, envs: &[(&str, &str)], variable: &str) {
    if !env::require_agent_bin() {
        return;
    }
    let out = run_agent_env(envs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what} ({envs:?}): exit status {} (want 2); stderr:\n{stderr}",
        out.status
    );
    assert_eq!(
        lines.len(),
        1,
        "{what} ({envs:?}): want a one-line error on stderr, got {} lines:\n{stderr}",
        lines.len()
    );
    assert!(
        lines[0].contains(variable),
        "{what} ({envs:?}): the error should name {variable}: {:?}",
        lines[0]
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: nothing belongs on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn unparseable_endpoint_exits_2_naming_the_variable() {
    assert_config_error(
        "port is not a number",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:notaport")],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    );
    assert_config_error(
        "not a URL at all",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1")],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    );
}

#[test]
fn unparseable_traces_endpoint_exits_2_naming_the_variable() {
    assert_config_error(
        "traces endpoint",
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:99999/v1/traces",
            ),
        ],
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    );
}

#[test]
fn unknown_protocol_exits_2_naming_the_variable() {
    assert_config_error(
        "unknown protocol",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ],
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    );
}

#[test]
fn malformed_headers_exit_2_naming_the_variable() {
    assert_config_error(
        "a header without '='",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-ok=1,novalue"),
        ],
        "OTEL_EXPORTER_OTLP_HEADERS",
    );
    assert_config_error(
        "an empty header name",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "=value"),
        ],
        "OTEL_EXPORTER_OTLP_HEADERS",
    );
}
