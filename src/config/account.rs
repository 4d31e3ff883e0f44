//! Which account an agent table's login belongs to (issue 18): the directory and credential
//! that select each CLI's login, or an explicit `account = "name"`. The account's shared
//! record is `records::accounts`.

use std::path::{Path, PathBuf};

use super::AgentKind;
use crate::records::accounts::{Account, credential_hash};

/// Environment variables that carry a credential, per kind: when one is set, it selects the
/// login (for claude an API key wins over the OAuth login of its config directory).
fn credential_vars(kind: AgentKind) -> &'static [&'static str] {
    match kind {
        AgentKind::Claude => &[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ],
        AgentKind::Codex => &["OPENAI_API_KEY", "CODEX_API_KEY"],
        AgentKind::Gemini => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        AgentKind::Generic => &[],
    }
}

/// The account an agent uses. `explicit` is its `account = "..."`; `lookup` reads its
/// environment (its table's `env`, then the looper's); relative directories are taken
/// from `cwd`, where the agent starts. `None` for a generic agent without an explicit
/// name, or when nothing names a login (no `HOME`).
pub fn account_of(
    kind: AgentKind,
    explicit: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Option<Account> {
    if let Some(name) = explicit.map(str::trim).filter(|n| !n.is_empty()) {
        return Some(Account::named(name));
    }
    let set = |k: &str| lookup(k).filter(|v| !v.is_empty());
    let home = set("HOME").map(PathBuf::from);
    let dir = match kind {
        AgentKind::Claude => set("CLAUDE_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".claude"))),
        AgentKind::Codex => set("CODEX_HOME")
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".codex"))),
        AgentKind::Gemini => set("GEMINI_CLI_HOME")
            .map(PathBuf::from)
            .or(home)
            .map(|h| h.join(".gemini")),
        AgentKind::Generic => None,
    }?;
    let dir = super::absolutize(cwd, &dir);
    // The same directory reached through a symlink is the same login.
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let mut name = format!("{}:{}", kind.as_str(), dir.display());
    let keys: Vec<String> = credential_vars(kind)
        .iter()
        .filter_map(|k| set(k).map(|v| format!("{k}={v}")))
        .collect();
    if !keys.is_empty() {
        // Never the key itself: a hash tells two keys apart and says nothing else.
        name.push_str(&format!("+key#{}", credential_hash(&keys.join("\n"))));
    }
    Some(Account::of_login(name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_account_is_what_selects_the_login() {
        let cwd = Path::new("/work");
        let claude = |pairs: &[(&str, &str)]| {
            account_of(AgentKind::Claude, None, env(pairs), cwd).map(|a| a.name)
        };
        assert_eq!(
            claude(&[("HOME", "/home/a")]).as_deref(),
            Some("claude:/home/a/.claude")
        );
        assert_eq!(
            claude(&[("HOME", "/home/a"), ("CLAUDE_CONFIG_DIR", "/cfg/b")]).as_deref(),
            Some("claude:/cfg/b")
        );
        // Relative to where the agent starts.
        assert_eq!(
            account_of(AgentKind::Codex, None, env(&[("CODEX_HOME", "ch")]), cwd)
                .map(|a| a.name)
                .as_deref(),
            Some("codex:/work/ch")
        );
        assert_eq!(
            account_of(
                AgentKind::Gemini,
                None,
                env(&[("HOME", "/h"), ("GEMINI_CLI_HOME", "/g")]),
                cwd
            )
            .map(|a| a.name)
            .as_deref(),
            Some("gemini:/g/.gemini")
        );
        // A key selects the login: two keys are two accounts, and the key is never shown.
        let a = claude(&[("HOME", "/h"), ("ANTHROPIC_API_KEY", "sk-one")]).expect("a");
        let b = claude(&[("HOME", "/h"), ("ANTHROPIC_API_KEY", "sk-two")]).expect("b");
        assert_ne!(a, b);
        assert!(
            a.starts_with("claude:/h/.claude+key#") && !a.contains("sk-one"),
            "{a}"
        );
        // No login named: no account; a generic agent has one only by name.
        assert_eq!(claude(&[]), None);
        assert_eq!(
            account_of(AgentKind::Generic, None, env(&[("HOME", "/h")]), cwd),
            None
        );
        let named = account_of(AgentKind::Generic, Some("team"), env(&[]), cwd).expect("n");
        assert_eq!(named.name, "team");
        assert_eq!(named.id.len(), 16);
        assert_eq!(
            account_of(AgentKind::Claude, Some("team"), env(&[("HOME", "/h")]), cwd),
            Some(named),
            "an explicit name is the account whatever else is set"
        );
    }
}
