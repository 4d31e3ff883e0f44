//! Placeholder until the git2 module lands: same API, errors at runtime.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    Other(String),
    #[error("{0}")]
    LockHeld(String),
}

pub struct Workspace {
    workdir: PathBuf,
}
pub struct Fingerprint(pub [u8; 32]);
impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
pub struct Backup {
    pub branch: String,
    pub commit: String,
    pub snapshot: bool,
}
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HolderRecord {
    pub pid: i64,
    pub pid_identity: Option<String>,
    pub label: String,
    pub run_dir: String,
    pub started_at: String,
}
pub struct LockGuard {
    pub took_over: Option<HolderRecord>,
}
impl Workspace {
    pub fn open(agent_cwd: &Path) -> Result<Workspace, GitError> {
        Ok(Workspace {
            workdir: agent_cwd.to_path_buf(),
        })
    }
    pub fn require_head(&self) -> Result<String, GitError> {
        Err(GitError::Other("git support is not built yet".into()))
    }
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }
    pub fn fingerprint(&mut self, _excluded: &[PathBuf]) -> Result<Fingerprint, GitError> {
        Err(GitError::Other("git support is not built yet".into()))
    }
    pub fn create_backup(
        &self,
        _prefix: &str,
        _stamp: chrono::DateTime<chrono::Utc>,
        _loop_number: u64,
        _dirty: bool,
        _excluded: &[PathBuf],
    ) -> Result<Backup, GitError> {
        Err(GitError::Other("git support is not built yet".into()))
    }
    pub fn prune_backups(&self, _prefix: &str, _keep: usize) -> Result<Vec<String>, GitError> {
        Ok(vec![])
    }
}
pub fn lock_path_for(agent_cwd: &Path) -> PathBuf {
    agent_cwd.join(".agent-looper").join("looper.lock")
}
pub fn acquire_run_lock(_lock_path: &Path, _holder: &HolderRecord) -> Result<LockGuard, GitError> {
    Ok(LockGuard { took_over: None })
}
