//! `looper ask`, `answer`, `approve`, `reject` (issue 17, D31): the asks of a run directory,
//! written through `records::asks`. Each is a library function returning what it did (the MCP
//! server calls the same ones) with a thin command that prints it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::cli::{AnswerArgs, AskArgs, DecisionArgs};
use crate::error::{Error, Result, exit_code};
use crate::records::asks::{
    self, AnswerRecord, Ask, AskKind, AskRecord, MAX_ANSWER_BYTES, MAX_CHOICES, MAX_QUESTION_BYTES,
};
use crate::records::discovery::{self, Stopped, Target, TargetQuery};
use crate::records::state::read_state;

/// The run an agent's `looper ask` belongs to: `--run-dir`, else `LOOPER_RUN_DIR`, else
/// `CODEX_LOOPER_RUN_DIR` (D4: the `LOOPER_*` twin wins).
pub fn own_run_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let dir = explicit.map(Path::to_path_buf).or_else(|| {
        ["LOOPER_RUN_DIR", "CODEX_LOOPER_RUN_DIR"]
            .iter()
            .find_map(|v| std::env::var_os(v).filter(|s| !s.is_empty()))
            .map(PathBuf::from)
    });
    let Some(dir) = dir else {
        return Err(Error::Usage(
            "looper ask is run by an agent inside a run, which sets LOOPER_RUN_DIR; it is not set here (pass --run-dir DIR)".into(),
        ));
    };
    if !dir.join(crate::records::STATE_FILE).is_file() {
        return Err(Error::Usage(format!(
            "{} is not a looper run directory (no state.json)",
            dir.display()
        )));
    }
    Ok(dir)
}

fn one_paragraph(text: &str) -> String {
    text.trim().to_string()
}

/// Record a question in `run_dir`; returns the ask as written.
pub fn ask(
    run_dir: &Path,
    question: &str,
    choices: &[String],
    asked_by: &str,
) -> Result<AskRecord> {
    let question = one_paragraph(question);
    if question.is_empty() {
        return Err(Error::Usage("the question is empty".into()));
    }
    if question.len() > MAX_QUESTION_BYTES {
        return Err(Error::Usage(format!(
            "the question is {} bytes; at most {MAX_QUESTION_BYTES}. Put the details in a file and ask about it",
            question.len()
        )));
    }
    let choices: Vec<String> = choices
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if choices.len() > MAX_CHOICES {
        return Err(Error::Usage(format!("at most {MAX_CHOICES} choices")));
    }
    let now = Utc::now();
    let rec = AskRecord {
        id: asks::new_ask_id(now),
        kind: AskKind::Question,
        question,
        choices,
        created_at: now,
        asked_by: Some(asked_by.to_string()),
        loop_number: read_state(&run_dir.join(crate::records::STATE_FILE))
            .ok()
            .and_then(|s| s.current_loop),
        gate: None,
        carried_from: None,
    };
    asks::open(run_dir, &rec)?;
    Ok(rec)
}

/// How waiting for an answer ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Awaited {
    Answered(AnswerRecord),
    /// The run is over (or its supervisor gone) and nobody answered.
    RunEnded(String),
    TimedOut,
}

/// The run has ended for good: why, if so.
fn run_over(run_dir: &Path) -> Option<String> {
    let state = read_state(&run_dir.join(crate::records::STATE_FILE)).ok()?;
    if !state.is_active() {
        return Some(format!(
            "the run {} ({})",
            state.status.as_deref().unwrap_or("ended"),
            state.stop_reason.as_deref().unwrap_or("-")
        ));
    }
    crate::effects::procinfo::stale_reason(state.pid, state.pid_identity.as_deref())
}

