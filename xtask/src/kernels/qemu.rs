//! Boot one guest in qemu (TCG) and stream its console to a log file.
//!
//! `/dev/kvm` on this kind of machine is a PVM device that stock kernels do
//! not boot under, so the guest runs on TCG (`-accel tcg,thread=multi -cpu
//! max`), about 17 times slower than the host. The host's `/` is shared
//! read-only (9p tag `hostroot`), the job directory writable (tag `job`).
//! There is no network device: the tests use loopback only.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::install::QEMU_BINARY;
use crate::util::{self, note};

/// Guest memory: the tmpfs overlay, servers, the agent and the tests.
const MEMORY_MIB: u32 = 3072;
/// Virtual CPUs (TCG runs one host thread per vCPU with thread=multi).
const CPUS: u32 = 2;
/// `quiet` keeps the console to warnings and our own lines; `panic=-1`
/// plus `-no-reboot` turns a kernel panic into a qemu exit.
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// One guest boot.
pub struct Boot<'a> {
    /// Prefix for the console lines echoed to our stdout, e.g. `[5.10]`.
    pub label: &'a str,
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub job_dir: &'a Path,
    pub log: &'a Path,
    pub timeout: Duration,
}

/// How the guest ended.
pub struct Ended {
    pub timed_out: bool,
    pub secs: f64,
}

/// Boots the guest and waits for it to power off (or for the timeout).
/// Every console line goes to `boot.log`; lines starting with one of
/// `echo_prefixes` are also printed, after `boot.label`.
pub fn boot(boot: &Boot, echo_prefixes: &[&str]) -> Result<Ended> {
    let mut cmd = Command::new(QEMU_BINARY);
    cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"])
        .args(["-smp", &CPUS.to_string(), "-m", &MEMORY_MIB.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(boot.vmlinuz)
        .arg("-initrd")
        .arg(boot.initramfs)
        .args(["-append", CMDLINE])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,readonly=on,security_model=none,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=job,security_model=none,multidevs=remap",
            boot.job_dir.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("    $ {}", util::render(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| {
        format!("cannot start {QEMU_BINARY} (run `cargo xtask setup --kernels`)")
    })?;
    let mut log =
        File::create(boot.log).with_context(|| format!("creating {}", boot.log.display()))?;
    writeln!(log, "$ {}", util::render(&cmd))?;
    let log_err = log.try_clone()?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let label = boot.label.to_string();
    let prefixes: Vec<String> = echo_prefixes.iter().map(|p| p.to_string()).collect();
    let console = thread::spawn(move || copy_lines(stdout, log, &label, &prefixes));
    let label = boot.label.to_string();
    let errors = thread::spawn(move || copy_lines(stderr, log_err, &label, &[String::new()]));

    let status = util::wait_timeout(&mut child, boot.timeout)?;
    let timed_out = status.is_none();
    if timed_out {
        note(format!(
            "{} the guest did not finish within {:?}: stopping qemu (pid {})",
            boot.label,
            boot.timeout,
            child.id()
        ));
        util::stop_child(&mut child, libc::SIGTERM, Duration::from_secs(10))?;
    }
    let _ = console.join();
    let _ = errors.join();
    Ok(Ended {
        timed_out,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Copies `from` line by line into `log`; echoes the lines that start with
/// one of `prefixes` (an empty prefix echoes everything).
fn copy_lines(from: impl std::io::Read, mut log: File, label: &str, prefixes: &[String]) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let raw = String::from_utf8_lossy(&buf);
        // A bare CR also ends a line on a serial console ("Booting from
        // ROM...\rwirespan-init: ...").
        for part in raw.trim_end_matches(['\n', '\r']).split('\r') {
            let line = strip_escapes(part);
            let _ = writeln!(log, "{line}");
            if prefixes.iter().any(|p| line.starts_with(p.as_str())) {
                println!("    {label} {line}");
            }
        }
    }
    let _ = log.flush();
}

/// `line` without terminal escape sequences (SeaBIOS and the kernel clear
/// the screen on the serial console): `ESC [ ... final` and `ESC x`.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            // Parameters and intermediates, up to the final byte @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_terminal_escapes() {
        assert_eq!(
            strip_escapes("\u{1b}c\u{1b}[?7l\u{1b}[2Jwirespan-init: up"),
            "wirespan-init: up"
        );
        assert_eq!(strip_escapes("plain [1] text"), "plain [1] text");
    }
}
