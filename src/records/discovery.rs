//! Finding runs (D23): the state roots from flags and the environment (D4), the run
//! directories under them, the machine-wide registry of every run (`status --all`), and which
//! run an operator command means (a label / run id / run-dir name, `--run-dir`, the newest
//! active run).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::{RunState, read_state};
use super::{STATE_FILE, fsio, time};
use crate::error::{Error, Result};

/// The project's own runs, relative to the current directory.
pub const DEFAULT_STATE_ROOT: &str = ".agent-looper/runs";

/// State roots: the flags if any, else `LOOPER_STATE_ROOT`, else `CODEX_LOOPER_STATE_ROOT`
/// (a `LOOPER_*` variable wins over its `CODEX_*` twin, D4), each a colon-separated list,
/// else `.agent-looper/runs`.
pub fn state_roots(explicit: &[PathBuf], env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    if !explicit.is_empty() {
        return explicit.to_vec();
    }
    for var in ["LOOPER_STATE_ROOT", "CODEX_LOOPER_STATE_ROOT"] {
        if let Some(v) = env.get(var) {
            let roots: Vec<PathBuf> = v
                .split(':')
                .filter(|s| !s.trim().is_empty())
                .map(PathBuf::from)
                .collect();
            if !roots.is_empty() {
                return roots;
            }
        }
    }
    vec![project_root(&std::env::current_dir().unwrap_or_default())]
}

/// The project's run root seen from `cwd`: the nearest `.agent-looper/runs` in `cwd` or a
/// parent up to the top of its git work tree (so `looper status` works from a subdirectory
/// of the repository, and never picks up another project's runs above it), else
/// `.agent-looper/runs` as given.
pub fn project_root(cwd: &Path) -> PathBuf {
    // Compared as the OS resolves them: git reports its work tree without symlinks.
    let cwd = &cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
    let top = git2::Repository::discover(cwd)
        .ok()
        .and_then(|r| r.workdir().map(Path::to_path_buf));
    let top = top.as_deref().unwrap_or(cwd);
    match cwd
        .ancestors()
        .take_while(|a| a.starts_with(top))
        .map(|a| a.join(DEFAULT_STATE_ROOT))
        .find(|r| r.is_dir())
    {
        // From the project's top, paths keep reading as they always did (relative).
        Some(root) if root == cwd.join(DEFAULT_STATE_ROOT) => PathBuf::from(DEFAULT_STATE_ROOT),
        Some(root) => root,
        None => PathBuf::from(DEFAULT_STATE_ROOT),
    }
}

pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Run directories under the roots (children holding a `state.json` or not; a child that is
/// not a directory is skipped), plus registry entries with `registry`, without duplicates.
pub fn discover(roots: &[PathBuf], registry: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            // Hidden entries are not runs: a run directory being created is staged as
            // `.<run id>.new` until it holds a state (`RunStore::create`).
            if e.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            // d_type avoids a stat per entry on most filesystems.
            let is_dir = e
                .file_type()
                .map(|t| t.is_dir() || (t.is_symlink() && e.path().is_dir()))
                .unwrap_or(false);
            if is_dir {
                dirs.push(e.path());
            }
        }
    }
    if let Some(reg) = registry {
        // Compare canonical paths so a run found under a root is not listed twice.
        let mut seen: HashSet<PathBuf> = HashSet::new();
        for root in roots {
            if let Ok(c) = root.canonicalize() {
                for d in &dirs {
                    if let Some(name) = d.file_name() {
                        seen.insert(c.join(name));
                    }
                }
            }
        }
        for entry in read_registry(reg) {
            let Ok(c) = entry.run_dir.canonicalize() else {
                continue; // deleted since it was registered
            };
            if c.is_dir() && seen.insert(c.clone()) {
                dirs.push(c);
            }
        }
    }
    dirs
}

/// One line of the machine-wide registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub run_dir: PathBuf,
    #[serde(default, with = "time::opt")]
    pub created_at: Option<DateTime<Utc>>,
}

/// The machine-wide accounts directory (beside the run registry), or `None` without a state
/// directory (no `XDG_STATE_HOME` and no `HOME`).
pub fn accounts_dir(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    let registry = registry_path(env)?;
    Some(registry.parent()?.join("accounts"))
}

