//! Preset lookup: a path, a named file in the user's preset folders, or a preset built
//! into the binary (so `--preset rai` works from any directory after `cargo install`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Presets compiled into the binary, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("rai", include_str!("../../examples/presets/rai.toml")),
    (
        "verified",
        include_str!("../../examples/presets/verified.toml"),
    ),
];

pub struct FoundPreset {
    pub text: String,
    /// How the preset is named in origins: its path, or `rai (built-in)`.
    pub display: String,
}

/// The folders searched for a named preset, in order.
pub fn search_dirs(env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let config_home = env
        .get("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".config")));
    match config_home {
        Some(dir) => vec![
            dir.join("agent-looper").join("presets"),
            dir.join("codexfarm").join("presets"),
        ],
        None => vec![],
    }
}

pub fn resolve(spec: &str, base_dir: &Path, env: &BTreeMap<String, String>) -> Result<FoundPreset> {
    if spec.trim().is_empty() {
        return Err(Error::Usage("--preset: must not be empty".into()));
    }
    let expanded = match (spec.strip_prefix("~/"), env.get("HOME")) {
        (Some(rest), Some(home)) => Path::new(home).join(rest),
        _ => PathBuf::from(spec),
    };
    let direct = base_dir.join(&expanded);
    if direct.is_file() {
        let text = super::layers::read_text(&direct, "the preset")?;
        return Ok(FoundPreset {
            text,
            display: spec.to_string(),
        });
    }
    let looks_like_path =
        expanded.is_absolute() || spec.contains('/') || expanded.extension().is_some();
    if looks_like_path {
        return Err(Error::Usage(format!(
            "preset not found: {}",
            direct.display()
        )));
    }
    let dirs = search_dirs(env);
    for dir in &dirs {
        let candidate = dir.join(format!("{spec}.toml"));
        if candidate.is_file() {
            let text = super::layers::read_text(&candidate, "the preset")?;
            return Ok(FoundPreset {
                text,
                display: candidate.display().to_string(),
            });
        }
    }
    if let Some((_, text)) = BUILTIN.iter().find(|(name, _)| *name == spec) {
        return Ok(FoundPreset {
            text: text.to_string(),
            display: format!("{spec} (built-in)"),
        });
    }
    let mut searched: Vec<String> = dirs
        .iter()
        .map(|d| d.join(format!("{spec}.toml")).display().to_string())
        .collect();
    searched.push(format!(
        "built-in presets ({})",
        BUILTIN
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Err(Error::Usage(format!(
        "preset `{spec}` not found; searched: {}",
        searched.join(", ")
    )))
}
