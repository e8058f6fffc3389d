//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! `WIRESPAN_EBPF_OBJ` picks the object (default: the xtask output path).
//! `WIRESPAN_EBPF_OBJ=none` builds an agent without probes, for fuzzing and
//! tooling; such an agent refuses to start with a clear error.

use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?).join("wirespan.bpf.o");
    println!("cargo:rerun-if-env-changed=WIRESPAN_EBPF_OBJ");
    let src = match env::var("WIRESPAN_EBPF_OBJ") {
        Ok(v) if v == "none" => None,
        Ok(v) => Some(PathBuf::from(v)),
        Err(_) => Some(manifest.join("../target/bpfel-unknown-none/release/wirespan")),
    };
    match src {
        None => fs::write(&out, b"")?,
        Some(src) => {
            println!("cargo:rerun-if-changed={}", src.display());
            if !src.exists() {
                anyhow::bail!(
                    "eBPF object {} not found: run `cargo xtask build-ebpf` first \
                     (or set WIRESPAN_EBPF_OBJ=none for a build without probes)",
                    src.display()
                );
            }
            fs::copy(&src, &out)?;
        }
    }
    Ok(())
}
