//! How full the agent's kernel maps are: each open BPF map fd of the
//! agent's process ([`super::bpf_fds`]: `map_id`, `map_type`,
//! `max_entries`) and, for the hash kinds, the entries a `bpftool map dump`
//! lists. Exactly the maps this agent owns, whatever else is loaded.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::bpf_fds;

/// `enum bpf_map_type` values whose entries come and go (hash, per-CPU
/// hash, LRU hash, LRU per-CPU hash): the ones that could leak. Arrays are
/// always full and ring buffers hold no entries.
const HASH_TYPES: [u32; 4] = [1, 5, 9, 10];

/// One map's occupancy.
#[derive(Debug, Clone)]
pub struct Map {
    pub name: String,
    pub entries: u64,
    pub max_entries: u64,
}

/// The hash maps `pid` holds, by name (the kernel's 15-character map name),
/// with their current entry counts.
pub fn occupancy(pid: u32) -> Result<BTreeMap<String, Map>> {
    let mut by_id = BTreeMap::new();
    for text in bpf_fds::fdinfos(pid, bpf_fds::Kind::Map)? {
        let field = |k: &str| bpf_fds::field(&text, k);
        let (Some(id), Some(kind)) = (field("map_id"), field("map_type")) else {
            continue;
        };
        // The same map may be open on several fds.
        if !HASH_TYPES.iter().any(|&t| u64::from(t) == kind) || by_id.contains_key(&id) {
            continue;
        }
        let (name, entries) = dump(id)?;
        let max_entries = field("max_entries").unwrap_or(0);
        by_id.insert(
            id,
            Map {
                name,
                entries,
                max_entries,
            },
        );
    }
    Ok(by_id.into_values().map(|m| (m.name.clone(), m)).collect())
}

/// The map's name and entry count, from `bpftool map show` and `map dump`.
fn dump(id: u64) -> Result<(String, u64)> {
    let id = id.to_string();
    let show = bpftool(&["map", "show", "id", &id, "--json"])?;
    let name = show["name"].as_str().unwrap_or("?").to_string();
    let dumped = bpftool(&["map", "dump", "id", &id, "--json"])?;
    let entries = dumped.as_array().map_or(0, Vec::len) as u64;
    Ok((name, entries))
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .context("cannot run bpftool (run `cargo xtask setup`)")?;
    if !out.status.success() {
        bail!(
            "bpftool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("bpftool {}: JSON", args.join(" ")))
}
