//! Raw configuration layers: TOML documents and flags, validated key by key into one map
//! that remembers where every value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::schema::{self, KeySpec, Kind};
use crate::error::{Error, Result};

/// A validated configuration value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Num(f64),
    Bool(bool),
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{}", toml_string(s)),
            Value::Int(i) => write!(f, "{i}"),
            Value::Num(n) => write!(f, "{}", format_num(*n)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Value::Map(map) => {
                let items: Vec<String> = map
                    .iter()
                    .map(|(k, v)| format!("{} = {}", toml_key(k), toml_string(v)))
                    .collect();
                write!(f, "{{ {} }}", items.join(", "))
            }
        }
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

/// Numbers print without a trailing `.0` when whole, as a user would write them.
pub fn format_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Where a value came from, for error messages and `config check --show-origin`.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    Default,
    /// The project file, or an agent built into the looper.
    File(String),
    Preset(String),
    Env(String),
    Flag(String),
    AgentArgs,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(p) => write!(f, "{p}"),
            Origin::Preset(p) => write!(f, "preset {p}"),
            Origin::Env(v) => write!(f, "environment {v}"),
            Origin::Flag(flag) => write!(f, "command line {flag}"),
            Origin::AgentArgs => write!(f, "command line -- AGENT_ARGS"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Value,
    pub origin: Origin,
}

/// Every configured value keyed by its dotted path (`looper.max_loops`, `agents.codex.model`).
#[derive(Clone, Debug, Default)]
pub struct Layers {
    pub entries: BTreeMap<String, Entry>,
}

impl Layers {
    pub fn set(&mut self, path: impl Into<String>, value: Value, origin: Origin) {
        self.entries.insert(path.into(), Entry { value, origin });
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Names of the agent tables mentioned by any layer.
    pub fn agent_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .keys()
            .filter_map(|k| k.strip_prefix("agents."))
            .filter_map(|rest| rest.rsplit_once('.').map(|(name, _)| name.to_string()))
            .collect();
        names.dedup();
        names.sort();
        names.dedup();
        names
    }

    /// Merge a TOML document (project file or preset) over the current values.
    pub fn apply_document(&mut self, text: &str, origin: &Origin) -> Result<()> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::Usage(format!(
                "{origin}: invalid TOML: {}",
                e.to_string().trim_end()
            ))
        })?;
        for (section, value) in table {
            match section.as_str() {
                "looper" => {
                    let t = as_table(&value, origin, "looper")?;
                    for (k, v) in t {
                        let spec = schema::looper_key(k).ok_or_else(|| Error::UnknownKey {
                            origin: origin.to_string(),
                            key: format!("looper.{k}"),
                            suggestion: schema::suggest(
                                k,
                                schema::LOOPER_KEYS.iter().map(|s| s.name),
                            )
                            .map(|s| format!("looper.{s}")),
                        })?;
                        let path = format!("looper.{k}");
                        let checked = check(spec, v, origin, &path)?;
                        self.set(path, checked, origin.clone());
                    }
                }
                "agents" => {
                    let agents = as_table(&value, origin, "agents")?;
                    for (name, agent) in agents {
                        if name.trim().is_empty() {
                            return Err(Error::config(
                                origin.to_string(),
                                "agents",
                                "non-empty agent names",
                                "an empty name",
                            ));
                        }
                        let t = as_table(agent, origin, &format!("agents.{name}"))?;
                        for (k, v) in t {
                            let spec = schema::agent_key(k).ok_or_else(|| Error::UnknownKey {
                                origin: origin.to_string(),
                                key: format!("agents.{name}.{k}"),
                                suggestion: schema::suggest(
                                    k,
                                    schema::AGENT_KEYS.iter().map(|s| s.name),
                                )
                                .map(|s| format!("agents.{name}.{s}")),
                            })?;
                            let path = format!("agents.{name}.{k}");
                            let checked = check(spec, v, origin, &path)?;
                            self.set(path, checked, origin.clone());
                        }
                    }
                }
                other => {
                    return Err(Error::UnknownKey {
                        origin: origin.to_string(),
                        key: other.to_string(),
                        suggestion: schema::suggest(other, ["looper", "agents"]),
                    });
                }
            }
        }
        Ok(())
    }
}

fn as_table<'a>(value: &'a toml::Value, origin: &Origin, key: &str) -> Result<&'a toml::Table> {
    value
        .as_table()
        .ok_or_else(|| Error::config(origin.to_string(), key, "a table", describe(value)))
}

/// A short description of a TOML value for "found ..." messages.
pub fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) if s.is_empty() => "an empty string".into(),
        toml::Value::String(s) => format!("a string {}", toml_string(&truncate(s, 60))),
        toml::Value::Integer(i) => format!("an integer {i}"),
        toml::Value::Float(f) if !f.is_finite() => format!("a non-finite number {f}"),
        toml::Value::Float(f) => format!("a float {f}"),
        toml::Value::Boolean(b) => format!("a boolean {b}"),
        toml::Value::Datetime(d) => format!("a datetime {d}"),
        toml::Value::Array(a) if a.is_empty() => "an empty array".into(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}...")
    }
}

