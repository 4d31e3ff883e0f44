//! What a run changed, as git shows it: the diff from a base commit to the work tree as it is
//! now (index and files, untracked files included as added), as a patch or a `--stat`
//! summary, through git2. The looper's own files are left out. Used for the reviewer's view
//! of the work (issue 15) and `looper diff` (issue 16).

use std::path::{Path, PathBuf};

use git2::{DiffFormat, DiffOptions, Oid, Repository};

/// How a diff is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffView {
    Patch,
    Stat,
}

/// A diff, bounded: at most `max_bytes` of text, with `truncated` saying when more was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffText {
    pub text: String,
    pub files: usize,
    pub insertions: usize,
    pub deletions: usize,
    pub truncated: bool,
}

/// The commit HEAD points at in the work tree containing `dir`, if any.
pub fn head_commit(dir: &Path) -> Option<String> {
    let repo = Repository::discover(dir).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    Some(head.id().to_string())
}

/// Whether a delta of a tree-to-work-tree diff changes anything. libgit2 merges the tree's
/// diff to the index with the index's diff to the files, and a file changed in the index and
/// changed back in the work tree (a dirty snapshot's base against the same dirty file) comes
/// out as "modified" with the same content on both sides.
/// The work-tree side may not be hashed (libgit2 skips that when the sizes differ from the
/// index's), so it is hashed here, for such deltas only.
pub fn is_change(d: &git2::DiffDelta<'_>, workdir: &Path) -> bool {
    if d.status() == git2::Delta::Unmodified {
        return false;
    }
    if d.status() != git2::Delta::Modified || d.old_file().id().is_zero() {
        return true;
    }
    let old = d.old_file().id();
    let new = match d.new_file().id() {
        id if !id.is_zero() => id,
        _ => match d.new_file().path() {
            Some(p) if d.new_file().mode() != git2::FileMode::Link => {
                match Oid::hash_file(git2::ObjectType::Blob, workdir.join(p)) {
                    Ok(id) => id,
                    Err(_) => return true,
                }
            }
            _ => return true,
        },
    };
    old != new
}

/// Whether `rel` (relative to the work tree) lies under one of `excluded` (absolute).
fn is_excluded(workdir: &Path, rel: &Path, excluded: &[PathBuf]) -> bool {
    let abs = workdir.join(rel);
    excluded.iter().any(|e| abs.starts_with(e))
}

/// The diff from `base` (a commit id) to the work tree containing `dir`.
pub fn since(
    dir: &Path,
    base: &str,
    excluded: &[PathBuf],
    view: DiffView,
    max_bytes: usize,
) -> Result<DiffText, String> {
    let repo = Repository::discover(dir).map_err(|e| {
        format!(
            "{} is not in a git work tree: {}",
            dir.display(),
            e.message()
        )
    })?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| "the repository is bare".to_string())?
        .to_path_buf();
    let oid =
        Oid::from_str(base).map_err(|e| format!("bad base commit {base:?}: {}", e.message()))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read base commit {base}: {}", e.message()))?;
    let mut opts = DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true)
        .ignore_submodules(false);
    let diff = repo
        .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut opts))
        .map_err(|e| format!("cannot diff the work tree: {}", e.message()))?;
    let mut out = DiffText::default();
    let mut kept_files = std::collections::HashSet::new();
    for delta in diff.deltas().filter(|d| is_change(d, &workdir)) {
        let path = delta.new_file().path().or(delta.old_file().path());
        if let Some(p) = path
            && !is_excluded(&workdir, p, excluded)
        {
            kept_files.insert(p.to_path_buf());
        }
    }
    out.files = kept_files.len();
    let mut text = Vec::new();
    let mut truncated = false;
    let mut counts = (0usize, 0usize);
    // Per file, in diff order: the stat is made from the kept files only (git2's own stat
    // scales its graph by every file, the looper's included).
    let mut per_file: Vec<(String, usize, usize)> = Vec::new();
    diff.print(DiffFormat::Patch, |delta, _hunk, line| {
        let path = delta.new_file().path().or(delta.old_file().path());
        if path.is_some_and(|p| is_excluded(&workdir, p, excluded)) {
            return true;
        }
        let name = path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if per_file.last().is_none_or(|(n, _, _)| *n != name) {
            per_file.push((name, 0, 0));
        }
        let entry = per_file.last_mut();
        match line.origin() {
            '+' => {
                counts.0 += 1;
                if let Some(e) = entry {
                    e.1 += 1;
                }
            }
            '-' => {
                counts.1 += 1;
                if let Some(e) = entry {
                    e.2 += 1;
                }
            }
            _ => {}
        }
        if view == DiffView::Patch {
            let mut piece = Vec::new();
            if matches!(line.origin(), '+' | '-' | ' ') {
                piece.push(line.origin() as u8);
            }
            piece.extend_from_slice(line.content());
            if text.len() + piece.len() > max_bytes {
                truncated = true;
            } else {
                text.extend_from_slice(&piece);
            }
        }
        true
    })
    .map_err(|e| format!("cannot print the diff: {}", e.message()))?;
    out.insertions = counts.0;
    out.deletions = counts.1;
    out.truncated = truncated;
    out.text = match view {
        DiffView::Patch => String::from_utf8_lossy(&text).into_owned(),
        DiffView::Stat => stat_text(&per_file, out.files, out.insertions, out.deletions),
    };
    Ok(out)
}

