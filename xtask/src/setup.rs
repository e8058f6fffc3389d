//! `cargo xtask setup`: install the build and demo prerequisites that are
//! missing, and nothing else. Every step checks first and says what it does.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::util::{self, LEAKY_ENV, note, section};

/// Debian packages: LLVM 22 for bpf-linker, the servers and clients the demo
/// and the integration tests run, the openssl CLI (test certificates) and
/// bpftool (an independent reading of kernel BTF that the offsets test
/// checks against).
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "nginx-light",
    "redis-server",
    "wrk",
    "curl",
    "python3-venv",
    "openssl",
    "bpftool",
];

/// Where Debian's llvm-22 packages install LLVM; bpf-linker links against it.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn setup() -> Result<()> {
    section("setup: checking prerequisites");
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    otlp_venv()?;
    note("all prerequisites are present");
    Ok(())
}

fn dpkg_installed(pkg: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", pkg])
        .output()
        .context(
            "cannot run dpkg-query: `cargo xtask setup` supports Debian and Ubuntu only; \
             install the packages listed in DEVELOPERS.md by hand",
        )?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "installed")
}

/// A command that runs `program` as root: directly when we are root,
/// through sudo otherwise.
fn as_root(program: &str) -> Result<Command> {
    if util::is_root() {
        return Ok(Command::new(program));
    }
    if !util::succeeds("sudo", &["--version"]) {
        bail!("installing packages needs root: run `sudo cargo xtask setup`");
    }
    let mut cmd = Command::new("sudo");
    cmd.arg(program);
    Ok(cmd)
}

fn apt_packages() -> Result<()> {
    let mut missing = Vec::new();
    for pkg in APT_PACKAGES {
        if !dpkg_installed(pkg)? {
            missing.push(*pkg);
        }
    }
    // Rust needs a C toolchain to link; a machine with rustup normally has one.
    if !util::succeeds("cc", &["--version"]) {
        missing.extend(["gcc", "libc6-dev"]);
    }
    if missing.is_empty() {
        note(format!(
            "apt packages: present ({})",
            APT_PACKAGES.join(" ")
        ));
        return Ok(());
    }
    note(format!("apt packages: installing {}", missing.join(" ")));
    util::run(as_root("apt-get")?.args(["update", "-q"]))?;
    util::run(
        as_root("apt-get")?
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    for pkg in &missing {
        if ["gcc", "libc6-dev"].contains(pkg) {
            continue;
        }
        if !dpkg_installed(pkg)? {
            bail!("apt-get reported success but {pkg} is still not installed");
        }
    }
    Ok(())
}

/// True when the `nightly` toolchain is installed with its `rust-src` component.
pub fn has_nightly_rust_src() -> bool {
    util::output_of(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .is_some_and(|out| out.lines().any(|l| l.trim().starts_with("rust-src")))
}

fn has_nightly() -> bool {
    util::output_of("rustup", &["toolchain", "list"])
        .is_some_and(|out| out.lines().any(|l| l.starts_with("nightly")))
}

fn nightly_rust_src() -> Result<()> {
    if !util::succeeds("rustup", &["--version"]) {
        bail!("rustup is not on PATH; install Rust with rustup (https://rustup.rs) first");
    }
    if !has_nightly() {
        note("nightly toolchain: installing (the eBPF crate needs it for -Z build-std)");
        util::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    if has_nightly_rust_src() {
        note("nightly rust-src: present");
        return Ok(());
    }
    note("nightly rust-src: installing");
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    if !has_nightly_rust_src() {
        bail!("`rustup component add rust-src --toolchain nightly` did not install rust-src");
    }
    Ok(())
}

/// The `bpf-linker --version` output, when bpf-linker is on PATH and runs.
pub fn bpf_linker_version() -> Option<String> {
    util::output_of("bpf-linker", &["--version"]).map(|v| v.trim().to_string())
}

/// Pids of other `cargo install ... bpf-linker` processes (another setup).
fn concurrent_bpf_linker_installs() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            let is_cargo = args.first().is_some_and(|a0| {
                Path::new(std::str::from_utf8(a0).unwrap_or(""))
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cargo"))
            });
            is_cargo
                && args.contains(&&b"install"[..])
                && args
                    .iter()
                    .any(|a| a.windows(10).any(|w| w == b"bpf-linker"))
        })
        .collect()
}

fn bpf_linker() -> Result<()> {
    if let Some(v) = bpf_linker_version() {
        note(format!("bpf-linker: present ({v})"));
        return Ok(());
    }
    let others = concurrent_bpf_linker_installs();
    if !others.is_empty() {
        note(format!(
            "bpf-linker: another `cargo install bpf-linker` is running (pid {others:?}); waiting for it"
        ));
        while !concurrent_bpf_linker_installs().is_empty() {
            thread::sleep(Duration::from_secs(5));
        }
        if let Some(v) = bpf_linker_version() {
            note(format!("bpf-linker: present ({v})"));
            return Ok(());
        }
        note("bpf-linker: the other install did not produce a working bpf-linker; installing");
    }
    note("bpf-linker: installing against LLVM 22 (takes about 5 minutes)");
    // The workspace's stable cargo; keep RUSTUP_TOOLCHAIN so the nested
    // rustc is the same toolchain, but drop flags meant for the outer build.
    let mut cmd = util::cargo();
    for var in LEAKY_ENV.iter().filter(|v| **v != "RUSTUP_TOOLCHAIN") {
        cmd.env_remove(var);
    }
    cmd.env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "bpf-linker",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    util::run(&mut cmd)?;
    match bpf_linker_version() {
        Some(v) => {
            note(format!("bpf-linker: installed ({v})"));
            Ok(())
        }
        None => bail!(
            "bpf-linker was installed but `bpf-linker --version` does not run; \
             is ~/.cargo/bin on PATH? (`source ~/.cargo/env`)"
        ),
    }
}

