//! The split-pane live view and the farm launch: placeholder.
use crate::cli::{LiveViewArgs, RunArgs};
use crate::config::Invocation;
use crate::error::{Error, Result};
pub fn live_view(_args: &LiveViewArgs) -> Result<i32> {
    Err(Error::Usage("the live view is not available yet".into()))
}
/// `Some(exit code)` when the run was handed to the farm.
pub fn farm_launch(_args: &RunArgs, _inv: &Invocation, _bin: &str) -> Result<Option<i32>> {
    Ok(None)
}
pub fn open_split() -> bool {
    false
}