/// Block until ask `id` of `run_dir` is answered (file watching on the asks directory, with a
/// slow re-check of the run's liveness), the run ends, or `timeout` passes.
pub fn await_answer(run_dir: &Path, id: &str, timeout: Option<Duration>) -> Result<Awaited> {
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| Error::Usage(format!("cannot watch {}: {e}", run_dir.display())))?;
    let mut watched: Option<PathBuf> = None;
    let started = Instant::now();
    let mut last_liveness = Instant::now();
    loop {
        // Follow a carry-over: the ask lives where its answer will be written.
        let (dir, ask) = asks::find(run_dir, id)
            .ok_or_else(|| Error::Usage(format!("no ask {id} in {}", run_dir.display())))?;
        let asks_dir = asks::asks_dir(&dir);
        if watched.as_ref() != Some(&asks_dir) {
            if let Some(old) = watched.take() {
                let _ = watcher.unwatch(&old);
            }
            watcher
                .watch(&asks_dir, notify::RecursiveMode::NonRecursive)
                .map_err(|e| Error::Usage(format!("cannot watch {}: {e}", asks_dir.display())))?;
            watched = Some(asks_dir);
            // Whatever happened before the watch began is seen by the next look.
            continue;
        }
        if let Some(answer) = ask.answer {
            return Ok(Awaited::Answered(answer));
        }
        if last_liveness.elapsed() >= Duration::from_secs(1) || started.elapsed().is_zero() {
            last_liveness = Instant::now();
            if let Some(why) = run_over(&dir) {
                return Ok(Awaited::RunEnded(why));
            }
        }
        let left = match timeout {
            Some(t) => match t.checked_sub(started.elapsed()) {
                Some(l) if !l.is_zero() => l,
                _ => return Ok(Awaited::TimedOut),
            },
            None => Duration::from_secs(1),
        };
        let _ = rx.recv_timeout(left.min(Duration::from_secs(1)));
        while rx.try_recv().is_ok() {}
    }
}

pub fn ask_command(a: &AskArgs) -> Result<i32> {
    let dir = own_run_dir(a.run_dir.as_deref())?;
    let rec = ask(&dir, &a.question, &a.choices, "agent")?;
    if !a.wait {
        crate::say!("{}", rec.id);
        crate::say_err!(
            "asked; the run waits at its next loop boundary for `looper answer {} TEXT`",
            rec.id
        );
        return Ok(exit_code::OK);
    }
    crate::say_err!(
        "asked {}; waiting for `looper answer {} TEXT`",
        rec.id,
        rec.id
    );
    match await_answer(&dir, &rec.id, a.timeout)? {
        Awaited::Answered(answer) => {
            crate::say!("{}", answer.answer);
            Ok(exit_code::OK)
        }
        Awaited::RunEnded(why) => {
            crate::say_err!("no answer: {why}");
            Ok(exit_code::AGENT_FAILED)
        }
        Awaited::TimedOut => {
            crate::say_err!(
                "no answer within the timeout; the ask stays open: the run waits for it at its next loop boundary"
            );
            Ok(exit_code::TIMEOUT)
        }
    }
}

