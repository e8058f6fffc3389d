//! The VM kernel matrix: `cargo xtask test --kernels 5.10,6.1,6.12`.
//!
//! For each kernel: fetch Debian's stock kernel through a private APT
//! configuration (`apt`, `fetch`), keep `vmlinuz` and the modules the guest
//! needs, pack an initramfs with busybox and an init that mounts the host's
//! root over 9p under a tmpfs overlay (`initramfs`), boot it in qemu with
//! TCG (`qemu`) and run the integration-test subset (`subset`) inside with
//! the host's own test executables (`host`, `guest`). Results come back
//! through a writable 9p share; the console goes to
//! `target/kernels/logs/<kernel>.log`.
//!
//! Layout under `target/kernels/`: `apt/` (private APT), `busybox/`,
//! `bin/` (copies of the agent and the test executables, per run),
//! `<kernel>/` (vmlinuz, modules/, kernel.txt, initramfs.cpio), `jobs/<kernel>/`
//! (the job share, recreated per run), `logs/<kernel>.log`.

mod apt;
mod fetch;
mod guest;
mod host;
mod initramfs;
pub mod install;
mod qemu;
mod subset;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util::{self, note, section};

pub use host::build_tests;

const DEBIAN: &str = "http://deb.debian.org/debian";
const DEBIAN_SECURITY: &str = "http://deb.debian.org/debian-security";

/// A kernel series of the matrix and the Debian suite whose
/// `linux-image-amd64` (generic flavour, which has the 9p modules that
/// `-cloud-amd64` lacks) provides it.
pub struct Kernel {
    pub series: &'static str,
    suite: &'static str,
    mirror: &'static str,
}

/// The kernels `--kernels` accepts.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        series: "5.10",
        suite: "bullseye",
        mirror: DEBIAN,
    },
    Kernel {
        series: "6.1",
        suite: "bookworm-security",
        mirror: DEBIAN_SECURITY,
    },
    Kernel {
        series: "6.12",
        suite: "bookworm-backports",
        mirror: DEBIAN,
    },
];

/// busybox-static for the initramfs comes from here (any suite would do).
const BUSYBOX_SUITE: (&str, &str) = (DEBIAN, "bullseye");

/// How long the tests wait for spans in a guest (`WIRESPAN_SPAN_TIMEOUT_SECS`;
/// the host default is 30 s, and a guest is about 17 times slower).
const GUEST_SPAN_TIMEOUT_SECS: u32 = 120;

/// `--kernels 5.10,6.1` -> the kernels, in the order given.
pub fn parse(list: &[String]) -> Result<Vec<&'static Kernel>> {
    let mut out: Vec<&'static Kernel> = Vec::new();
    for want in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let Some(k) = KERNELS.iter().find(|k| k.series == want) else {
            bail!(
                "unknown kernel `{want}` for --kernels; supported: {}",
                KERNELS
                    .iter()
                    .map(|k| k.series)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if !out.iter().any(|o| o.series == k.series) {
            out.push(k);
        }
    }
    if out.is_empty() {
        bail!("--kernels needs at least one kernel, e.g. --kernels 5.10,6.1,6.12");
    }
    Ok(out)
}

/// `target/kernels`.
pub fn dir() -> PathBuf {
    util::target_dir().join("kernels")
}

/// What the guests run, built on the host.
pub struct Inputs<'a> {
    pub agent_bin: &'a Path,
    pub otlp_python: &'a Path,
    /// Test executables by binary name ([`build_tests`]).
    pub test_exes: &'a std::collections::BTreeMap<String, PathBuf>,
    /// Narrow the subset (substrings of `binary::name`); empty runs all.
    pub filters: &'a [String],
    /// Per-guest time limit.
    pub timeout: Duration,
}

/// One kernel's outcome, for the summary.
pub struct Outcome {
    pub series: &'static str,
    pub ok: bool,
    pub secs: f64,
}

