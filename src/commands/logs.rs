//! `looper logs`: placeholder.
use crate::cli::LogsArgs;
use crate::error::{Error, Result};
pub fn logs(_args: &LogsArgs) -> Result<i32> {
    Err(Error::Usage("`looper logs` is not available yet".into()))
}
