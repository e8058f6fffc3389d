//! Fetch a Debian kernel (and busybox) into the cache under `target/kernels`.
//!
//! From a kernel package only `vmlinuz` and the modules the guest must load
//! to reach the host's root are kept: virtio PCI, 9p over virtio, overlayfs,
//! and whatever those depend on (read from each module's `.modinfo`; Debian
//! packages ship no `modules.dep`, depmod writes it at install time).
//! Modules built into the kernel (listed in `modules.builtin`) are skipped.
//! Compressed modules (`.ko.xz` since 6.12) are decompressed here, so the
//! guest's busybox `insmod` needs no decompressor. A complete cache entry has
//! a `kernel.txt` manifest, written last; with it present nothing is fetched.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::{Kernel, apt::Apt};
use crate::util::{self, note};

/// The modules the guest loads itself; their dependencies come along.
const ROOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The manifest of a complete cache entry.
const MANIFEST: &str = "kernel.txt";

/// A kernel ready to boot.
pub struct KernelFiles {
    pub vmlinuz: PathBuf,
    /// `uname -r` of the kernel, e.g. `5.10.0-32-amd64`.
    pub release: String,
    /// Debian package and version it came from.
    pub package: String,
    /// Modules to insmod, in dependency order.
    pub modules: Vec<PathBuf>,
}

/// The cached kernel for `kernel`, fetching and extracting it when missing.
pub fn kernel(apt: &mut Apt, kernel: &Kernel, dir: &Path) -> Result<KernelFiles> {
    if let Some(files) = read_manifest(dir)? {
        note(format!(
            "kernel {}: cached ({}, {})",
            kernel.series,
            files.package,
            util::display_path(dir)
        ));
        return Ok(files);
    }
    let (pkg, version) = apt.first_dependency("linux-image-amd64", kernel.suite)?;
    if !pkg.starts_with(&format!("linux-image-{}.", kernel.series)) {
        bail!(
            "linux-image-amd64 in {} depends on {pkg}, which is not a {} kernel",
            kernel.suite,
            kernel.series
        );
    }
    let staging = partial(dir);
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    let deb = apt.download(&pkg, &version, &staging)?;
    let files = extract_kernel(&deb, &staging, &format!("{pkg} {version}"))?;
    // Move the finished entry into place: the manifest last.
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("modules"))?;
    fs::rename(&files.vmlinuz, dir.join("vmlinuz"))?;
    let mut names = Vec::new();
    for m in &files.modules {
        let name = m.file_name().context("module path")?.to_owned();
        fs::rename(m, dir.join("modules").join(&name))?;
        names.push(name.to_string_lossy().into_owned());
    }
    let manifest = format!(
        "package={}\nrelease={}\nmodules={}\n",
        files.package,
        files.release,
        names.join(" ")
    );
    fs::write(dir.join(MANIFEST), manifest)?;
    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    let files = read_manifest(dir)?.context("manifest just written")?;
    note(format!(
        "kernel {}: {} ({}), modules: {}",
        kernel.series,
        files.package,
        files.release,
        names.join(" ")
    ));
    Ok(files)
}

fn read_manifest(dir: &Path) -> Result<Option<KernelFiles>> {
    let Ok(text) = fs::read_to_string(dir.join(MANIFEST)) else {
        return Ok(None);
    };
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let (Some(package), Some(release), Some(modules)) =
        (get("package"), get("release"), get("modules"))
    else {
        return Ok(None);
    };
    let files = KernelFiles {
        vmlinuz: dir.join("vmlinuz"),
        release,
        package,
        modules: modules
            .split_whitespace()
            .map(|m| dir.join("modules").join(m))
            .collect(),
    };
    let complete = files.vmlinuz.is_file() && files.modules.iter().all(|m| m.is_file());
    Ok(complete.then_some(files))
}

