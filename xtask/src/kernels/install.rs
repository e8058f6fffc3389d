//! `cargo xtask setup --kernels`: install qemu for the kernel matrix.
//!
//! Debian bookworm's own `qemu-system-x86` (7.2) conflicts with the
//! `qemu-utils` 10.0.2 from bookworm-backports that machines like this one
//! have preinstalled: installing it from bookworm REMOVES qemu-utils. So we
//! install it from `<codename>-backports`, at the version of the installed
//! qemu-utils when there is one, with `--no-remove` so that apt aborts
//! instead of removing anything. When the system's apt does not know the
//! backports suite, this adds one sources file for it (and says so):
//! [`BACKPORTS_SOURCES`]. Nothing else under /etc/apt is touched.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::util::{self, note, section};

/// The Debian package with `qemu-system-x86_64`.
const QEMU_PACKAGE: &str = "qemu-system-x86";
/// The emulator the matrix runs.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// The qemu package whose version ours must match.
const QEMU_UTILS: &str = "qemu-utils";
/// The one file this step may add to the system's apt configuration.
pub const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/wirespan-backports.sources";

/// `qemu-system-x86_64 --version`'s first line, when qemu is installed.
pub fn qemu_version() -> Option<String> {
    util::output_of(QEMU_BINARY, &["--version"])
        .and_then(|v| v.lines().next().map(|l| l.trim().to_string()))
}

/// Installs `qemu-system-x86` from backports unless qemu is already there.
pub fn qemu() -> Result<()> {
    section("setup --kernels: qemu for the VM kernel matrix");
    if let Some(v) = qemu_version() {
        note(format!("qemu: present ({v})"));
        return Ok(());
    }
    if !util::is_root() {
        bail!("installing {QEMU_PACKAGE} needs root: run `sudo cargo xtask setup --kernels`");
    }
    let codename = os_codename()?;
    let backports = format!("{codename}-backports");
    if !system_apt_knows(&backports)? {
        add_backports_sources(&codename)?;
    }
    util::run(Command::new("apt-get").args(["update", "-q"]))?;
    // Match the installed qemu-utils exactly, so that qemu-system-common
    // and qemu-utils come from the same qemu release.
    let wanted = match installed_version(QEMU_UTILS)? {
        Some(v) => {
            note(format!(
                "qemu: {QEMU_UTILS} {v} is installed; installing {QEMU_PACKAGE} at the same version"
            ));
            format!("{QEMU_PACKAGE}={v}")
        }
        None => QEMU_PACKAGE.to_string(),
    };
    note(format!(
        "qemu: installing {wanted} from {backports} (--no-remove: apt aborts rather than remove anything)"
    ));
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--no-remove",
            ])
            .args(["-t", &backports, &wanted]),
    )?;
    match qemu_version() {
        Some(v) => {
            note(format!("qemu: installed ({v})"));
            Ok(())
        }
        None => {
            bail!("apt-get installed {QEMU_PACKAGE} but `{QEMU_BINARY} --version` does not run")
        }
    }
}

/// `VERSION_CODENAME` from /etc/os-release (e.g. `bookworm`).
fn os_codename() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .context(
            "/etc/os-release has no VERSION_CODENAME: the kernel matrix supports Debian only; \
             install qemu-system-x86_64 by hand",
        )
}

/// True when the system's apt sources already include `suite`.
fn system_apt_knows(suite: &str) -> Result<bool> {
    let out = Command::new("apt-cache")
        .arg("policy")
        .output()
        .context("cannot run apt-cache: the kernel matrix supports Debian only")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.contains(&format!("a={suite},")) || text.contains(&format!("n={suite},")))
}

fn add_backports_sources(codename: &str) -> Result<()> {
    let path = Path::new(BACKPORTS_SOURCES);
    note(format!(
        "qemu: the system's apt has no {codename}-backports; adding {} (only that suite, \
         main component; backports packages are never picked unless asked for with -t)",
        path.display()
    ));
    let text = format!(
        "# Added by `cargo xtask setup --kernels` (wirespan) to install qemu-system-x86\n\
         # from backports at the version of the preinstalled qemu-utils.\n\
         Types: deb\n\
         URIs: http://deb.debian.org/debian\n\
         Suites: {codename}-backports\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The installed version of `pkg`, or `None` when it is not installed.
fn installed_version(pkg: &str) -> Result<Option<String>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status} ${Version}", pkg])
        .output()
        .context("cannot run dpkg-query")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .strip_prefix("installed ")
        .map(|v| v.trim().to_string())
        .filter(|v| out.status.success() && !v.is_empty()))
}
