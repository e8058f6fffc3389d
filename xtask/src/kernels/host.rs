//! What the host builds for the guests: the integration-test executables.
//!
//! The guests run the host's own binaries (the host's `/` is their root), so
//! the tests are built once here, with the same command and environment as
//! the host's integration run (cargo reuses that build), and each guest runs
//! copies of the executables, taken once per matrix run ([`snapshot`]): the
//! target directory may be shared with other builds, and a binary replaced
//! under a running guest (9p with `cache=loose`) makes it fail in ways that
//! have nothing to do with the kernel.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::{guest::Planned, subset};
use crate::{build, util};

/// Builds the integration tests without running them; returns each test
/// binary's executable by target name (`servers`, `pairing`, ...).
pub fn build_tests(obj: &Path, krate: &str) -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = build::cargo_with_probes(obj);
    cmd.args([
        "test",
        "--release",
        "-p",
        krate,
        "--no-run",
        "--message-format=json",
    ])
    .stderr(Stdio::inherit());
    println!("    $ {}", util::render(&cmd));
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", util::render(&cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", util::render(&cmd), out.status);
    }
    let mut exes = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let is_test_target = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(exe)) = (
            is_test_target,
            msg["target"]["name"].as_str(),
            msg["executable"].as_str(),
        ) {
            exes.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    if exes.is_empty() {
        bail!("`{}` reported no test executables", util::render(&cmd));
    }
    Ok(exes)
}

/// The subset (narrowed by `filters`) as runnable tests; fails when an entry
/// names a binary or a test that does not exist (checked with `--list`).
pub fn plan(exes: &BTreeMap<String, PathBuf>, filters: &[String]) -> Result<Vec<Planned>> {
    let selected = subset::selected(filters);
    if selected.is_empty() {
        bail!(
            "no test of the guest subset (xtask/src/kernels/subset.rs) matches {}",
            filters.join(" ")
        );
    }
    let mut listed: BTreeMap<&str, String> = BTreeMap::new();
    let mut planned = Vec::new();
    for (bin, name) in selected {
        let exe = exes.get(bin).with_context(|| {
            format!("the guest subset names test binary `{bin}`, which the build did not produce")
        })?;
        if !listed.contains_key(bin) {
            let out = Command::new(exe)
                .args(["--list", "--format", "terse"])
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("cannot run {} --list", exe.display()))?;
            listed.insert(bin, String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let wanted = format!("{name}: test");
        if !listed[bin].lines().any(|l| l.trim() == wanted) {
            bail!(
                "the guest subset (xtask/src/kernels/subset.rs) names `{bin}::{name}`, \
                 but {} has no such test",
                exe.display()
            );
        }
        planned.push(Planned {
            label: format!("{bin}::{name}"),
            exe: exe.clone(),
            name: name.to_string(),
        });
    }
    Ok(planned)
}

/// Copies the agent and the planned tests' executables into `dir` (emptied
/// first); returns the agent's copy and rewrites `planned` to the copies.
pub fn snapshot(agent: &Path, planned: &mut [Planned], dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = |from: &Path| -> Result<PathBuf> {
        let to = dir.join(from.file_name().context("executable file name")?);
        if !to.exists() {
            fs::copy(from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        Ok(to)
    };
    let agent = copy(agent)?;
    for p in planned.iter_mut() {
        p.exe = copy(&p.exe)?;
    }
    Ok(agent)
}