/// Runs the subset on every kernel; never stops at the first failure.
pub fn matrix(kernels: &[&'static Kernel], inputs: &Inputs) -> Vec<Outcome> {
    let fail_all = |e: anyhow::Error| {
        eprintln!("error: kernel matrix: {e:#}");
        kernels
            .iter()
            .map(|k| Outcome {
                series: k.series,
                ok: false,
                secs: 0.0,
            })
            .collect()
    };
    section("kernels: fetch Debian kernels (cached under target/kernels)");
    if install::qemu_version().is_none() {
        return fail_all(anyhow::anyhow!(
            "{} is not installed: run `cargo xtask setup --kernels`",
            install::QEMU_BINARY
        ));
    }
    let root = dir();
    let mut planned = match host::plan(inputs.test_exes, inputs.filters) {
        Ok(p) => p,
        Err(e) => return fail_all(e),
    };
    let agent_bin = match host::snapshot(inputs.agent_bin, &mut planned, &root.join("bin")) {
        Ok(a) => a,
        Err(e) => return fail_all(e),
    };
    let mut suites: Vec<(&str, &str)> = vec![BUSYBOX_SUITE];
    for k in kernels {
        if !suites.contains(&(k.mirror, k.suite)) {
            suites.push((k.mirror, k.suite));
        }
    }
    let mut apt = match apt::Apt::new(&root.join("apt"), &suites) {
        Ok(a) => a,
        Err(e) => return fail_all(e),
    };
    let busybox = match fetch::busybox(&mut apt, BUSYBOX_SUITE.1, &root.join("busybox")) {
        Ok(b) => b,
        Err(e) => return fail_all(e),
    };
    let mut fetched = Vec::new();
    for k in kernels {
        fetched.push(fetch::kernel(&mut apt, k, &root.join(k.series)));
    }

    let mut outcomes = Vec::new();
    let mut table = Vec::new();
    for (k, files) in kernels.iter().zip(fetched) {
        let started = Instant::now();
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: kernel {}: {e:#}", k.series);
                outcomes.push(Outcome {
                    series: k.series,
                    ok: false,
                    secs: 0.0,
                });
                table.push(format!("{:<6} fetch failed", k.series));
                continue;
            }
        };
        let (ok, row) = match run_one(k, &files, &busybox, &planned, &agent_bin, inputs) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: kernel {}: {e:#}", k.series);
                (
                    false,
                    format!("{:<6} {:<24} error: {e}", k.series, files.release),
                )
            }
        };
        let secs = started.elapsed().as_secs_f64();
        outcomes.push(Outcome {
            series: k.series,
            ok,
            secs,
        });
        table.push(format!("{row}  {secs:.0}s"));
    }
    section("kernels: matrix");
    for row in table {
        note(row);
    }
    outcomes
}

