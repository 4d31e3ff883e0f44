//! `looper control`: placeholder.
use crate::cli::ControlCommand;
use crate::error::{Error, Result};
pub fn control(_cmd: ControlCommand) -> Result<i32> {
    Err(Error::Usage("`looper control` is not available yet".into()))
}