/// Debian's Python, which `python3-venv` (in [`APT_PACKAGES`]) completes.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// What the venv gets from PyPI, pinned. `opentelemetry-proto` is the OTLP
/// implementation we did not write (messages and the generated gRPC service
/// stubs, which need grpcio >= 1.63.2); `grpcio` serves OTLP/gRPC in the
/// test receiver `tests/otlp/receiver.py`. grpcio 1.85.1 ships manylinux
/// wheels for CPython 3.11 on x86_64 (Debian bookworm's python3), so nothing
/// is compiled.
/// The SDK and its urllib instrumentation play an instrumented client in
/// the trace-context tests (a server span must join the SDK's trace).
/// `prometheus-client` (pure Python) parses the agent's `/metrics` in the
/// metrics tests: a Prometheus text parser we did not write.
pub const OTLP_VENV_PACKAGES: &[&str] = &[
    "opentelemetry-proto==1.45.2",
    "grpcio==1.85.1",
    "opentelemetry-sdk==1.45.1",
    "opentelemetry-instrumentation-urllib==0.66b1",
    "prometheus-client==0.26.0",
];

/// Importing these proves the venv is usable: the OTLP/JSON interop test
/// needs the messages, the receiver needs grpcio and the gRPC service stubs.
/// A venv made before grpcio was added fails this, so the step re-runs.
const OTLP_IMPORT: &str = "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2, \
     opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc, \
     opentelemetry.sdk.trace, opentelemetry.instrumentation.urllib, prometheus_client.parser";

/// `target/otlp-venv`: a Python venv holding PyPI's `opentelemetry-proto`
/// (and its `protobuf` dependency) and `grpcio`, an OTLP implementation we did
/// not write, for the integration tests `tests/tests/otlp_json.rs` and
/// `tests/tests/otlp_export*.rs` and for `cargo xtask bench`.
pub fn otlp_venv_dir() -> PathBuf {
    util::target_dir().join("otlp-venv")
}

/// The venv's interpreter, passed to the integration tests as
/// `WIRESPAN_OTLP_PYTHON`.
pub fn otlp_python() -> PathBuf {
    otlp_venv_dir().join("bin").join("python")
}

/// True when `python ARGS...` starts and exits 0 (output discarded).
fn python_succeeds(python: &Path, args: &[&str]) -> bool {
    Command::new(python)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `opentelemetry-proto X, protobuf Y, grpcio Z`, as installed in the venv.
fn otlp_venv_versions(python: &Path) -> String {
    Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; \
             print(f\"opentelemetry-proto {m.version('opentelemetry-proto')}, \
             protobuf {m.version('protobuf')}, grpcio {m.version('grpcio')}\")",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "versions unknown".to_string(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

fn otlp_venv() -> Result<()> {
    let dir = otlp_venv_dir();
    let python = otlp_python();
    if python_succeeds(&python, &["-c", OTLP_IMPORT]) {
        note(format!(
            "otlp venv: present ({}: {})",
            util::display_path(&dir),
            otlp_venv_versions(&python)
        ));
        return Ok(());
    }
    if !Path::new(SYSTEM_PYTHON).is_file() {
        bail!("{SYSTEM_PYTHON} is missing: install the Debian package python3 (and python3-venv)");
    }
    // Reuse a venv whose interpreter runs (a pip install that failed half
    // way); recreate one that is broken.
    if !python_succeeds(&python, &["-c", "pass"]) {
        note(format!(
            "otlp venv: creating {} with {SYSTEM_PYTHON}",
            util::display_path(&dir)
        ));
        util::run(
            Command::new(SYSTEM_PYTHON)
                .args(["-m", "venv", "--clear"])
                .arg(&dir),
        )?;
    }
    note(format!(
        "otlp venv: installing {} from PyPI",
        OTLP_VENV_PACKAGES.join(" ")
    ));
    util::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                // Wheels only: a source build of grpcio takes many minutes
                // and a C++ toolchain; fail fast instead.
                "--only-binary=:all:",
            ])
            .args(OTLP_VENV_PACKAGES),
    )?;
    if !python_succeeds(&python, &["-c", OTLP_IMPORT]) {
        bail!(
            "pip installed {} but `{} -c '{OTLP_IMPORT}'` still fails",
            OTLP_VENV_PACKAGES.join(" "),
            python.display()
        );
    }
    note(format!(
        "otlp venv: installed ({})",
        otlp_venv_versions(&python)
    ));
    Ok(())
}