/// Boots one kernel with the job; returns (passed, summary row).
fn run_one(
    k: &Kernel,
    files: &fetch::KernelFiles,
    busybox: &Path,
    planned: &[guest::Planned],
    agent_bin: &Path,
    inputs: &Inputs,
) -> Result<(bool, String)> {
    section(&format!(
        "kernels: {} ({}) in qemu, {} tests",
        k.series,
        files.package,
        planned.len()
    ));
    let root = dir();
    let job = root.join("jobs").join(k.series);
    if job.exists() {
        fs::remove_dir_all(&job).with_context(|| format!("removing {}", job.display()))?;
    }
    fs::create_dir_all(&job)?;
    let logs = root.join("logs");
    fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{}.log", k.series));
    let env = guest::GuestEnv {
        agent_bin,
        otlp_python: inputs.otlp_python,
        span_timeout_secs: GUEST_SPAN_TIMEOUT_SECS,
    };
    let script = guest::write_script(&job, &env, planned)?;
    let initrd = root.join(k.series).join("initramfs.cpio");
    initramfs::write(
        &initrd,
        busybox,
        &initramfs::InitSpec {
            modules: &files.modules,
            job_dir: &job,
            script: &script,
        },
    )?;
    let label = format!("[{}]", k.series);
    let ended = qemu::boot(
        &qemu::Boot {
            label: &label,
            vmlinuz: &files.vmlinuz,
            initramfs: &initrd,
            job_dir: &job,
            log: &log,
            timeout: inputs.timeout,
        },
        &[guest::GUEST_MARKER, "wirespan-init: "],
    )?;
    let results = guest::read_results(&job);
    let passed = results.tests.iter().filter(|t| t.1).count();
    let ok = results.exit_code == Some(0) && passed == planned.len() && !ended.timed_out;
    let strategy = results.strategy.as_deref().unwrap_or("(none logged)");
    note(format!(
        "kernel {} ({}): strategy: {strategy}; {passed}/{} tests passed; guest {:.0}s; log {}",
        k.series,
        files.release,
        planned.len(),
        ended.secs,
        util::display_path(&log)
    ));
    if !results.features.is_empty() {
        note(format!(
            "kernel {}: agent found: {}",
            k.series,
            results.features.join("; ")
        ));
    }
    for w in &results.warnings {
        note(format!("agent warning on {}: {w}", k.series));
    }
    if !ok {
        explain_failure(k, &results, &ended, &job, &log);
    }
    let verdict = if ok { "ok" } else { "FAILED" };
    let row = format!(
        "{:<6} {:<24} {verdict:<6} {passed}/{} tests  strategy: {strategy}",
        k.series,
        files.release,
        planned.len()
    );
    Ok((ok, row))
}

/// Prints what is needed to see why a kernel failed.
fn explain_failure(
    k: &Kernel,
    results: &guest::Results,
    ended: &qemu::Ended,
    job: &Path,
    log: &Path,
) {
    const TAIL: usize = 60;
    if ended.timed_out {
        note(format!("kernel {}: TIMED OUT (qemu stopped)", k.series));
    }
    if results.exit_code.is_none() {
        note(format!(
            "kernel {}: the job never finished (no exit-code); last {TAIL} console lines of {}:",
            k.series,
            util::display_path(log)
        ));
        print_tail(log, TAIL);
        // The test that was running when the guest stopped, if any.
        let done: Vec<PathBuf> = results
            .tests
            .iter()
            .map(|(label, _, _)| guest::test_output(job, label))
            .collect();
        let outs = fs::read_dir(job.join("out"))
            .into_iter()
            .flatten()
            .flatten();
        for out in outs.map(|e| e.path()).filter(|p| !done.contains(p)) {
            note(format!(
                "kernel {}: unfinished test; last {TAIL} lines of {}:",
                k.series,
                util::display_path(&out)
            ));
            print_tail(&out, TAIL);
        }
        return;
    }
    if !results.agent_ready {
        note(format!(
            "kernel {}: the agent did not start; its stderr (full, with any verifier log):",
            k.series
        ));
        for l in results.agent_log.lines() {
            println!("      | {l}");
        }
    }
    for (label, ok, _) in &results.tests {
        if !ok {
            let out = guest::test_output(job, label);
            note(format!(
                "kernel {}: {label} FAILED; last {TAIL} lines of {}:",
                k.series,
                util::display_path(&out)
            ));
            print_tail(&out, TAIL);
        }
    }
}

fn print_tail(path: &Path, n: usize) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines[lines.len().saturating_sub(n)..] {
        println!("      | {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_list() {
        let ks = parse(&["6.12".into(), "5.10".into(), "6.12".into()]).expect("parses");
        let names: Vec<_> = ks.iter().map(|k| k.series).collect();
        assert_eq!(names, ["6.12", "5.10"]);
        assert!(parse(&["4.19".into()]).is_err());
        assert!(parse(&[]).is_err());
    }
}