/// Validate one TOML value against its key's kind.
pub fn check(spec: &KeySpec, value: &toml::Value, origin: &Origin, path: &str) -> Result<Value> {
    let fail = |found: String| Error::config(origin.to_string(), path, spec.kind.expected(), found);
    match spec.kind {
        Kind::Str => match value {
            toml::Value::String(s) => Ok(Value::Str(s.clone())),
            other => Err(fail(describe(other))),
        },
        Kind::NonEmptyStr | Kind::Path { optional: false } => match value {
            toml::Value::String(s) if s.trim().is_empty() => Err(fail(describe(value))),
            toml::Value::String(s) => Ok(Value::Str(s.clone())),
            other => Err(fail(describe(other))),
        },
        Kind::Path { optional: true } => match value {
            toml::Value::String(s) => Ok(Value::Str(s.clone())),
            other => Err(fail(describe(other))),
        },
        Kind::Choice(words) => match value {
            toml::Value::String(s) if words.contains(&s.as_str()) => Ok(Value::Str(s.clone())),
            toml::Value::String(s) => {
                let hint = schema::suggest(s, words.iter().copied())
                    .map(|w| format!(" (did you mean \"{w}\"?)"))
                    .unwrap_or_default();
                Err(fail(format!("{}{hint}", describe(value))))
            }
            other => Err(fail(describe(other))),
        },
        Kind::Regex { optional } => match value {
            toml::Value::String(s) if s.is_empty() && optional => Ok(Value::Str(String::new())),
            toml::Value::String(s) if s.is_empty() => Err(fail(describe(value))),
            toml::Value::String(s) => {
                compile_regex(s, false).map_err(|e| fail(format!("{} ({e})", describe(value))))?;
                Ok(Value::Str(s.clone()))
            }
            other => Err(fail(describe(other))),
        },
        Kind::Int { min } => match value {
            toml::Value::Integer(i) if *i >= min => Ok(Value::Int(*i)),
            other => Err(fail(describe(other))),
        },
        Kind::Num { min, exclusive } => {
            let n = match value {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                other => return Err(fail(describe(other))),
            };
            if !n.is_finite() || n < min || (exclusive && n <= min) {
                return Err(fail(describe(value)));
            }
            Ok(Value::Num(n))
        }
        Kind::Bool => match value {
            toml::Value::Boolean(b) => Ok(Value::Bool(*b)),
            other => Err(fail(describe(other))),
        },
        Kind::StrList | Kind::RegexList | Kind::Template => {
            let items = value.as_array().ok_or_else(|| fail(describe(value)))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let s = item.as_str().ok_or_else(|| {
                    fail(format!("an array whose item {i} is {}", describe(item)))
                })?;
                if matches!(spec.kind, Kind::RegexList) {
                    if s.is_empty() {
                        return Err(fail(format!("an array whose item {i} is an empty string")));
                    }
                    compile_regex(s, true).map_err(|e| {
                        fail(format!(
                            "an array whose item {i} is not a valid regex ({e})"
                        ))
                    })?;
                }
                out.push(s.to_string());
            }
            if matches!(spec.kind, Kind::Template) {
                if out.is_empty() || out[0].trim().is_empty() {
                    return Err(fail("an empty command".into()));
                }
                for item in &out {
                    check_placeholders(item).map_err(&fail)?;
                }
            }
            Ok(Value::List(out))
        }
        Kind::Env => {
            let table = value.as_table().ok_or_else(|| fail(describe(value)))?;
            let mut map = BTreeMap::new();
            for (k, v) in table {
                let s = v
                    .as_str()
                    .ok_or_else(|| fail(format!("a table whose key {k} is {}", describe(v))))?;
                if k.is_empty() || k.contains('=') || k.contains('\0') || s.contains('\0') {
                    return Err(fail(format!("an invalid variable name {}", toml_string(k))));
                }
                map.insert(k.clone(), s.to_string());
            }
            Ok(Value::Map(map))
        }
    }
}

/// Compile a user regex; stop patterns are case-insensitive, completion markers are not.
pub fn compile_regex(
    pattern: &str,
    case_insensitive: bool,
) -> std::result::Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .multi_line(true)
        .size_limit(10 * (1 << 20))
        .build()
        .map_err(|e| {
            // The regex crate's messages span several lines; keep the last meaningful one.
            let text = e.to_string();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid regex")
                .trim()
                .to_string();
            last.trim_start_matches("error: ").to_string()
        })
}

/// Reject unknown `{name}` placeholders; `{{` and `}}` are literal braces.
pub fn check_placeholders(item: &str) -> std::result::Result<(), String> {
    let mut rest = item;
    while let Some(i) = rest.find(['{', '}']) {
        let c = rest.as_bytes()[i];
        let after = &rest[i + 1..];
        if c == b'{' && after.starts_with('{') || c == b'}' && after.starts_with('}') {
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            return Err(format!("an unmatched `}}` in {}", toml_string(item)));
        }
        let Some(end) = after.find('}') else {
            return Err(format!("an unclosed `{{` in {}", toml_string(item)));
        };
        let name = &after[..end];
        if !schema::PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "the unknown placeholder {{{name}}} in {}",
                toml_string(item)
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Read a config file as UTF-8 with a clear error for anything else.
/// A config or preset file, through the one bounded reader (regular files only, capped,
/// never blocking: issue 20.6); any failure is a configuration error naming the path.
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = crate::effects::textfile::read(path)
        .map_err(|e| Error::Usage(format!("{what}: {e}")))?
        .bytes;
    String::from_utf8(bytes).map_err(|e| {
        Error::Usage(format!(
            "{}: {what} is not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}
