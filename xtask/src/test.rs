//! `cargo xtask test [-- FILTER...]`: the one command that runs every test.
//!
//! 1. setup (installs only what is missing),
//! 2. build-ebpf,
//! 3. unit tests of the whole workspace except the integration crate,
//! 4. the release agent binary,
//! 5. the root-only integration tests against that binary, one at a time
//!    (with the OTLP venv from setup for the OTLP/JSON interop test).
//!
//! With `--kernels 5.10,6.1,6.12`, after those steps it also builds the
//! integration tests and runs a subset of them inside each listed Debian
//! kernel, booted in qemu (see `kernels/`); `--kernels-only` skips steps 3
//! and 5 (CI runs the host suite and the matrix as two sections).
//!
//! Nothing fails fast: every test binary runs (`--no-fail-fast`), and a
//! failing unit test does not stop the integration tests from running. The
//! command fails at the end if anything failed.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    build::{self, Profile},
    kernels, setup,
    util::{self, section},
};

/// The integration-test crate (root only: loads eBPF, starts servers).
const INTEGRATION_CRATE: &str = "wirespan-tests";

/// Variable that tells the integration tests which agent binary to run.
const AGENT_BIN_ENV: &str = "WIRESPAN_BIN";

/// Variable that tells the integration tests which Python has PyPI's
/// opentelemetry-proto (the venv that setup creates), for `otlp_json.rs`.
const OTLP_PYTHON_ENV: &str = "WIRESPAN_OTLP_PYTHON";

/// The kernel-matrix flags of `cargo xtask test`.
#[derive(clap::Args, Debug, Default)]
pub struct KernelArgs {
    /// Also boot these Debian kernels in qemu and run the guest subset of the
    /// integration tests in each (comma-separated; supported: 5.10, 6.1, 6.12).
    #[arg(long, value_delimiter = ',', value_name = "VERSIONS")]
    pub kernels: Vec<String>,
    /// Run only the kernel matrix: skip the host's unit and integration tests.
    #[arg(long, requires = "kernels")]
    pub kernels_only: bool,
    /// Time limit for each guest, in seconds; qemu is stopped after it.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub kernel_timeout: u64,
}

pub fn test(kargs: &KernelArgs, integration_args: &[String]) -> Result<()> {
    if !util::is_root() {
        bail!(
            "`cargo xtask test` must run as root: the integration tests load eBPF programs \
             (try `sudo -E env PATH=\"$PATH\" cargo xtask test`). Unit tests alone: \
             `WIRESPAN_EBPF_OBJ=none cargo test --workspace --exclude {INTEGRATION_CRATE}`"
        );
    }
    let matrix = if kargs.kernels.is_empty() {
        None
    } else {
        Some(kernels::parse(&kargs.kernels)?)
    };
    let host = !kargs.kernels_only;
    setup::setup()?;
    if matrix.is_some() {
        kernels::install::qemu()?;
    }
    let obj = build::build_ebpf()?;

    let mut results: Vec<(String, bool, f64)> = Vec::new();

    if host {
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
        results.push((
            "unit tests".into(),
            unit_ok,
            started.elapsed().as_secs_f64(),
        ));
    }

    let bin = match build::build_agent(&obj, Profile::Release) {
        Ok(bin) => bin,
        Err(e) => {
            results.push(("release build".into(), false, 0.0));
            summary(&results);
            return Err(e);
        }
    };
    if host {
        host_integration(&obj, &bin, integration_args, &mut results)?;
    }
    if let Some(ks) = matrix {
        // With the host suite skipped, ARGS narrow the guest subset.
        let filters: &[String] = if host { &[] } else { integration_args };
        kernel_matrix(&obj, &bin, &ks, filters, kargs, &mut results);
    }

    let failed = summary(&results);
    if !failed.is_empty() {
        bail!("{} failed", failed.join(", "));
    }
    Ok(())
}

fn host_integration(
    obj: &Path,
    bin: &Path,
    integration_args: &[String],
    results: &mut Vec<(String, bool, f64)>,
) -> Result<()> {
    section("test: integration tests (root, real servers, real agent)");
    let started = Instant::now();
    let mut cmd = build::cargo_with_probes(obj);
    cmd.env(AGENT_BIN_ENV, bin)
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
        "integration tests".into(),
        integration_ok,
        started.elapsed().as_secs_f64(),
    ));
    Ok(())
}

/// The VM kernel matrix: build the integration tests, run the guest subset
/// in each kernel. One result row per kernel.
fn kernel_matrix(
    obj: &Path,
    bin: &Path,
    ks: &[&'static kernels::Kernel],
    filters: &[String],
    kargs: &KernelArgs,
    results: &mut Vec<(String, bool, f64)>,
) {
    section("test: kernel matrix: build the integration tests for the guests");
    let exes = match kernels::build_tests(obj, INTEGRATION_CRATE) {
        Ok(exes) => exes,
        Err(e) => {
            eprintln!("error: {e:#}");
            results.push(("kernel tests build".into(), false, 0.0));
            return;
        }
    };
    let otlp_python = setup::otlp_python();
    let inputs = kernels::Inputs {
        agent_bin: bin,
        otlp_python: &otlp_python,
        test_exes: &exes,
        filters,
        timeout: Duration::from_secs(kargs.kernel_timeout),
    };
    for o in kernels::matrix(ks, &inputs) {
        results.push((format!("kernel {}", o.series), o.ok, o.secs));
    }
}

/// Prints each step's verdict; returns the names of the failed steps.
fn summary(results: &[(String, bool, f64)]) -> Vec<String> {
    section("test: summary");
    for (name, ok, secs) in results {
        let verdict = if *ok { "ok" } else { "FAILED" };
        util::note(format!("{name:<18} {verdict:<6} ({secs:.1}s)"));
    }
    results
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(name, _, _)| name.clone())
        .collect()
}
