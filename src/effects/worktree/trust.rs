//! Folder trust for looper-made worktrees in the TUIs' own configs (issue 16). claude and
//! codex ask whether to trust a folder they have not seen before (claude 2.1: "Is this a
//! project you created or one you trust?"; codex 0.169: "Trust this folder?"), and a hybrid
//! pane showing that dialog cannot go on. A worktree the looper just made is such a folder
//! unless its main checkout is trusted (both TUIs apply the main checkout's trust to its
//! worktrees: recorded in tests/fixtures/clis/FINDINGS.md). With the opt-in
//! (`worktree_trust`, `--trust-worktree`) the looper records trust for exactly the worktrees
//! it creates, and removes the entry with the worktree; without it, a hybrid run whose
//! worktree would meet the dialog is refused before anything is created (see
//! `commands::worktree`).
//!
//! claude keeps trust in `$CLAUDE_CONFIG_DIR/.claude.json` (else `~/.claude.json`),
//! `projects["<dir>"].hasTrustDialogAccepted`; codex in `$CODEX_HOME/config.toml` (else
//! `~/.codex/config.toml`), `[projects."<dir>"] trust_level = "trusted"`. Edits hold an
//! `flock` on `<file>.agent-looper.lock` (parallel loopers edit the same file), replace the
//! file atomically with its permissions kept, and touch nothing but the one entry. codex's
//! file is edited as text (a table appended, the same text removed), so the user's formatting
//! and comments survive; the result is parsed before it is written.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The TUIs that ask for folder trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tui {
    Claude,
    Codex,
}

impl Tui {
    pub fn name(self) -> &'static str {
        match self {
            Tui::Claude => "claude",
            Tui::Codex => "codex",
        }
    }
}

/// Trust the looper recorded: which TUI, in which file, for which directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub tui: Tui,
    pub file: PathBuf,
    pub dir: PathBuf,
}