/// The machine-wide registry of run directories for `looper status --all` (D23).
pub fn registry_path(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    // The XDG spec: a relative path in these variables is invalid and must be ignored (one
    // made a directory inside the project).
    let base = env
        .get("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            env.get("HOME")
                .map(|h| Path::new(h).join(".local").join("state"))
        })?;
    Some(base.join("agent-looper").join("runs.jsonl"))
}

pub fn register_run(registry: &Path, run_dir: &Path, at: DateTime<Utc>) -> Result<()> {
    if let Some(parent) = registry.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
    }
    let entry = RegistryEntry {
        run_dir: run_dir.to_path_buf(),
        created_at: Some(at),
    };
    fsio::append_line(registry, &serde_json::to_string(&entry).unwrap_or_default())
}

/// Every readable entry of the registry.
pub fn read_registry(registry: &Path) -> Vec<RegistryEntry> {
    fsio::read_jsonl(registry)
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// A run found under a state root.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub dir: PathBuf,
    pub state: RunState,
}

impl Candidate {
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    /// What to call the run in messages: its label, else its run id, else the dir name.
    pub fn display_name(&self) -> String {
        self.state
            .label
            .clone()
            .filter(|l| !l.is_empty())
            .or_else(|| self.state.run_id.clone().filter(|r| !r.is_empty()))
            .unwrap_or_else(|| self.name())
    }

    fn matches(&self, token: &str) -> bool {
        self.state.label.as_deref() == Some(token)
            || self.state.run_id.as_deref() == Some(token)
            || self.name() == token
    }

    /// Sort key for "newest": updated_at (else started_at) as a time, then the dir name.
    fn recency(&self) -> (Option<DateTime<Utc>>, String) {
        (self.state.updated_at.or(self.state.started_at), self.name())
    }

    fn summary(&self) -> String {
        format!(
            "  {} [{}] {}",
            self.display_name(),
            self.state.status.as_deref().unwrap_or("unknown"),
            self.dir.display()
        )
    }
}

/// Every readable `*/state.json` under the roots (unreadable ones are skipped here; `looper
/// status` shows them).
pub fn scan(roots: &[PathBuf]) -> Vec<Candidate> {
    discover(roots, None)
        .into_iter()
        .filter_map(|dir| {
            let state = read_state(&dir.join(STATE_FILE)).ok()?;
            Some(Candidate { dir, state })
        })
        .collect()
}

/// The selected run. `state` is `None` only for a `--run-dir` without a readable state.
#[derive(Clone, Debug)]
pub struct Target {
    pub dir: PathBuf,
    pub state: Option<RunState>,
    pub name: String,
}

impl Target {
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Re-read the state (for `--wait`, `--force`, `logs -f`).
    pub fn reload(&self) -> Option<RunState> {
        read_state(&self.state_path()).ok()
    }
}

/// How to treat runs that are no longer active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Only active runs, unless `--include-stopped`.
    Exclude,
    /// Prefer active runs, else the newest of any (`looper logs`).
    Fallback,
}

/// Which run an operator command names (its `TARGET`, `--run-dir`, `--state-root`,
/// `--include-stopped`).
#[derive(Clone, Debug, Default)]
pub struct TargetQuery {
    pub target: Option<String>,
    pub run_dir: Option<PathBuf>,
    pub state_root: Vec<PathBuf>,
    pub include_stopped: bool,
}

pub fn resolve(args: &TargetQuery, stopped: Stopped) -> Result<Target> {
    resolve_with(args, stopped, &process_env())
}

pub fn resolve_with(
    args: &TargetQuery,
    stopped: Stopped,
    env: &BTreeMap<String, String>,
) -> Result<Target> {
    if let Some(dir) = &args.run_dir {
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| Error::Usage(format!("no run directory at {}: {e}", dir.display())))?;
        if !meta.is_dir() {
            return Err(Error::Usage(format!(
                "{} is not a run directory",
                dir.display()
            )));
        }
        let state = read_state(&dir.join(STATE_FILE)).ok();
        let c = Candidate {
            dir: dir.clone(),
            state: state.clone().unwrap_or_default(),
        };
        return Ok(Target {
            dir: dir.clone(),
            name: c.display_name(),
            state,
        });
    }
    let roots = state_roots(&args.state_root, env);
    let all = scan(&roots);
    let local = select(
        all,
        args.target.as_deref(),
        args.include_stopped,
        stopped,
        &roots,
    );
    // A label or run id not found here may be a run of another project on this machine:
    // look it up in the registry (`status --all` lists it), unless roots were given.
    match (local, args.target.as_deref(), registry_path(env)) {
        (Err(e), Some(token), Some(reg)) if args.state_root.is_empty() => {
            elsewhere(token, &reg, args.include_stopped, stopped).unwrap_or(Err(e))
        }
        (local, _, _) => local,
    }
}