/// Member paths of the package's data archive.
fn list_members(deb: &Path) -> Result<Vec<String>> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let out = Command::new("tar")
        .arg("-t")
        .stdin(dpkg.stdout.take().context("dpkg-deb stdout")?)
        .output()
        .context("cannot run tar")?;
    let st = dpkg.wait()?;
    if !st.success() || !out.status.success() {
        bail!("listing {} failed", deb.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Extracts `members` of the package's data archive under `dest`.
fn extract_members(deb: &Path, dest: &Path, members: &[&str]) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let st = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .args(members)
        .stdin(dpkg.stdout.take().context("dpkg-deb stdout")?)
        .status()
        .context("cannot run tar")?;
    let dst = dpkg.wait()?;
    if !st.success() || !dst.success() {
        bail!(
            "extracting {} from {} failed",
            members.join(" "),
            deb.display()
        );
    }
    Ok(())
}

/// `9pnet_virtio` from `.../9pnet_virtio.ko.xz`; module names use `_`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    (file.len() > stem.len()).then(|| stem.replace('-', "_"))
}

fn extract_kernel(deb: &Path, staging: &Path, package: &str) -> Result<KernelFiles> {
    let members = list_members(deb)?;
    let vmlinuz = members
        .iter()
        .find(|m| m.starts_with("./boot/vmlinuz-"))
        .with_context(|| format!("{} has no ./boot/vmlinuz-*", deb.display()))?
        .clone();
    let release = vmlinuz.trim_start_matches("./boot/vmlinuz-").to_string();
    // Debian has moved /lib to /usr/lib (merged /usr): accept both.
    let module_dirs = [
        format!("./lib/modules/{release}/"),
        format!("./usr/lib/modules/{release}/"),
    ];
    let in_modules = |m: &str| module_dirs.iter().any(|d| m.starts_with(d.as_str()));
    let by_name: BTreeMap<String, &str> = members
        .iter()
        .filter(|m| in_modules(m))
        .filter_map(|m| Some((module_name(m)?, m.as_str())))
        .collect();
    let builtin_member = members
        .iter()
        .find(|m| in_modules(m) && m.ends_with("/modules.builtin"))
        .cloned();

    let mut first: Vec<&str> = vec![&vmlinuz];
    if let Some(b) = &builtin_member {
        first.push(b);
    }
    extract_members(deb, staging, &first)?;
    let builtin: BTreeSet<String> = match &builtin_member {
        Some(b) => fs::read_to_string(staging.join(b))?
            .lines()
            .filter_map(module_name)
            .collect(),
        None => BTreeSet::new(),
    };

    // Extract the wanted modules, read their dependencies, repeat.
    let out = staging.join("ko");
    fs::create_dir_all(&out)?;
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut wanted: BTreeSet<String> = ROOT_MODULES.iter().map(|s| s.to_string()).collect();
    loop {
        let todo: Vec<String> = wanted
            .iter()
            .filter(|m| !deps.contains_key(*m))
            .cloned()
            .collect();
        if todo.is_empty() {
            break;
        }
        let mut paths = Vec::new();
        for m in &todo {
            match by_name.get(m) {
                Some(p) => paths.push(*p),
                None if builtin.contains(m) => {
                    deps.insert(m.clone(), Vec::new());
                }
                None => bail!("{package} has no module {m}, and it is not built in"),
            }
        }
        if !paths.is_empty() {
            extract_members(deb, staging, &paths)?;
        }
        for p in paths {
            let name = module_name(p).context("module name")?;
            let ko = out.join(format!("{name}.ko"));
            decompress(&staging.join(p), &ko)?;
            let d = module_depends(&fs::read(&ko)?);
            wanted.extend(d.iter().cloned());
            deps.insert(name, d);
        }
    }
    let modules = load_order(&deps)?
        .into_iter()
        .filter(|m| by_name.contains_key(m))
        .map(|m| out.join(format!("{m}.ko")))
        .collect();
    Ok(KernelFiles {
        vmlinuz: staging.join(&vmlinuz),
        release,
        package: package.to_string(),
        modules,
    })
}

