//! The suite's report: `target/bench/report.json` (every figure) and
//! `target/bench/report.md` (one table, each figure next to the issue's
//! target; also printed on stdout). The bench reports against the targets;
//! it never asserts them.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::util::{self, note};

/// One line of the Markdown table.
pub struct Row {
    pub scenario: &'static str,
    pub metric: String,
    pub measured: String,
    pub target: String,
}

impl Row {
    pub fn new(
        scenario: &'static str,
        metric: impl Into<String>,
        measured: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        Self {
            scenario,
            metric: metric.into(),
            measured: measured.into(),
            target: target.into(),
        }
    }
}

/// What one scenario contributes: its figures, its rows, the keys (JSON
/// pointers into its figures) that must hold numbers, and what went wrong.
pub struct Section {
    pub name: &'static str,
    pub figures: Value,
    pub rows: Vec<Row>,
    pub required: Vec<String>,
    pub problems: Vec<String>,
}

/// `value` formatted, or `n/a` when there is none.
pub fn fmt(value: Option<f64>, f: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "n/a".to_string(), f)
}

pub fn mib(kib: Option<u64>) -> String {
    fmt(kib.map(|k| k as f64), |k| {
        format!("{:.1} MiB ({:.1} MB)", k / 1024.0, k * 1024.0 / 1e6)
    })
}

pub fn markdown(sections: &[Section], header: &str) -> String {
    let mut md = format!(
        "# wirespan bench\n\n{header}\n\n| scenario | metric | measured | target |\n|---|---|---|---|\n"
    );
    for r in sections.iter().flat_map(|s| &s.rows) {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.scenario, r.metric, r.measured, r.target
        ));
    }
    let problems: Vec<&String> = sections.iter().flat_map(|s| &s.problems).collect();
    if !problems.is_empty() {
        md.push_str("\nProblems:\n\n");
        for p in problems {
            md.push_str(&format!("- {p}\n"));
        }
    }
    md
}

/// Writes report.json and report.md; returns their paths.
pub fn write(sections: &[Section], meta: Value, header: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = util::target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut scenarios = Map::new();
    for s in sections {
        scenarios.insert(s.name.to_string(), s.figures.clone());
    }
    let mut doc = Map::new();
    doc.insert("meta".into(), meta);
    doc.insert("scenarios".into(), Value::Object(scenarios));
    let (json_path, md_path) = (dir.join("report.json"), dir.join("report.md"));
    let text = serde_json::to_string_pretty(&Value::Object(doc)).context("encoding the report")?;
    fs::write(&json_path, text + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = markdown(sections, header);
    fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("\n{md}");
    note(format!(
        "wrote {} and {}",
        util::display_path(&json_path),
        util::display_path(&md_path)
    ));
    Ok((json_path, md_path))
}

/// Reads back what [`write`] wrote and checks it is well formed: the JSON
/// parses, every scenario run is there with every required key holding a
/// finite number, and the Markdown has the table with a row per scenario.
pub fn validate(sections: &[Section], json_path: &PathBuf, md_path: &PathBuf) -> Result<()> {
    let text = fs::read_to_string(json_path)
        .with_context(|| format!("reading {}", json_path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", json_path.display()))?;
    let mut missing = Vec::new();
    for s in sections {
        let Some(fig) = doc.pointer(&format!("/scenarios/{}", s.name)) else {
            missing.push(format!("/scenarios/{}", s.name));
            continue;
        };
        for key in &s.required {
            let finite = fig
                .pointer(key)
                .and_then(Value::as_f64)
                .is_some_and(f64::is_finite);
            if !finite {
                missing.push(format!("/scenarios/{}{key}", s.name));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: no finite number at {}",
            json_path.display(),
            missing.join(", ")
        );
    }
    let md =
        fs::read_to_string(md_path).with_context(|| format!("reading {}", md_path.display()))?;
    if !md.contains("| scenario | metric | measured | target |") {
        bail!("{}: no results table", md_path.display());
    }
    for s in sections {
        if !md
            .lines()
            .any(|l| l.starts_with(&format!("| {} |", s.name)))
        {
            bail!("{}: no row for {}", md_path.display(), s.name);
        }
    }
    note(format!(
        "report well formed: {} scenarios, every required figure a finite number",
        sections.len()
    ));
    Ok(())
}
