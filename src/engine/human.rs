//! What the engine knows of the people in the loop (issue 17, D28, D31): the policy (does an
//! ask hold the run at the next loop boundary, which approval gates are on), the asks and
//! decisions that reach it as inputs, and the approval it asks for. Plain data; the decisions
//! are in `machine::human`.

use serde::{Deserialize, Serialize};

/// Which approval gate holds the run (`[human].require_approval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, Hash)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ApprovalGate {
    /// Before the run may stop as complete: the last gate of D28.
    Completion,
    /// Every `approval_every` loops, before the next loop starts.
    EveryNLoops,
}

impl ApprovalGate {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The human side of the configuration, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HumanPolicy {
    /// An unanswered ask holds the run at the next loop boundary (`on_ask = "wait"`).
    pub wait_for_answers: bool,
    /// `require_approval` contains `completion`.
    pub approve_completion: bool,
    /// `require_approval` contains `every_n_loops`: every this many loops.
    pub approve_every: Option<u64>,
}

/// An ask as the engine sees it: an agent's question to a person.
#[derive(Clone, Debug, PartialEq)]
pub struct AskInfo {
    pub id: String,
    pub question: String,
    pub choices: Vec<String>,
    /// The run directory the ask was first made in, when a new run carried it over.
    pub carried_from: Option<String>,
}

/// What a person did, as the driver read it from the run directory's asks (D31).
#[derive(Clone, Debug, PartialEq)]
pub enum HumanInput {
    /// An ask appeared.
    AskOpened(AskInfo),
    /// An ask was answered.
    AskAnswered {
        id: String,
        answer: String,
        actor: Option<String>,
    },
    /// An approval was given or refused.
    Decision {
        id: String,
        approved: bool,
        reason: Option<String>,
        actor: Option<String>,
    },
}

/// The approval the engine waits for; the driver writes it where `looper approve` finds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRequest {
    pub id: String,
    pub gate: ApprovalGate,
    pub loop_number: u64,
    /// What the person is asked, in one line.
    pub question: String,
}
