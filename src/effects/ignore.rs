//! Keeping the looper's own files out of the user's commits (issue 14.3): an agent's
//! `git add -A` must not commit transcripts, prompts and worktrees. The run root is added to
//! the repository's `info/exclude` (local to the clone, shared by its worktrees), never to
//! the user's `.gitignore`, and only when git does not ignore it already.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// What the exclude file learned, for the one line the run says about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Excluded {
    pub pattern: String,
    pub file: PathBuf,
}

/// The `info/exclude` pattern for the state root `log_dir` of a repository whose work tree
/// is `top`: the looper's top directory (`.agent-looper/`, which also holds the worktrees) for
/// the default layout, else the root itself; `None` outside the work tree.
pub fn pattern_for(top: &Path, log_dir: &Path) -> Option<String> {
    let rel = log_dir.strip_prefix(top).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().map(str::to_string),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let first = parts.first()?;
    // A pattern is one line of gitignore syntax: a name that would need escaping is left alone
    // rather than written wrong.
    let plain = |s: &str| {
        !s.is_empty()
            && !s
                .chars()
                .any(|c| c.is_control() || matches!(c, '*' | '?' | '[' | '\\' | '!' | '#'))
    };
    if !parts.iter().all(|p| plain(p)) {
        return None;
    }
    if first == ".agent-looper" {
        return Some("/.agent-looper/".into());
    }
    Some(format!("/{}/", parts.join("/")))
}

/// Add the run root `log_dir` to the `info/exclude` of the repository holding it, unless git
/// ignores it already. `Ok(None)`: nothing to do (no repository, outside its work tree,
/// ignored already). Idempotent: a pattern already in the file is not written twice.
pub fn exclude_run_root(log_dir: &Path) -> Result<Option<Excluded>, String> {
    let Ok(repo) = git2::Repository::discover(log_dir) else {
        return Ok(None);
    };
    let Some(top) = repo.workdir() else {
        return Ok(None);
    };
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let (top, root) = (canon(top), canon(log_dir));
    let Some(pattern) = pattern_for(&top, &root) else {
        return Ok(None);
    };
    let rel = pattern.trim_matches('/');
    if repo.is_path_ignored(rel).unwrap_or(false) {
        return Ok(None);
    }
    let file = repo.commondir().join("info").join("exclude");
    let current = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    if current.lines().any(|l| l.trim() == pattern) {
        return Ok(None);
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut text = String::new();
    if !current.is_empty() && !current.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# agent-looper: its run records and worktrees (added by looper)\n");
    text.push_str(&pattern);
    text.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(Some(Excluded { pattern, file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_the_looper_directory_or_the_root_itself() {
        let top = Path::new("/repo");
        let p = |s: &str| pattern_for(top, Path::new(s));
        assert_eq!(
            p("/repo/.agent-looper/runs").as_deref(),
            Some("/.agent-looper/")
        );
        assert_eq!(p("/repo/logs/looper").as_deref(), Some("/logs/looper/"));
        assert_eq!(p("/elsewhere/runs"), None);
        assert_eq!(p("/repo"), None);
        assert_eq!(p("/repo/we*ird/runs"), None);
        assert_eq!(p("/repo/#runs"), None);
    }

    #[test]
    fn the_exclude_is_written_once_and_never_over_an_ignore() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let root = dir.path().join(".agent-looper/runs");
        std::fs::create_dir_all(&root).expect("mkdir");
        let added = exclude_run_root(&root).expect("exclude").expect("added");
        assert_eq!(added.pattern, "/.agent-looper/");
        assert_eq!(exclude_run_root(&root).expect("again"), None);
        let text = std::fs::read_to_string(repo.path().join("info/exclude")).expect("read");
        assert_eq!(text.matches("/.agent-looper/").count(), 1, "{text}");

        let other = tempfile::tempdir().expect("tempdir");
        git2::Repository::init(other.path()).expect("init");
        std::fs::write(other.path().join(".gitignore"), ".agent-looper/\n").expect("ignore");
        let root = other.path().join(".agent-looper/runs");
        std::fs::create_dir_all(&root).expect("mkdir");
        assert_eq!(exclude_run_root(&root).expect("ignored"), None);
    }
}
