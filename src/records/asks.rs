//! Asks and answers (D31, issue 17): files in the run directory, level-triggered like the
//! control inbox, so they survive a supervisor restart and can be answered from any shell or
//! client. One serde type per file, written atomically:
//!
//! ```text
//! <run dir>/asks/
//!   <id>.json            AskRecord     the question (`looper ask`), or an approval the
//!                                      supervisor waits for (`kind: "approval"`)
//!   <id>.answer.json     AnswerRecord  the answer, or the decision (`looper answer`,
//!                                      `approve`, `reject`); the first one written wins
//!   <id>.delivered.json  MarkRecord    the answer went into a prompt (D29): the ask is done
//!   <id>.carried.json    MarkRecord    a later run of the same project took the ask over
//! ```
//!
//! A run that ends (or whose supervisor dies) with an ask that was never delivered leaves it
//! to the next run started under the same run root: at its start that run marks the ask
//! `carried` in the old directory (created exclusively, so only one run takes it), copies the
//! ask, and its answer if there is one, into its own `asks/` with `carried_from` naming the
//! old directory, and treats it like its own: it waits for the answer at its first loop
//! boundary and delivers the question and the answer with its next prompt. An answer written
//! to the old directory after that is forwarded: `looper answer` follows the `carried` mark.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{fsio, time};
use crate::engine::{ApprovalGate, ApprovalRequest, AskInfo, HumanInput};
use crate::error::{Error, Result};

pub const ASKS_DIR: &str = "asks";
/// The longest question: it is shown in `looper status` and goes into a prompt.
pub const MAX_QUESTION_BYTES: usize = 4 * 1024;
/// The longest answer or rejection reason: half of a prompt's feedback block (D29).
pub const MAX_ANSWER_BYTES: usize = crate::engine::feedback::MAX_BLOCK / 2;
/// The most choices an ask may offer.
pub const MAX_CHOICES: usize = 20;
/// The largest ask file read: anything bigger is not one of ours.
const MAX_FILE: u64 = 256 * 1024;

/// What an ask is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AskKind {
    /// An agent's question (`looper ask`).
    Question,
    /// An approval gate of the supervisor (`looper approve` / `reject`).
    Approval,
}

impl AskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AskKind::Question => "question",
            AskKind::Approval => "approval",
        }
    }
}

/// `<id>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AskRecord {
    pub id: String,
    pub kind: AskKind,
    pub question: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    #[serde(with = "time::required")]
    pub created_at: DateTime<Utc>,
    /// Who asked: `agent` (from inside a run), `supervisor` (an approval), or a name.
    #[serde(default)]
    pub asked_by: Option<String>,
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<ApprovalGate>,
    /// The run directory the ask was first made in, when it was carried over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<PathBuf>,
}

/// `<id>.answer.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub id: String,
    /// The answer; for an approval, `approved` or the rejection's reason.
    pub answer: String,
    /// For approvals: given or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(with = "time::required")]
    pub created_at: DateTime<Utc>,
}

/// `<id>.delivered.json` and `<id>.carried.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkRecord {
    pub id: String,
    #[serde(with = "time::required")]
    pub at: DateTime<Utc>,
    /// `carried`: the run directory that took the ask over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PathBuf>,
}

/// One ask with everything written about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    pub record: AskRecord,
    pub answer: Option<AnswerRecord>,
    pub delivered: bool,
    pub carried_to: Option<PathBuf>,
}

impl Ask {
    /// Waiting for a person: not answered and not handed to another run.
    pub fn is_open(&self) -> bool {
        self.answer.is_none() && self.carried_to.is_none()
    }
}

/// `ask-<UTC stamp>-<8 hex>`: sortable, unique enough for concurrent askers, and told apart
/// from a run's label by its prefix (`looper answer [TARGET] [ASK_ID] TEXT`).
pub fn new_ask_id(now: DateTime<Utc>) -> String {
    format!(
        "ask-{}-{:08x}",
        // No dot: a file's suffixes (`.answer.json`) are what tell the files of an ask apart.
        now.format("%Y%m%dT%H%M%S%3fZ"),
        rand::random::<u32>()
    )
}

