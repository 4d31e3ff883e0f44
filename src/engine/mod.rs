//! The pure decision core: the loop state machine, its events, retry policy and stop reasons.
//! Nothing in here performs I/O; see `driver` for the one place decisions meet effects.

pub mod events;
pub mod feedback;
pub mod human;
pub mod machine;
pub mod notify;
pub mod panes;
pub mod plan;
pub mod protocol;
pub mod quota;
pub mod retry;
pub mod stop;
pub mod worktree;

#[cfg(test)]
mod tests;

pub use events::{AgentCli, Event, Gate, Usage};
pub use feedback::{Feedback, FeedbackKind};
pub use human::{ApprovalGate, ApprovalRequest, AskInfo, HumanInput, HumanPolicy};
pub use machine::{
    AccountFacts, AccountLimit, AttemptReport, AttemptSpec, BackupInfo, ControlAction,
    ControlCommand, DailyBudget, DailyUsage, Effect, Engine, EngineConfig, GateWhen, Input,
    PlanCheck, ReviewGate, ReviewReport, ReviewSpec, SessionRef, VerifyGate, VerifyReport,
    VerifySpec, WaitPurpose, WindowFacts,
};
pub use quota::HoldCause;
pub use retry::{ErrorClass, ErrorSignal, RetryPolicy};
pub use stop::{Status, StopKind, StopReason};