/// The runs a person is asked to act on: named ones as operator commands find them; with no
/// name, the newest active run with an open ask of `kind`.
pub fn resolve_for(query: &TargetQuery, kind: AskKind) -> Result<Target> {
    if query.target.is_some() || query.run_dir.is_some() {
        return discovery::resolve(query, Stopped::Exclude);
    }
    let env = discovery::process_env();
    let roots = discovery::state_roots(&query.state_root, &env);
    let waiting: Vec<discovery::Candidate> = discovery::scan(&roots)
        .into_iter()
        .filter(|c| query.include_stopped || c.state.is_active())
        .filter(|c| {
            asks::list(&c.dir)
                .iter()
                .any(|a| a.is_open() && a.record.kind == kind)
        })
        .collect();
    if waiting.is_empty() {
        let what = match kind {
            AskKind::Question => "a question",
            AskKind::Approval => "an approval",
        };
        return Err(Error::Usage(format!(
            "no run under {} waits for {what}; name one (TARGET or --run-dir)",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    discovery::select(waiting, None, true, Stopped::Exclude, &roots)
}

/// The open ask of `kind` an answer is for: `id`, else the oldest.
fn open_ask(dir: &Path, id: Option<&str>, kind: AskKind) -> Result<(PathBuf, Ask)> {
    if let Some(id) = id {
        let (dir, ask) = asks::find(dir, id)
            .ok_or_else(|| Error::Usage(format!("no ask {id} in {}", dir.display())))?;
        if ask.record.kind != kind {
            return Err(Error::Usage(match kind {
                AskKind::Question => format!("{id} is an approval: use looper approve or reject"),
                AskKind::Approval => format!("{id} is a question: use looper answer"),
            }));
        }
        return Ok((dir, ask));
    }
    asks::list(dir)
        .into_iter()
        .find(|a| a.is_open() && a.record.kind == kind)
        .map(|a| (dir.to_path_buf(), a))
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} has no open {}",
                dir.display(),
                match kind {
                    AskKind::Question => "question",
                    AskKind::Approval => "approval",
                }
            ))
        })
}

/// The answer as recorded: a choice's text for a choice (given by text, any case, or by its
/// number), otherwise the text itself.
pub fn pick_answer(ask: &AskRecord, text: &str) -> Result<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::Usage("the answer is empty".into()));
    }
    if text.len() > MAX_ANSWER_BYTES {
        return Err(Error::Usage(format!(
            "the answer is {} bytes; at most {MAX_ANSWER_BYTES} go into a prompt",
            text.len()
        )));
    }
    if ask.choices.is_empty() {
        return Ok(text.to_string());
    }
    if let Some(c) = ask.choices.iter().find(|c| c.eq_ignore_ascii_case(text)) {
        return Ok(c.clone());
    }
    if let Some(c) = text
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| ask.choices.get(i))
    {
        return Ok(c.clone());
    }
    Err(Error::Usage(format!(
        "{} offers the choices {}; answer with one of them (or its number)",
        ask.id,
        ask.choices
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}. {c}", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// What answering did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Answered {
    pub run_dir: PathBuf,
    pub id: String,
    pub question: String,
    pub answer: String,
}

/// Answer ask `id` (or the oldest open question) of the run `query` names.
pub fn answer(query: &TargetQuery, id: Option<&str>, text: &str, actor: &str) -> Result<Answered> {
    let t = match (id, &query.target, &query.run_dir) {
        // An ask id alone: the run that has it.
        (Some(id), None, None) => find_run_with(query, id)?,
        _ => resolve_for(query, AskKind::Question)?,
    };
    let (dir, ask) = open_ask(&t.dir, id, AskKind::Question)?;
    if ask.answer.is_some() {
        return Err(Error::Usage(format!(
            "{} is answered already",
            ask.record.id
        )));
    }
    let answer = pick_answer(&ask.record, text)?;
    let rec = AnswerRecord {
        id: ask.record.id.clone(),
        answer: answer.clone(),
        approved: None,
        actor: Some(actor.trim().to_string()),
        created_at: Utc::now(),
    };
    if !asks::write_answer(&dir, &rec)? {
        return Err(Error::Usage(format!(
            "{} is answered already",
            ask.record.id
        )));
    }
    Ok(Answered {
        run_dir: dir,
        id: ask.record.id,
        question: ask.record.question,
        answer,
    })
}

/// The run under the roots that holds ask `id`.
fn find_run_with(query: &TargetQuery, id: &str) -> Result<Target> {
    let env = discovery::process_env();
    let roots = discovery::state_roots(&query.state_root, &env);
    let mut found: Vec<discovery::Candidate> = discovery::scan(&roots)
        .into_iter()
        .filter(|c| asks::list(&c.dir).iter().any(|a| a.record.id == id))
        .collect();
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    let c = found
        .pop()
        .ok_or_else(|| Error::Usage(format!("no run under the state roots has an ask {id}")))?;
    Ok(Target {
        name: c.display_name(),
        dir: c.dir,
        state: Some(c.state),
    })
}

pub fn answer_command(a: &AnswerArgs) -> Result<i32> {
    let (target, id, text) = match a.words.as_slice() {
        [text] => (None, None, text),
        [first, text] if asks::looks_like_ask_id(first) => (None, Some(first.as_str()), text),
        [first, text] => (Some(first.clone()), None, text),
        [target, id, text] => (Some(target.clone()), Some(id.as_str()), text),
        _ => return Err(Error::Usage("looper answer [TARGET] [ASK_ID] TEXT".into())),
    };
    let query = TargetQuery {
        target,
        run_dir: a.run_dir.clone(),
        state_root: a.state_root.clone(),
        include_stopped: a.include_stopped,
    };
    let done = answer(&query, id, text, &a.actor)?;
    crate::say!(
        "answered {} at {}: {}",
        done.id,
        done.run_dir.display(),
        done.answer
    );
    Ok(exit_code::OK)
}

/// What a decision did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Decided {
    pub run_dir: PathBuf,
    pub id: String,
    pub question: String,
    pub approved: bool,
}

