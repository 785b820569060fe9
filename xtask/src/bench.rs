//! Benchmarks (never tests): `cargo xtask bench` runs the criterion suites, `cargo xtask
//! bench-probe` measures the probe against its peers on this machine's kernel, `cargo xtask
//! bench-vm` counts instructions in emulated kernels. Each writes its figures, with the command,
//! into BENCHMARKS.md between its own markers.

mod guest;
mod measure;
mod peers;
mod probe;

use std::path::Path;

use anyhow::bail;

use crate::run::{cmd, root};

// ---------------------------------------------------------------- criterion

pub fn criterion() -> anyhow::Result<()> {
    cmd(
        "cargo",
        &[
            "bench",
            "-p",
            "splitscope",
            "--bench",
            "agent_hot_path",
            "--",
            "--noplot",
        ],
    )?;
    let dir = root().join("target/criterion");
    let mut rows = Vec::new();
    collect_estimates(&dir, &dir, &mut rows)?;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if rows.is_empty() {
        bail!("no criterion results under {}", dir.display());
    }
    let mut text = String::from(
        "Command: `cargo xtask bench` (criterion, `operator/benches/agent_hot_path.rs`; mean of \
         criterion's samples, this machine: 2 vCPUs, nested VM).\n\n| benchmark | time per event |\n|---|---|\n",
    );
    for (name, ns) in &rows {
        text.push_str(&format!("| `{name}` | {ns:.1} ns |\n"));
    }
    write_section("bench", &text)?;
    eprintln!("{text}");
    Ok(())
}

fn collect_estimates(base: &Path, dir: &Path, rows: &mut Vec<(String, f64)>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.ends_with("new") && path.join("estimates.json").is_file() {
            let json = std::fs::read_to_string(path.join("estimates.json"))?;
            if let Some(ns) = mean_point_estimate(&json) {
                // The benchmark's own name: criterion's directory names replace ':' and '/'
                // and cut at 64 characters.
                let name = std::fs::read_to_string(path.join("benchmark.json"))
                    .ok()
                    .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
                    .and_then(|v| v["full_id"].as_str().map(str::to_owned))
                    .or_else(|| {
                        path.parent()
                            .and_then(|p| p.strip_prefix(base).ok())
                            .map(|p| p.display().to_string())
                    })
                    .unwrap_or_default();
                rows.push((name, ns));
            }
        } else if path.is_dir() && !path.ends_with("report") {
            collect_estimates(base, &path, rows)?;
        }
    }
    Ok(())
}

/// The mean's point estimate (ns) of criterion's `estimates.json`.
fn mean_point_estimate(json: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(json).ok()?["mean"]["point_estimate"].as_f64()
}

// ---------------------------------------------------------------- probe

pub fn probe() -> anyhow::Result<()> {
    probe::run()
}

// ---------------------------------------------------------------- probe, in emulated kernels

pub fn vm() -> anyhow::Result<()> {
    guest::run()
}

pub fn vm_guest() -> anyhow::Result<()> {
    guest::inside()
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in BENCHMARKS.md.
fn write_section(name: &str, body: &str) -> anyhow::Result<()> {
    let file = root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let (start, end) = (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"));
    let block = format!("{start}\n{body}{end}");
    let new = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &text[..a], &text[b + end.len()..]),
        _ => format!("{text}\n{block}\n"),
    };
    std::fs::write(&file, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_mean() {
        let json = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":57.25,"standard_error":0.1},"median":{"point_estimate":3.0}}"#;
        assert_eq!(mean_point_estimate(json), Some(57.25));
        assert_eq!(mean_point_estimate("{}"), None);
    }
}