/// The TUI's config file, as the agent will see it (`lookup` reads the agent's environment:
/// its table's `env` first, then the looper's).
pub fn config_file(tui: Tui, lookup: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let nonempty = |k: &str| lookup(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    match tui {
        Tui::Claude => nonempty("CLAUDE_CONFIG_DIR")
            .or_else(|| nonempty("HOME"))
            .map(|d| d.join(".claude.json")),
        Tui::Codex => nonempty("CODEX_HOME")
            .or_else(|| nonempty("HOME").map(|h| h.join(".codex")))
            .map(|d| d.join("config.toml")),
    }
}

fn codex_trusted(doc: &toml::Table, dir: &Path) -> bool {
    doc.get("projects")
        .and_then(|p| p.get(dir.to_string_lossy().as_ref()))
        .and_then(|e| e.get("trust_level"))
        .and_then(toml::Value::as_str)
        == Some("trusted")
}

fn claude_trusted(doc: &Json, dir: &Path) -> bool {
    doc.get("projects")
        .and_then(|p| p.get(dir.to_string_lossy().as_ref()))
        .and_then(|e| e.get("hasTrustDialogAccepted"))
        .and_then(Json::as_bool)
        == Some(true)
}

/// Whether the TUI will start in `dir` without asking: trust recorded for it or for `home`,
/// its main checkout (claude also honours a trusted parent directory).
pub fn is_trusted(tui: Tui, file: &Path, dir: &Path, home: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    match tui {
        Tui::Claude => {
            let Ok(doc) = serde_json::from_str::<Json>(&text) else {
                return false;
            };
            claude_trusted(&doc, home) || dir.ancestors().any(|d| claude_trusted(&doc, d))
        }
        Tui::Codex => {
            let Ok(doc) = text.parse::<toml::Table>() else {
                return false;
            };
            codex_trusted(&doc, dir) || codex_trusted(&doc, home)
        }
    }
}

/// The exact text appended to codex's config for `dir`.
fn codex_block(dir: &Path) -> String {
    let key = toml::Value::String(dir.display().to_string()).to_string();
    format!(
        "\n# agent-looper: trust for its worktree (removed with the worktree)\n[projects.{key}]\ntrust_level = \"trusted\"\n"
    )
}

/// Hold the edit lock of `file` while `edit` maps its text (`None`: missing) to the new text
/// (`None`: leave the file as it is).
fn edit(
    file: &Path,
    edit: impl FnOnce(Option<String>) -> Result<Option<String>, String>,
) -> Result<(), String> {
    let dir = file
        .parent()
        .ok_or_else(|| format!("{} has no directory", file.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock_path = PathBuf::from(format!("{}.agent-looper.lock", file.display()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let old = match std::fs::read_to_string(file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let mode = std::fs::metadata(file)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o600);
    let Some(new) = edit(old)? else {
        return Ok(());
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".agent-looper.")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    tmp.write_all(new.as_bytes())
        .and_then(|()| tmp.as_file().sync_data())
        .and_then(|()| {
            std::fs::set_permissions(
                tmp.path(),
                std::os::unix::fs::PermissionsExt::from_mode(mode),
            )
        })
        .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
    tmp.persist(file)
        .map_err(|e| format!("cannot replace {}: {}", file.display(), e.error))?;
    Ok(())
}

/// Record trust for `dir` in `file`.
pub fn record(tui: Tui, file: &Path, dir: &Path) -> Result<Entry, String> {
    let key = dir.display().to_string();
    edit(file, |old| match tui {
        Tui::Claude => {
            let mut doc: Json = match old.as_deref().map(str::trim) {
                None | Some("") => Json::Object(Default::default()),
                Some(t) => serde_json::from_str(t)
                    .map_err(|e| format!("{} is not JSON ({e}); left alone", file.display()))?,
            };
            let root = doc
                .as_object_mut()
                .ok_or_else(|| format!("{} is not a JSON object; left alone", file.display()))?;
            let projects = root
                .entry("projects")
                .or_insert_with(|| Json::Object(Default::default()));
            let projects = projects.as_object_mut().ok_or_else(|| {
                format!(
                    "{}: `projects` is not an object; left alone",
                    file.display()
                )
            })?;
            let entry = projects
                .entry(key.clone())
                .or_insert_with(|| Json::Object(Default::default()));
            if let Some(e) = entry.as_object_mut() {
                e.insert("hasTrustDialogAccepted".into(), Json::Bool(true));
                e.insert("hasCompletedProjectOnboarding".into(), Json::Bool(true));
            }
            let mut text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
            text.push('\n');
            Ok(Some(text))
        }
        Tui::Codex => {
            let old = old.unwrap_or_default();
            let parsed = old
                .parse::<toml::Table>()
                .map_err(|e| format!("{} is not valid TOML ({e}); left alone", file.display()))?;
            if codex_trusted(&parsed, dir) {
                return Ok(None);
            }
            let mut new = old.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&codex_block(dir));
            new.parse::<toml::Table>().map_err(|e| {
                format!(
                    "cannot add a [projects] table to {} ({e}); add `trust_level = \"trusted\"` for {key} yourself",
                    file.display()
                )
            })?;
            Ok(Some(new))
        }
    })?;
    Ok(Entry {
        tui,
        file: file.to_path_buf(),
        dir: dir.to_path_buf(),
    })
}

/// Remove the trust recorded by [`record`] (the worktree is gone). Entries the user changed
/// since (codex text edited by hand) are left alone.
pub fn undo(entry: &Entry) -> Result<(), String> {
    let key = entry.dir.display().to_string();
    edit(&entry.file, |old| {
        let Some(old) = old else { return Ok(None) };
        match entry.tui {
            Tui::Claude => {
                let Ok(mut doc) = serde_json::from_str::<Json>(&old) else {
                    return Ok(None);
                };
                let removed = doc
                    .get_mut("projects")
                    .and_then(Json::as_object_mut)
                    .and_then(|p| p.remove(&key))
                    .is_some();
                if !removed {
                    return Ok(None);
                }
                let mut text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
                text.push('\n');
                Ok(Some(text))
            }
            Tui::Codex => {
                let block = codex_block(&entry.dir);
                Ok(old.contains(&block).then(|| old.replacen(&block, "", 1)))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_trust_is_added_and_removed_leaving_the_rest() {
        let d = tempfile::tempdir().expect("tmp");
        let file = d.path().join(".claude.json");
        std::fs::write(
            &file,
            r#"{"theme":"dark","projects":{"/elsewhere":{"hasTrustDialogAccepted":true,"x":1}}}"#,
        )
        .expect("write");
        let wt = Path::new("/repo/.agent-looper/worktrees/a");
        let home = Path::new("/repo");
        assert!(!is_trusted(Tui::Claude, &file, wt, home));
        let e = record(Tui::Claude, &file, wt).expect("record");
        assert!(is_trusted(Tui::Claude, &file, wt, home));
        undo(&e).expect("undo");
        let doc: Json = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
        assert_eq!(doc["theme"], "dark");
        assert_eq!(doc["projects"]["/elsewhere"]["x"], 1);
        assert!(doc["projects"].get(wt.to_str().unwrap_or("?")).is_none());
        // The main checkout's trust covers its worktrees.
        record(Tui::Claude, &file, home).expect("home");
        assert!(is_trusted(Tui::Claude, &file, wt, home));
    }

    #[test]
    fn codex_trust_is_appended_as_text_and_removed_exactly() {
        let d = tempfile::tempdir().expect("tmp");
        let file = d.path().join("config.toml");
        let original = "# my settings\nmodel = \"m\"   # keep this comment\n\n[projects.\"/other\"]\ntrust_level = \"trusted\"\n";
        std::fs::write(&file, original).expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let wt = Path::new("/repo/.agent-looper/worktrees/a \"b\"");
        assert!(!is_trusted(Tui::Codex, &file, wt, Path::new("/repo")));
        let e = record(Tui::Codex, &file, wt).expect("record");
        assert!(is_trusted(Tui::Codex, &file, wt, Path::new("/repo")));
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "permissions kept");
        undo(&e).expect("undo");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), original);
    }

    #[test]
    fn a_config_that_cannot_take_the_entry_is_left_alone() {
        let d = tempfile::tempdir().expect("tmp");
        let file = d.path().join("config.toml");
        let inline = "projects = { \"/x\" = { trust_level = \"trusted\" } }\n";
        std::fs::write(&file, inline).expect("write");
        let err = record(Tui::Codex, &file, Path::new("/wt")).expect_err("refused");
        assert!(err.contains("trust_level"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), inline);
    }

    #[test]
    fn config_files_follow_the_agents_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            config_file(Tui::Claude, env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.claude.json"))
        );
        assert_eq!(
            config_file(
                Tui::Claude,
                env(&[("HOME", "/h"), ("CLAUDE_CONFIG_DIR", "/c")])
            ),
            Some(PathBuf::from("/c/.claude.json"))
        );
        assert_eq!(
            config_file(Tui::Codex, env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.codex/config.toml"))
        );
        assert_eq!(
            config_file(Tui::Codex, env(&[("HOME", "/h"), ("CODEX_HOME", "/x")])),
            Some(PathBuf::from("/x/config.toml"))
        );
    }
}