/// Approve or reject the approval the run `query` names waits for.
pub fn decide(
    query: &TargetQuery,
    approved: bool,
    reason: Option<&str>,
    actor: &str,
) -> Result<Decided> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if !approved && reason.is_none() {
        return Err(Error::Usage(
            "looper reject needs --reason TEXT: it goes into the run's next prompt".into(),
        ));
    }
    if reason.is_some_and(|r| r.len() > MAX_ANSWER_BYTES) {
        return Err(Error::Usage(format!(
            "the reason is longer than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    let t = resolve_for(query, AskKind::Approval)?;
    let (dir, ask) = open_ask(&t.dir, None, AskKind::Approval).map_err(|_| {
        Error::Usage(format!(
            "{} is not waiting for an approval ({})",
            t.name,
            t.dir.display()
        ))
    })?;
    let rec = AnswerRecord {
        id: ask.record.id.clone(),
        answer: if approved {
            reason.unwrap_or("approved").to_string()
        } else {
            reason.unwrap_or_default().to_string()
        },
        approved: Some(approved),
        actor: Some(actor.trim().to_string()),
        created_at: Utc::now(),
    };
    if !asks::write_answer(&dir, &rec)? {
        return Err(Error::Usage(format!(
            "{} is decided already",
            ask.record.id
        )));
    }
    Ok(Decided {
        run_dir: dir,
        id: ask.record.id,
        question: ask.record.question,
        approved,
    })
}

pub fn decide_command(a: &DecisionArgs, approved: bool) -> Result<i32> {
    let done = decide(&a.target.query(), approved, a.reason.as_deref(), &a.actor)?;
    crate::say!(
        "{} {} at {}",
        if approved { "approved" } else { "rejected" },
        done.id,
        done.run_dir.display()
    );
    Ok(exit_code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_to_choices_are_a_choice_by_text_or_number() {
        let ask = AskRecord {
            id: "ask-1".into(),
            kind: AskKind::Question,
            question: "db?".into(),
            choices: vec!["Postgres".into(), "SQLite".into()],
            created_at: Utc::now(),
            asked_by: None,
            loop_number: None,
            gate: None,
            carried_from: None,
        };
        assert_eq!(pick_answer(&ask, "sqlite").expect("text"), "SQLite");
        assert_eq!(pick_answer(&ask, " 1 ").expect("number"), "Postgres");
        let e = pick_answer(&ask, "mysql").expect_err("not a choice");
        assert!(e.to_string().contains("1. Postgres, 2. SQLite"), "{e}");
        assert!(pick_answer(&ask, "  ").is_err());
        let free = AskRecord {
            choices: vec![],
            ..ask
        };
        assert_eq!(pick_answer(&free, "anything").expect("free"), "anything");
    }
}