pub fn looks_like_ask_id(s: &str) -> bool {
    s.starts_with("ask-") || s.starts_with("approval-")
}

pub fn asks_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(ASKS_DIR)
}

/// An id is a file name of its own: no separators, no hidden names.
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!("`{id}` is not an ask id")))
    }
}

/// The run's `asks/`, created owner-only if it is missing (runs of older versions).
fn ensure_dir(run_dir: &Path) -> Result<PathBuf> {
    fsio::check_run_dir(run_dir)?;
    let dir = asks_dir(run_dir);
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) => {
            if let Some(why) = fsio::unsafe_reason(&meta) {
                return Err(Error::unsafe_run_dir(&dir, why));
            }
            if !meta.is_dir() {
                return Err(Error::unsafe_run_dir(&dir, "is not a directory"));
            }
        }
        Err(_) => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| Error::io("cannot create", &dir, e))?;
        }
    }
    Ok(dir)
}

fn to_json<T: Serialize>(rec: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(rec).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Write `<id><suffix>` once: false if it already exists (the first writer wins).
fn create_once<T: Serialize>(run_dir: &Path, id: &str, suffix: &str, rec: &T) -> Result<bool> {
    check_id(id)?;
    let dir = ensure_dir(run_dir)?;
    fsio::create_atomic(&dir.join(format!("{id}{suffix}")), &to_json(rec), true)
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = fsio::read_regular(path, MAX_FILE).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Record a new ask (its id must be new).
pub fn open(run_dir: &Path, rec: &AskRecord) -> Result<()> {
    if !create_once(run_dir, &rec.id, ".json", rec)? {
        return Err(Error::Usage(format!("ask {} already exists", rec.id)));
    }
    Ok(())
}

/// The approval an engine waits for, as an ask the person finds.
pub fn open_approval(run_dir: &Path, req: &ApprovalRequest, now: DateTime<Utc>) -> Result<()> {
    open(
        run_dir,
        &AskRecord {
            id: req.id.clone(),
            kind: AskKind::Approval,
            question: req.question.clone(),
            choices: vec![],
            created_at: now,
            asked_by: Some("supervisor".into()),
            loop_number: Some(req.loop_number),
            gate: Some(req.gate),
            carried_from: None,
        },
    )
}

/// Write the answer of an ask: false if it was answered already.
pub fn write_answer(run_dir: &Path, rec: &AnswerRecord) -> Result<bool> {
    create_once(run_dir, &rec.id, ".answer.json", rec)
}

/// Mark asks whose answers went into a prompt.
pub fn mark_delivered(run_dir: &Path, ids: &[String], now: DateTime<Utc>) -> Result<()> {
    for id in ids {
        let mark = MarkRecord {
            id: id.clone(),
            at: now,
            to: None,
        };
        create_once(run_dir, id, ".delivered.json", &mark)?;
    }
    Ok(())
}

/// Every ask of a run, oldest first. Missing or unreadable files are skipped.
pub fn list(run_dir: &Path) -> Vec<Ask> {
    let dir = asks_dir(run_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut names: HashSet<String> = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Some(id) = name.strip_suffix(".json")
            && !id.contains('.')
        {
            ids.push(id.to_string());
        }
        names.insert(name);
    }
    let mut asks: Vec<Ask> = ids
        .into_iter()
        .filter_map(|id| {
            let record: AskRecord = read(&dir.join(format!("{id}.json")))?;
            if record.id != id {
                return None;
            }
            let answer = names
                .contains(&format!("{id}.answer.json"))
                .then(|| read::<AnswerRecord>(&dir.join(format!("{id}.answer.json"))))
                .flatten()
                .filter(|a| a.id == id);
            let carried_to = names
                .contains(&format!("{id}.carried.json"))
                .then(|| read::<MarkRecord>(&dir.join(format!("{id}.carried.json"))))
                .flatten()
                .map(|m| m.to.unwrap_or_default());
            Some(Ask {
                delivered: names.contains(&format!("{id}.delivered.json")),
                record,
                answer,
                carried_to,
            })
        })
        .collect();
    asks.sort_by(|a, b| {
        (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id))
    });
    asks
}

/// One ask of a run, following a `carried` mark to the run that took it over.
pub fn find(run_dir: &Path, id: &str) -> Option<(PathBuf, Ask)> {
    let mut dir = run_dir.to_path_buf();
    // A chain of carries is short; the bound only guards against a loop of marks.
    for _ in 0..16 {
        let ask = list(&dir).into_iter().find(|a| a.record.id == id)?;
        match &ask.carried_to {
            Some(to) if !to.as_os_str().is_empty() => dir = to.clone(),
            _ => return Some((dir, ask)),
        }
    }
    None
}

/// The supervisor's view of its run's asks: each new ask and each new answer once, in the
/// order they were written (level-triggered: a re-read finds what a missed wake-up did not).
pub struct AskBox {
    run_dir: PathBuf,
    opened: HashSet<String>,
    answered: HashSet<String>,
}

impl AskBox {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            opened: HashSet::new(),
            answered: HashSet::new(),
        }
    }

    pub fn poll(&mut self) -> Vec<HumanInput> {
        let mut out = Vec::new();
        for ask in list(&self.run_dir) {
            let id = ask.record.id.clone();
            if ask.delivered || ask.carried_to.is_some() {
                continue;
            }
            // Approvals are the supervisor's own: the engine knows them already.
            if ask.record.kind == AskKind::Question && self.opened.insert(id.clone()) {
                out.push(HumanInput::AskOpened(AskInfo {
                    id: id.clone(),
                    question: ask.record.question.clone(),
                    choices: ask.record.choices.clone(),
                    carried_from: ask
                        .record
                        .carried_from
                        .as_ref()
                        .map(|p| p.display().to_string()),
                }));
            }
            let Some(answer) = ask.answer else {
                continue;
            };
            if !self.answered.insert(id.clone()) {
                continue;
            }
            out.push(match ask.record.kind {
                AskKind::Question => HumanInput::AskAnswered {
                    id,
                    answer: answer.answer,
                    actor: answer.actor,
                },
                AskKind::Approval => HumanInput::Decision {
                    id,
                    approved: answer.approved.unwrap_or(false),
                    reason: (answer.approved != Some(true)).then_some(answer.answer),
                    actor: answer.actor,
                },
            });
        }
        out
    }
}