/// `git diff --stat` style: ` path | N ++--`, the graph scaled to the largest change, then
/// the summary line.
fn stat_text(
    per_file: &[(String, usize, usize)],
    files: usize,
    insertions: usize,
    deletions: usize,
) -> String {
    const GRAPH: usize = 40;
    let name_w = per_file
        .iter()
        .map(|f| f.0.chars().count())
        .max()
        .unwrap_or(0);
    let most = per_file.iter().map(|f| f.1 + f.2).max().unwrap_or(0);
    let num_w = most.to_string().len();
    let mut s = String::new();
    for (name, ins, del) in per_file {
        let total = ins + del;
        let (plus, minus) = if most <= GRAPH {
            (*ins, *del)
        } else {
            let scale = |n: usize| {
                if n == 0 {
                    0
                } else {
                    (n * GRAPH).div_ceil(most).max(1)
                }
            };
            (scale(*ins), scale(*del))
        };
        s.push_str(&format!(
            " {name:<name_w$} | {total:>num_w$} {}{}\n",
            "+".repeat(plus),
            "-".repeat(minus)
        ));
    }
    s.push_str(&format!(
        " {files} file(s) changed, {insertions} insertion(s)(+), {deletions} deletion(s)(-)\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init(dir.path()).expect("init");
        std::fs::write(dir.path().join("a.txt"), "one\ntwo\n").expect("write");
        let mut index = repo.index().expect("index");
        index.add_path(Path::new("a.txt")).expect("add");
        index.write().expect("write index");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("tree");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        let oid = repo
            .commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
            .expect("commit");
        (dir, oid.to_string())
    }

    #[test]
    fn a_diff_shows_changed_and_untracked_files_but_not_the_loopers_own() {
        let (dir, base) = repo();
        assert_eq!(head_commit(dir.path()).as_deref(), Some(base.as_str()));
        std::fs::write(dir.path().join("a.txt"), "one\nTWO\n").expect("write");
        std::fs::write(dir.path().join("new.txt"), "fresh\n").expect("write");
        let own = dir.path().join(".agent-looper");
        std::fs::create_dir_all(own.join("runs")).expect("mkdir");
        std::fs::write(own.join("runs/state.json"), "{}").expect("write");
        let d = since(
            dir.path(),
            &base,
            std::slice::from_ref(&own),
            DiffView::Patch,
            1 << 20,
        )
        .expect("diff");
        assert_eq!(d.files, 2, "{}", d.text);
        assert!(d.text.contains("-two\n+TWO\n"), "{}", d.text);
        assert!(d.text.contains("+fresh\n"), "{}", d.text);
        assert!(!d.text.contains("state.json"), "{}", d.text);
        assert_eq!((d.insertions, d.deletions), (2, 1));
        let s = since(dir.path(), &base, &[own], DiffView::Stat, 1 << 20).expect("stat");
        assert!(s.text.contains("a.txt"), "{}", s.text);
        assert!(!s.text.contains("state.json"), "{}", s.text);
        assert!(s.text.contains("2 file(s) changed"), "{}", s.text);
    }

    #[test]
    fn the_stat_graph_is_scaled_by_the_kept_files_only() {
        let (dir, base) = repo();
        std::fs::write(dir.path().join("a.txt"), "one\nTWO\nthree\n").expect("write");
        let own = dir.path().join(".agent-looper");
        std::fs::create_dir_all(&own).expect("mkdir");
        std::fs::write(own.join("big.log"), "x\n".repeat(5000)).expect("write");
        let s = since(dir.path(), &base, &[own], DiffView::Stat, 1 << 20).expect("stat");
        assert_eq!(
            s.text,
            " a.txt | 3 ++-\n 1 file(s) changed, 2 insertion(s)(+), 1 deletion(s)(-)\n"
        );
        let wide = stat_text(&[("big".into(), 400, 0), ("small".into(), 1, 1)], 2, 401, 1);
        let lines: Vec<&str> = wide.lines().collect();
        assert_eq!(lines[0], format!(" big   | 400 {}", "+".repeat(40)));
        assert_eq!(lines[1], " small |   2 +-");
    }

    #[test]
    fn a_file_changed_back_to_the_base_is_no_change() {
        let (dir, _) = repo();
        let repo = Repository::open(dir.path()).expect("open");
        // A base whose a.txt is what the work tree has, while the index has the old one.
        // Of another size than the index's, so libgit2 does not hash it.
        std::fs::write(dir.path().join("a.txt"), "one\ntwo\nthree\n").expect("write");
        let blob = repo.blob(b"one\ntwo\nthree\n").expect("blob");
        let mut tb = repo.treebuilder(None).expect("tb");
        tb.insert("a.txt", blob, 0o100644).expect("insert");
        let tree = repo.find_tree(tb.write().expect("tree")).expect("tree");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        let head = repo.head().expect("head").peel_to_commit().expect("commit");
        let base = repo
            .commit(None, &sig, &sig, "snapshot", &tree, &[&head])
            .expect("commit");
        let d = since(dir.path(), &base.to_string(), &[], DiffView::Stat, 1 << 20).expect("d");
        assert_eq!(d.files, 0, "{}", d.text);
    }

    #[test]
    fn a_long_diff_is_cut_and_says_so() {
        let (dir, base) = repo();
        std::fs::write(dir.path().join("big.txt"), "line\n".repeat(10_000)).expect("write");
        let d = since(dir.path(), &base, &[], DiffView::Patch, 4096).expect("diff");
        assert!(d.truncated);
        assert!(d.text.len() <= 4096);
        assert_eq!(d.insertions, 10_000);
    }
}
