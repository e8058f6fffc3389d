//! A private APT configuration under `target/kernels/apt` that downloads
//! Debian packages (kernels, busybox-static) from suites the system does not
//! use, without touching /etc/apt or the system's package state.
//!
//! Everything apt reads or writes is redirected by `APT_CONFIG`: the sources
//! list, the (empty) config and preferences directories, the package lists,
//! the (empty) dpkg status and the archive cache. Packages are only
//! downloaded (`apt-get download`), never installed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{self, note};

/// Debian's archive keyring (package `debian-archive-keyring`), which holds
/// the bullseye, bookworm and trixie signing keys.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The private APT root, with its config file.
pub struct Apt {
    root: PathBuf,
    updated: bool,
}

impl Apt {
    /// Writes the private configuration for `suites` (each `(mirror URL, suite)`).
    pub fn new(root: &Path, suites: &[(&str, &str)]) -> Result<Self> {
        for dir in ["lists/partial", "cache/archives/partial", "etc/parts"] {
            fs::create_dir_all(root.join(dir))
                .with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        let mut sources = String::new();
        for (mirror, suite) in suites {
            sources.push_str(&format!(
                "deb [signed-by={KEYRING}] {mirror} {suite} main\n"
            ));
        }
        write_if_changed(&root.join("sources.list"), &sources)?;
        let status = root.join("status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("creating {}", status.display()))?;
        }
        let r = root.display();
        let conf = format!(
            "// Written by cargo xtask (wirespan): a private APT for downloading kernels.\n\
             Dir::Etc::Parts \"{r}/etc/parts\";\n\
             Dir::Etc::SourceList \"{r}/sources.list\";\n\
             Dir::Etc::SourceParts \"{r}/etc/parts\";\n\
             Dir::Etc::Preferences \"{r}/etc/preferences\";\n\
             Dir::Etc::PreferencesParts \"{r}/etc/parts\";\n\
             Dir::State \"{r}\";\n\
             Dir::State::Lists \"{r}/lists\";\n\
             Dir::State::status \"{r}/status\";\n\
             Dir::Cache \"{r}/cache\";\n\
             APT::Architecture \"amd64\";\n\
             APT::Architectures {{ \"amd64\"; }};\n\
             Acquire::Languages \"none\";\n\
             APT::Sandbox::User \"root\";\n"
        );
        write_if_changed(&root.join("apt.conf"), &conf)?;
        Ok(Self {
            root: root.to_path_buf(),
            updated: false,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", self.root.join("apt.conf"));
        cmd
    }

    /// `apt-get update` of the private lists, once per xtask run.
    pub fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        util::run(self.command("apt-get").args(["update", "-q"]))?;
        self.updated = true;
        Ok(())
    }

    /// `(package, version)` of the package that `pkg` from `suite` depends
    /// on first: for `linux-image-amd64` in bullseye,
    /// `("linux-image-5.10.0-32-amd64", "5.10.223-1")`.
    pub fn first_dependency(&mut self, pkg: &str, suite: &str) -> Result<(String, String)> {
        self.update()?;
        let stanza = self.show(&format!("{pkg}/{suite}"))?;
        let depends = field(&stanza, "Depends")
            .with_context(|| format!("{pkg}/{suite} has no Depends field"))?;
        let first = depends.split(',').next().unwrap_or_default().trim();
        // `linux-image-5.10.0-32-amd64 (= 5.10.223-1)`
        let (name, rest) = first.split_once(' ').unwrap_or((first, ""));
        let version = rest
            .trim()
            .strip_prefix("(=")
            .and_then(|v| v.strip_suffix(')'))
            .map(str::trim)
            .with_context(|| format!("{pkg}/{suite}: unexpected dependency `{first}`"))?;
        Ok((name.to_string(), version.to_string()))
    }

    /// The version of `pkg` in `suite`.
    pub fn version_in(&mut self, pkg: &str, suite: &str) -> Result<String> {
        self.update()?;
        let stanza = self.show(&format!("{pkg}/{suite}"))?;
        field(&stanza, "Version")
            .map(str::to_string)
            .with_context(|| format!("{pkg}/{suite} has no Version field"))
    }

    fn show(&self, what: &str) -> Result<String> {
        let out = self
            .command("apt-cache")
            .args(["show", what])
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!(
                "`apt-cache show {what}` (private APT, {}) failed: {}",
                util::display_path(&self.root),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // The first stanza is the one asked for.
        Ok(text.split("\n\n").next().unwrap_or_default().to_string())
    }

    /// Downloads `pkg=version` into `dir`; returns the .deb's path.
    pub fn download(&mut self, pkg: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        self.update()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        note(format!("downloading {pkg} {version}"));
        util::run(self.command("apt-get").current_dir(dir).args([
            "download",
            "-q",
            &format!("{pkg}={version}"),
        ]))?;
        let prefix = format!("{pkg}_");
        let deb = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            });
        deb.with_context(|| format!("apt-get download {pkg} left no .deb in {}", dir.display()))
    }
}

/// The value of `name:` in a control stanza (single-line fields only).
fn field<'a>(stanza: &'a str, name: &str) -> Option<&'a str> {
    stanza.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_single_line_fields() {
        let stanza = "Package: linux-image-amd64\nVersion: 5.10.223-1\n\
                      Depends: linux-image-5.10.0-32-amd64 (= 5.10.223-1)\n";
        assert_eq!(field(stanza, "Version"), Some("5.10.223-1"));
        assert_eq!(
            field(stanza, "Depends"),
            Some("linux-image-5.10.0-32-amd64 (= 5.10.223-1)")
        );
        assert_eq!(field(stanza, "Pre-Depends"), None);
    }
}