/// Take over the undelivered questions of runs under `root` that are over (stopped, or
/// stale: their supervisor is gone), as the module docs say. Returns the ids taken.
pub fn carry_over(root: &Path, run_dir: &Path, now: DateTime<Utc>) -> Vec<String> {
    let mine = run_dir
        .canonicalize()
        .unwrap_or_else(|_| run_dir.to_path_buf());
    let mut taken = Vec::new();
    for dir in super::discovery::discover(&[root.to_path_buf()], None) {
        if dir.canonicalize().is_ok_and(|d| d == mine) {
            continue;
        }
        let asks = list(&dir);
        if !asks
            .iter()
            .any(|a| a.record.kind == AskKind::Question && !a.delivered && a.carried_to.is_none())
        {
            continue;
        }
        let Ok(state) = super::state::read_state(&dir.join(super::STATE_FILE)) else {
            continue;
        };
        let over = !state.is_active()
            || crate::effects::procinfo::stale_reason(state.pid, state.pid_identity.as_deref())
                .is_some();
        if !over {
            continue;
        }
        for ask in asks {
            if ask.record.kind != AskKind::Question || ask.delivered || ask.carried_to.is_some() {
                continue;
            }
            let id = ask.record.id.clone();
            let mark = MarkRecord {
                id: id.clone(),
                at: now,
                to: Some(run_dir.to_path_buf()),
            };
            // Exclusive: a run that loses this race leaves the ask to the winner.
            if !create_once(&dir, &id, ".carried.json", &mark).unwrap_or(false) {
                continue;
            }
            let mut rec = ask.record.clone();
            rec.carried_from = Some(rec.carried_from.clone().unwrap_or_else(|| dir.clone()));
            if open(run_dir, &rec).is_err() {
                continue;
            }
            if let Some(answer) = &ask.answer {
                let _ = write_answer(run_dir, answer);
            }
            taken.push(id);
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(root: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let d = root.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        d
    }

    fn question(id: &str, q: &str) -> AskRecord {
        AskRecord {
            id: id.into(),
            kind: AskKind::Question,
            question: q.into(),
            choices: vec!["pg".into(), "mysql".into()],
            created_at: Utc::now(),
            asked_by: Some("agent".into()),
            loop_number: None,
            gate: None,
            carried_from: None,
        }
    }

    fn answer(id: &str, text: &str) -> AnswerRecord {
        AnswerRecord {
            id: id.into(),
            answer: text.into(),
            approved: None,
            actor: Some("me".into()),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn an_ask_and_its_answer_are_read_back_and_reported_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = run_dir(tmp.path(), "run");
        open(&dir, &question("ask-1", "Which database?")).expect("open");
        assert!(
            open(&dir, &question("ask-1", "again")).is_err(),
            "ids are unique"
        );
        let mut inbox = AskBox::new(&dir);
        let got = inbox.poll();
        assert!(matches!(&got[..], [HumanInput::AskOpened(a)] if a.question == "Which database?"));
        assert!(inbox.poll().is_empty(), "once");
        assert!(write_answer(&dir, &answer("ask-1", "pg")).expect("answer"));
        assert!(
            !write_answer(&dir, &answer("ask-1", "mysql")).expect("answer"),
            "the first answer wins"
        );
        let got = inbox.poll();
        assert_eq!(
            got,
            vec![HumanInput::AskAnswered {
                id: "ask-1".into(),
                answer: "pg".into(),
                actor: Some("me".into())
            }]
        );
        assert!(inbox.poll().is_empty());
        // A new reader (a restarted supervisor would be a new run, but the files say the
        // same to anyone) sees the ask and its answer.
        let mut again = AskBox::new(&dir);
        assert_eq!(again.poll().len(), 2);
        mark_delivered(&dir, &["ask-1".into()], Utc::now()).expect("mark");
        assert!(
            AskBox::new(&dir).poll().is_empty(),
            "delivered asks are done"
        );
        assert!(check_id("../x").is_err() && check_id(".x").is_err());
    }

    #[test]
    fn undelivered_questions_of_a_stopped_run_are_carried_to_the_next_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let old = run_dir(tmp.path(), "20260101T000000Z__old__aaaaaa");
        let new = run_dir(tmp.path(), "20260101T000100Z__new__bbbbbb");
        let state = crate::records::RunState {
            status: Some("stopped".into()),
            ..Default::default()
        };
        std::fs::write(
            old.join(crate::records::STATE_FILE),
            serde_json::to_vec(&state).expect("json"),
        )
        .expect("state");
        open(&old, &question("ask-a", "answered before the restart?")).expect("a");
        write_answer(&old, &answer("ask-a", "yes")).expect("answer a");
        open(&old, &question("ask-b", "still open")).expect("b");
        open(&old, &question("ask-c", "done")).expect("c");
        mark_delivered(&old, &["ask-c".into()], Utc::now()).expect("mark c");
        let taken = carry_over(tmp.path(), &new, Utc::now());
        assert_eq!(taken, ["ask-a", "ask-b"]);
        let mine = list(&new);
        assert_eq!(mine.len(), 2);
        assert_eq!(
            mine[0].answer.as_ref().map(|a| a.answer.as_str()),
            Some("yes")
        );
        assert_eq!(mine[1].record.carried_from.as_deref(), Some(old.as_path()));
        assert!(list(&old).iter().filter(|a| a.carried_to.is_some()).count() == 2);
        // Only once, and an answer written to the old run follows the mark.
        let third = run_dir(tmp.path(), "20260101T000200Z__third__cccccc");
        assert!(carry_over(tmp.path(), &third, Utc::now()).is_empty());
        let (dir, ask) = find(&old, "ask-b").expect("found");
        assert_eq!(dir, new);
        assert!(ask.is_open());
    }
}