/// Writes the plain module: copies a `.ko`, decompresses `.ko.xz|.zst|.gz`.
fn decompress(src: &Path, dst: &Path) -> Result<()> {
    let name = src.to_string_lossy();
    let tool = if name.ends_with(".ko") {
        fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
        return Ok(());
    } else if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        bail!("unknown module compression: {}", src.display());
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(src)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {tool} (needed to decompress kernel modules)"))?;
    if !out.status.success() {
        bail!("`{tool} -dc {}` failed", src.display());
    }
    fs::write(dst, out.stdout).with_context(|| format!("writing {}", dst.display()))
}

/// The `depends=` entry of a module's `.modinfo` (NUL-separated strings).
fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(|d| d.trim().replace('-', "_"))
        .filter(|d| !d.is_empty())
        .collect()
}

/// Dependencies before dependents (depth-first), stable by name.
fn load_order(deps: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>> {
    fn visit(
        m: &str,
        deps: &BTreeMap<String, Vec<String>>,
        done: &mut Vec<String>,
        path: &mut Vec<String>,
    ) -> Result<()> {
        if done.iter().any(|d| d == m) {
            return Ok(());
        }
        if path.iter().any(|p| p == m) {
            bail!("module dependency cycle: {} -> {m}", path.join(" -> "));
        }
        path.push(m.to_string());
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, done, path)?;
        }
        path.pop();
        done.push(m.to_string());
        Ok(())
    }
    let mut done = Vec::new();
    for m in deps.keys() {
        visit(m, deps, &mut done, &mut Vec::new())?;
    }
    Ok(done)
}

/// `<dir>.partial`: where an entry is assembled before it moves into place.
fn partial(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// busybox from Debian's `busybox-static` (for the guest's init), cached.
pub fn busybox(apt: &mut Apt, suite: &str, dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    let version = apt.version_in("busybox-static", suite)?;
    let staging = partial(dir);
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let deb = apt.download("busybox-static", &version, &staging)?;
    extract_members(&deb, &staging, &["./bin/busybox"])?;
    fs::create_dir_all(dir)?;
    fs::rename(staging.join("bin/busybox"), &bin)?;
    fs::remove_dir_all(&staging)?;
    note(format!(
        "busybox: busybox-static {version} ({})",
        util::display_path(&bin)
    ));
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name("./lib/modules/6.12.95+deb12-amd64/kernel/net/9p/9pnet_virtio.ko.xz"),
            Some("9pnet_virtio".to_string())
        );
        assert_eq!(module_name("kernel/fs/9p/9p.ko"), Some("9p".to_string()));
        assert_eq!(module_name("./lib/modules/x/modules.builtin"), None);
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let ko = b"\x7fELF...\0license=GPL\0depends=9pnet,netfs\0intree=Y\0";
        assert_eq!(module_depends(ko), ["9pnet", "netfs"]);
        assert!(module_depends(b"\0depends=\0name=virtio\0").is_empty());
    }

    #[test]
    fn dependencies_load_first() {
        let deps: BTreeMap<String, Vec<String>> = [
            ("9p", vec!["9pnet", "netfs"]),
            ("9pnet", vec![]),
            ("netfs", vec!["fscache"]),
            ("fscache", vec![]),
            ("9pnet_virtio", vec!["9pnet", "virtio_ring", "virtio"]),
            ("virtio", vec![]),
            ("virtio_ring", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        let order = load_order(&deps).expect("no cycle");
        let pos = |m: &str| order.iter().position(|o| o == m).expect(m);
        assert!(pos("9pnet") < pos("9p"));
        assert!(pos("fscache") < pos("netfs") && pos("netfs") < pos("9p"));
        assert!(pos("virtio") < pos("9pnet_virtio"));
        assert_eq!(order.len(), deps.len());
    }
}
