//! `cargo xtask test [-- FILTER...]`: the one command that runs every test.
//!
//! 1. setup (installs only what is missing),
//! 2. build-ebpf,
//! 3. unit tests of the whole workspace except the integration crate,
//! 4. the release agent binary,
//! 5. the root-only integration tests against that binary, one at a time
//!    (with the OTLP venv from setup for the OTLP/JSON interop test).
//!
//! Nothing fails fast: every test binary runs (`--no-fail-fast`), and a
//! failing unit test does not stop the integration tests from running. The
//! command fails at the end if anything failed.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::{
    build::{self, Profile},
    setup,
    util::{self, section},
};

/// The integration-test crate (root only: loads eBPF, starts servers).
const INTEGRATION_CRATE: &str = "wirespan-tests";

/// Variable that tells the integration tests which agent binary to run.
const AGENT_BIN_ENV: &str = "WIRESPAN_BIN";

/// Variable that tells the integration tests which Python has PyPI's
/// opentelemetry-proto (the venv that setup creates), for `otlp_json.rs`.
const OTLP_PYTHON_ENV: &str = "WIRESPAN_OTLP_PYTHON";

pub fn test(integration_args: &[String]) -> Result<()> {
    if !util::is_root() {
        bail!(
            "`cargo xtask test` must run as root: the integration tests load eBPF programs \
             (try `sudo -E env PATH=\"$PATH\" cargo xtask test`). Unit tests alone: \
             `WIRESPAN_EBPF_OBJ=none cargo test --workspace --exclude {INTEGRATION_CRATE}`"
        );
    }
    setup::setup()?;
    let obj = build::build_ebpf()?;

    let mut results: Vec<(&str, bool, f64)> = Vec::new();

    section("test: unit tests (cargo test --workspace)");
    let started = Instant::now();
    let unit_ok = util::status(build::cargo_with_probes(&obj).args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        INTEGRATION_CRATE,
    ]))?
    .success();
    results.push(("unit tests", unit_ok, started.elapsed().as_secs_f64()));

    let bin = match build::build_agent(&obj, Profile::Release) {
        Ok(bin) => bin,
        Err(e) => {
            results.push(("release build", false, 0.0));
            summary(&results);
            return Err(e);
        }
    };

    section("test: integration tests (root, real servers, real agent)");
    let started = Instant::now();
    let mut cmd = build::cargo_with_probes(&obj);
    cmd.env(AGENT_BIN_ENV, &bin)
        .env(OTLP_PYTHON_ENV, setup::otlp_python())
        .args([
            "test",
            "--no-fail-fast",
            "--release",
            "-p",
            INTEGRATION_CRATE,
        ])
        .arg("--")
        .arg("--test-threads=1")
        .args(integration_args);
    let integration_ok = util::status(&mut cmd)?.success();
    results.push((
        "integration tests",
        integration_ok,
        started.elapsed().as_secs_f64(),
    ));

    let failed = summary(&results);
    if !failed.is_empty() {
        bail!("{} failed", failed.join(", "));
    }
    Ok(())
}

/// Prints each step's verdict; returns the names of the failed steps.
fn summary<'a>(results: &[(&'a str, bool, f64)]) -> Vec<&'a str> {
    section("test: summary");
    for (name, ok, secs) in results {
        let verdict = if *ok { "ok" } else { "FAILED" };
        util::note(format!("{name:<18} {verdict:<6} ({secs:.1}s)"));
    }
    results
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(name, _, _)| *name)
        .collect()
}
