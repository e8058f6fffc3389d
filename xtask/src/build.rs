//! `cargo xtask build-ebpf` and `cargo xtask build`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use crate::{
    setup,
    util::{self, LEAKY_ENV, display_path, note, section},
};

/// The variable the agent's build.rs reads to find the probes to embed.
pub const EBPF_OBJ_ENV: &str = "WIRESPAN_EBPF_OBJ";

const EBPF_TARGET: &str = "bpfel-unknown-none";

/// Cargo profile for host builds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    pub fn from_debug_flag(debug: bool) -> Self {
        if debug { Self::Debug } else { Self::Release }
    }

    /// The directory under the target dir (`release` or `debug`).
    pub fn dir(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Debug => "debug",
        }
    }
}

/// Where `build-ebpf` leaves the probes' object file.
pub fn ebpf_object() -> PathBuf {
    util::target_dir()
        .join(EBPF_TARGET)
        .join("release")
        .join("wirespan")
}

/// Where `build` leaves the agent binary.
pub fn agent_binary(profile: Profile) -> PathBuf {
    util::target_dir().join(profile.dir()).join("wirespan")
}

fn check_ebpf_toolchain() -> Result<()> {
    if setup::bpf_linker_version().is_none() {
        bail!("bpf-linker is not installed (or not on PATH): run `cargo xtask setup`");
    }
    if !setup::has_nightly_rust_src() {
        bail!(
            "the nightly toolchain or its rust-src component is missing: run `cargo xtask setup`"
        );
    }
    Ok(())
}

/// Builds the eBPF programs with nightly for bpfel-unknown-none and returns
/// the object's path.
pub fn build_ebpf() -> Result<PathBuf> {
    section("build-ebpf: kernel programs (nightly, bpfel-unknown-none)");
    check_ebpf_toolchain()?;
    let ebpf_dir = util::workspace_root().join("ebpf");
    if !ebpf_dir.join("Cargo.toml").is_file() {
        bail!("{} not found", ebpf_dir.join("Cargo.toml").display());
    }
    // `rustup run nightly cargo` is `cargo +nightly`, but does not depend on
    // the `cargo` found on PATH being rustup's proxy.
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&ebpf_dir)
        .args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--target", EBPF_TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(util::target_dir());
    for var in LEAKY_ENV {
        cmd.env_remove(var);
    }
    util::run(&mut cmd)?;
    let obj = ebpf_object();
    if !obj.is_file() {
        bail!(
            "the eBPF build succeeded but {} does not exist",
            obj.display()
        );
    }
    note(format!("probes: {}", display_path(&obj)));
    Ok(obj)
}

/// `cargo <args>` for the workspace with the probes' object given to the
/// agent's build.rs.
pub fn cargo_with_probes(obj: &Path) -> Command {
    let mut cmd = util::cargo();
    cmd.env(EBPF_OBJ_ENV, obj);
    cmd
}

/// Builds the probes, then the agent that embeds them; returns the binary.
pub fn build(profile: Profile) -> Result<PathBuf> {
    let obj = build_ebpf()?;
    build_agent(&obj, profile)
}

/// Builds the agent binary around an already built probes object.
pub fn build_agent(obj: &Path, profile: Profile) -> Result<PathBuf> {
    section(&format!("build: agent ({})", profile.dir()));
    let mut cmd = cargo_with_probes(obj);
    cmd.args(["build", "-p", "wirespan"]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)?;
    let bin = agent_binary(profile);
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }
    note(format!("agent binary: {}", display_path(&bin)));
    Ok(bin)
}
