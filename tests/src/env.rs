//! Where things are, and whether this machine can run the eBPF tests.
//!
//! A test that needs root and eBPF starts with
//! `if !env::require_ebpf() { return; }`. When the environment variable `CI`
//! is `true` (or `1`), a missing prerequisite panics instead: in CI these
//! tests must fail loudly, never skip.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `tests/servers/<name>`.
pub fn server_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("servers")
        .join(name)
}

/// The agent binary: `$WIRESPAN_BIN`, or `<workspace>/target/release/wirespan`.
pub fn agent_bin() -> PathBuf {
    match std::env::var_os("WIRESPAN_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/release/wirespan"),
    }
}

/// The Python interpreter: `$WIRESPAN_PYTHON`, else `/usr/bin/python3`
/// (a real executable, not a version-manager shim), else `python3` on PATH.
pub fn python() -> OsString {
    if let Some(p) = std::env::var_os("WIRESPAN_PYTHON").filter(|p| !p.is_empty()) {
        return p;
    }
    if Path::new("/usr/bin/python3").exists() {
        return "/usr/bin/python3".into();
    }
    "python3".into()
}

/// The Python interpreter that has PyPI's `opentelemetry-proto` (and
/// `protobuf`), for decoding our OTLP/JSON with an implementation we did not
/// write: `$WIRESPAN_OTLP_PYTHON`, else `<workspace>/target/otlp-venv/bin/python`
/// (the venv `cargo xtask setup` creates).
pub fn otlp_python() -> PathBuf {
    match std::env::var_os("WIRESPAN_OTLP_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/otlp-venv/bin/python"),
    }
}

/// `tests/otlp/<name>`: tools that read the agent's OTLP output.
pub fn otlp_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("otlp")
        .join(name)
}

/// True when [`otlp_python`] runs `import`; otherwise skips (or fails
/// under CI) with a pointer to `cargo xtask setup`.
fn require_otlp_python_import(import: &str) -> bool {
    let python = otlp_python();
    let works = std::process::Command::new(&python)
        .args(["-c", import])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return skip(&format!(
            "{} cannot `{import}` (create or update the venv with `cargo xtask setup`, \
             or set WIRESPAN_OTLP_PYTHON)",
            python.display()
        ));
    }
    true
}

/// [`otlp_python`] exists and imports the OTLP trace service messages.
pub fn require_otlp_python() -> bool {
    require_otlp_python_import("import opentelemetry.proto.collector.trace.v1.trace_service_pb2")
}

/// [`otlp_python`] has `grpcio` and opentelemetry-proto's gRPC service
/// stubs too: what `tests/otlp/receiver.py`, the OTLP receiver of the export
/// tests, needs.
pub fn require_otlp_receiver() -> bool {
    require_otlp_python_import(
        "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
    )
}

/// [`otlp_python`] has PyPI's `prometheus_client`, whose parser reads the
/// agent's `/metrics` in the metrics tests.
pub fn require_prometheus_client() -> bool {
    require_otlp_python_import("import prometheus_client.parser")
}

/// True when `CI` says we run in continuous integration.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
}

/// Reports a missing prerequisite: panics in CI, prints `SKIP: ...` otherwise.
/// Always returns false so callers can `return` on it.
pub fn skip(reason: &str) -> bool {
    if in_ci() {
        panic!("CI=true and this test cannot run: {reason}. Integration tests never skip in CI.");
    }
    eprintln!("SKIP: {reason}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Root, the agent binary, and a kernel that lets us create a BPF map.
pub fn require_ebpf() -> bool {
    if !is_root() {
        return skip("not root (the agent needs root to load eBPF programs)");
    }
    if let Err(reason) = bpf_usable() {
        return skip(&format!("eBPF cannot be used here: {reason}"));
    }
    require_agent_bin()
}

/// The agent binary exists (no privileges needed).
pub fn require_agent_bin() -> bool {
    let bin = agent_bin();
    if !bin.is_file() {
        return skip(&format!(
            "agent binary {} not found (build it with `cargo xtask build`, or set WIRESPAN_BIN)",
            bin.display()
        ));
    }
    true
}

/// An executable the test needs (nginx, node, redis-server, ...).
pub fn require_program(program: &str) -> bool {
    if find_program(program).is_none() {
        return skip(&format!("{program} is not installed"));
    }
    true
}

/// Resolves `program` (absolute, or searched on PATH and in /usr/sbin).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|c| c.is_file())
}

/// Creates and closes a one-entry BPF array map: the cheapest proof that the
/// bpf() syscall works for us (not blocked by seccomp, lockdown or missing
/// capabilities).
fn bpf_usable() -> Result<(), String> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // union bpf_attr, map-create view: map_type, key_size, value_size,
    // max_entries, map_flags, ... ; the rest stays zero.
    let mut attr = [0u32; 32];
    attr[0] = BPF_MAP_TYPE_ARRAY;
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: attr is a valid, zero-padded bpf_attr of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(format!(
            "bpf(BPF_MAP_CREATE) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a descriptor we own.
    unsafe { libc::close(fd as libc::c_int) };
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err("/sys/kernel/btf/vmlinux is missing (kernel BTF is required)".into());
    }
    Ok(())
}