/// `token` among the registry's runs: `None` when none matches there either. Matches in
/// several projects are listed, not guessed between.
fn elsewhere(
    token: &str,
    registry: &Path,
    include_stopped: bool,
    stopped: Stopped,
) -> Option<Result<Target>> {
    let dirs = discover(&[], Some(registry));
    let found: Vec<Candidate> = dirs
        .into_iter()
        .filter_map(|dir| {
            let state = read_state(&dir.join(STATE_FILE)).ok()?;
            Some(Candidate { dir, state })
        })
        .filter(|c| c.matches(token))
        .collect();
    if found.is_empty() {
        return None;
    }
    let mut roots: Vec<PathBuf> = found
        .iter()
        .filter_map(|c| c.dir.parent().map(Path::to_path_buf))
        .collect();
    roots.sort();
    roots.dedup();
    if roots.len() > 1 {
        let mut msg = format!(
            "`{token}` matches runs of {} projects on this machine; pass --run-dir or --state-root:",
            roots.len()
        );
        for c in &found {
            msg.push('\n');
            msg.push_str(&c.summary());
        }
        return Some(Err(Error::Usage(msg)));
    }
    Some(select(found, Some(token), include_stopped, stopped, &roots))
}

/// Pick a run among `all` (pure apart from the error text, so it is unit-tested).
pub fn select(
    all: Vec<Candidate>,
    token: Option<&str>,
    include_stopped: bool,
    stopped: Stopped,
    roots: &[PathBuf],
) -> Result<Target> {
    let roots_text = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let named: Vec<Candidate> = match token {
        Some(t) => all.iter().filter(|c| c.matches(t)).cloned().collect(),
        None => all.clone(),
    };
    let active: Vec<Candidate> = named
        .iter()
        .filter(|c| c.state.is_active())
        .cloned()
        .collect();
    let pool = if include_stopped || (stopped == Stopped::Fallback && active.is_empty()) {
        named.clone()
    } else {
        active
    };
    if pool.is_empty() {
        let what = token.map_or_else(
            || "no active looper run".to_string(),
            |t| {
                format!(
                    "no {}looper run matches `{t}`",
                    if include_stopped { "" } else { "active " }
                )
            },
        );
        let mut msg = format!("{what} under {roots_text}");
        let listed: Vec<&Candidate> = if named.is_empty() {
            all.iter().collect()
        } else {
            named.iter().collect()
        };
        if listed.is_empty() {
            msg.push_str(" (no runs found there; pass --state-root or --run-dir)");
        } else {
            msg.push_str("; runs found:");
            let mut listed = listed;
            listed.sort_by_key(|c| std::cmp::Reverse(c.recency()));
            for c in listed.iter().take(20) {
                msg.push('\n');
                msg.push_str(&c.summary());
            }
            if !include_stopped && stopped == Stopped::Exclude {
                msg.push_str("\n(pass --include-stopped to select a run that has stopped)");
            }
        }
        return Err(Error::Usage(msg));
    }
    // A token that names runs with different labels (a label here, a run id there) is
    // ambiguous: refuse rather than guess which one the operator meant.
    if let Some(t) = token {
        let mut labels: Vec<String> = pool.iter().map(Candidate::display_name).collect();
        labels.sort();
        labels.dedup();
        if labels.len() > 1 {
            let mut msg = format!("`{t}` matches runs with different labels; pass --run-dir:");
            for c in &pool {
                msg.push('\n');
                msg.push_str(&c.summary());
            }
            return Err(Error::Usage(msg));
        }
    }
    let Some(best) = pool.into_iter().max_by_key(Candidate::recency) else {
        return Err(Error::Usage(format!(
            "no looper run found under {roots_text}"
        )));
    };
    Ok(Target {
        name: best.display_name(),
        dir: best.dir,
        state: Some(best.state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, label: &str, status: &str, updated: &str) -> Candidate {
        Candidate {
            dir: PathBuf::from(format!("/runs/{name}")),
            state: RunState {
                label: Some(label.into()),
                run_id: Some(name.into()),
                status: Some(status.into()),
                updated_at: time::parse(updated),
                ..RunState::default()
            },
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn roots_come_from_flags_then_looper_then_codex_variables() {
        let e = env(&[
            ("LOOPER_STATE_ROOT", "/a:/b"),
            ("CODEX_LOOPER_STATE_ROOT", "/c"),
        ]);
        assert_eq!(
            state_roots(&[], &e),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(
            state_roots(&[PathBuf::from("/x")], &e),
            [PathBuf::from("/x")]
        );
        let e = env(&[("CODEX_LOOPER_STATE_ROOT", "/c::/d")]);
        assert_eq!(
            state_roots(&[], &e),
            [PathBuf::from("/c"), PathBuf::from("/d")]
        );
        assert_eq!(
            state_roots(&[], &env(&[])),
            [project_root(&std::env::current_dir().expect("cwd"))]
        );
    }

    #[test]
    fn the_project_root_is_found_from_a_subdirectory() {
        let dir = tempfile::tempdir().expect("tempdir");
        git2::Repository::init(dir.path()).expect("git init");
        let deep = dir.path().join("src/a/b");
        std::fs::create_dir_all(&deep).expect("mkdir");
        assert_eq!(project_root(&deep), PathBuf::from(DEFAULT_STATE_ROOT));
        std::fs::create_dir_all(dir.path().join(DEFAULT_STATE_ROOT)).expect("mkdir");
        let root = dir
            .path()
            .canonicalize()
            .expect("canonical")
            .join(DEFAULT_STATE_ROOT);
        assert_eq!(project_root(&deep), root);
        // From the top itself the root reads relative, as it always did.
        let top = dir.path().canonicalize().expect("canonical");
        assert_eq!(project_root(&top), PathBuf::from(DEFAULT_STATE_ROOT));
    }

    #[test]
    fn the_newest_matching_active_run_wins() {
        let all = vec![
            cand("r1", "a", "running", "2026-01-01T00:00:05Z"),
            cand("r2", "a", "running", "2026-01-01T00:00:05.500Z"),
            cand("r3", "a", "stopped", "2026-01-01T00:00:09Z"),
            cand("r4", "b", "paused", "2026-01-01T00:00:01Z"),
        ];
        let t = select(all.clone(), Some("a"), false, Stopped::Exclude, &[]).expect("a");
        assert_eq!(t.dir, PathBuf::from("/runs/r2"));
        let t = select(all.clone(), Some("a"), true, Stopped::Exclude, &[]).expect("a stopped");
        assert_eq!(t.dir, PathBuf::from("/runs/r3"));
        let t = select(all.clone(), None, false, Stopped::Exclude, &[]).expect("any");
        assert_eq!(t.dir, PathBuf::from("/runs/r2"));
        let t = select(all.clone(), Some("r4"), false, Stopped::Exclude, &[]).expect("by id");
        assert_eq!(t.name, "b");
    }

    #[test]
    fn no_match_and_ambiguity_list_the_candidates() {
        let all = vec![
            cand("r1", "a", "stopped", "2026-01-01T00:00:05Z"),
            cand("r2", "r1", "running", "2026-01-01T00:00:06Z"),
            cand("r3", "r1", "running", "2026-01-01T00:00:07Z"),
        ];
        let e = select(
            all.clone(),
            Some("a"),
            false,
            Stopped::Exclude,
            &[PathBuf::from("/runs")],
        )
        .expect_err("stopped only");
        let msg = e.to_string();
        assert!(
            msg.contains("no active looper run matches `a` under /runs"),
            "{msg}"
        );
        assert!(msg.contains("a [stopped] /runs/r1"), "{msg}");
        assert!(msg.contains("--include-stopped"), "{msg}");
        assert_eq!(e.exit_code(), 2);
        let e =
            select(all.clone(), Some("r1"), true, Stopped::Exclude, &[]).expect_err("ambiguous");
        assert!(
            e.to_string().contains("matches runs with different labels"),
            "{e}"
        );
        let t = select(all, Some("a"), false, Stopped::Fallback, &[]).expect("fallback");
        assert_eq!(t.dir, PathBuf::from("/runs/r1"));
    }
}
