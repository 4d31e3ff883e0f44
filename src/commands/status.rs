//! `looper status`: placeholder.
use crate::cli::StatusArgs;
use crate::error::{Error, Result};
pub fn status(_args: &StatusArgs) -> Result<i32> {
    Err(Error::Usage("`looper status` is not available yet".into()))
}
