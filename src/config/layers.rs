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
            Value::Num(n) => write!(f, "{}", crate::text::format_num(*n)),
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
            // toml quotes the offending line whole: a line of hundreds of KiB is cut.
            let msg: Vec<String> = e
                .to_string()
                .trim_end()
                .lines()
                .map(|l| truncate(l, 200))
                .collect();
            Error::Usage(format!("{origin}: invalid TOML: {}", msg.join("\n")))
        })?;
        // Every mistake of the document is reported at once, each with its key.
        let mut errors = Vec::new();
        for (section, value) in table {
            match section.as_str() {
                name if schema::section(name).is_some() => {
                    let Some(sec) = schema::section(name) else {
                        continue;
                    };
                    match as_table(&value, origin, name) {
                        Ok(t) => self.apply_keys(t, sec.keys, name, origin, &mut errors),
                        Err(e) => errors.push(e),
                    }
                }
                "agents" => {
                    let agents = match as_table(&value, origin, "agents") {
                        Ok(a) => a,
                        Err(e) => {
                            errors.push(e);
                            continue;
                        }
                    };
                    for (name, agent) in agents {
                        if name.trim().is_empty() {
                            errors.push(Error::config(
                                origin.to_string(),
                                "agents",
                                "non-empty agent names",
                                "an empty name",
                            ));
                            continue;
                        }
                        let prefix = format!("agents.{name}");
                        match as_table(agent, origin, &prefix) {
                            Ok(t) => {
                                self.apply_keys(t, schema::AGENT_KEYS, &prefix, origin, &mut errors)
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                }
                other => errors.push(Error::UnknownKey {
                    origin: origin.to_string(),
                    key: other.to_string(),
                    suggestion: schema::suggest(
                        other,
                        schema::SECTIONS
                            .iter()
                            .map(|s| s.name)
                            .chain(std::iter::once("agents")),
                    ),
                }),
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many(errors)),
        }
    }

    /// The keys of one table: each checked against `specs` and set, or its error collected.
    fn apply_keys(
        &mut self,
        table: &toml::Table,
        specs: &'static [KeySpec],
        prefix: &str,
        origin: &Origin,
        errors: &mut Vec<Error>,
    ) {
        for (k, v) in table {
            let path = format!("{prefix}.{k}");
            let Some(spec) = specs.iter().find(|s| s.name == k) else {
                errors.push(Error::UnknownKey {
                    origin: origin.to_string(),
                    key: path,
                    suggestion: schema::suggest(k, specs.iter().map(|s| s.name))
                        .map(|s| format!("{prefix}.{s}")),
                });
                continue;
            };
            match check(spec, v, origin, &path) {
                Ok(checked) => self.set(path, checked, origin.clone()),
                Err(e) => errors.push(e),
            }
        }
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

/// "a NUL byte in ..." when a string (or an item of an array) holds one; tables are checked
/// by their kind (`Env` names the variable).
fn nul_in(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) if s.contains('\0') => Some("a string with a NUL byte".into()),
        toml::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            v.as_str()
                .filter(|s| s.contains('\0'))
                .map(|_| format!("an array whose item {i} has a NUL byte"))
        }),
        _ => None,
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
    // No string the looper passes on (argv, environment, file names) may hold a NUL: the OS
    // cannot carry it, and the run would fail only once started.
    if let Some(nul) = nul_in(value) {
        return Err(fail(nul));
    }
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
        Kind::Percent => {
            let n = match value {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                other => return Err(fail(describe(other))),
            };
            if !(0.0..=100.0).contains(&n) {
                return Err(fail(describe(value)));
            }
            Ok(Value::Num(n))
        }
        Kind::Seconds { min, exclusive } => {
            let n = match value {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                other => return Err(fail(describe(other))),
            };
            if !seconds_in_range(n, min, exclusive) {
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
                    check_placeholders(item, schema::PLACEHOLDERS).map_err(&fail)?;
                }
            }
            Ok(Value::List(out))
        }
        Kind::ChoiceList(words) => {
            let items = value.as_array().ok_or_else(|| fail(describe(value)))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(w) if words.contains(&w) => {
                        if !out.iter().any(|o: &String| o == w) {
                            out.push(w.to_string());
                        }
                    }
                    _ => {
                        let hint = item
                            .as_str()
                            .and_then(|w| schema::suggest(w, words.iter().copied()))
                            .map(|w| format!(" (did you mean \"{w}\"?)"))
                            .unwrap_or_default();
                        return Err(fail(format!(
                            "an array whose item {i} is {}{hint}",
                            describe(item)
                        )));
                    }
                }
            }
            Ok(Value::List(out))
        }
        Kind::Argv(names) => {
            let items = value.as_array().ok_or_else(|| fail(describe(value)))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let s = item.as_str().ok_or_else(|| {
                    fail(format!("an array whose item {i} is {}", describe(item)))
                })?;
                check_placeholders(s, names).map_err(&fail)?;
                out.push(s.to_string());
            }
            if out.first().is_some_and(|p| p.trim().is_empty()) {
                return Err(fail("an empty program name".into()));
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
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(fail(format!("an invalid variable name {}", toml_string(k))));
                }
                if s.contains('\0') {
                    return Err(fail(format!(
                        "a NUL byte in the value of {}",
                        toml_string(k)
                    )));
                }
                map.insert(k.clone(), s.to_string());
            }
            Ok(Value::Map(map))
        }
    }
}

/// A number of seconds `Duration` can hold and timers can add: finite, in range, at most
/// [`schema::MAX_SECONDS`].
pub fn seconds_in_range(n: f64, min: f64, exclusive: bool) -> bool {
    n.is_finite() && n <= schema::MAX_SECONDS && if exclusive { n > min } else { n >= min }
}

/// Compile a user regex; stop patterns are case-insensitive, completion markers are not.
///
/// Validation and the run share one compiled value: the first compile of a pattern is kept
/// (a `Regex` clone shares the compiled program), so a key checked in its layer is not
/// compiled again by `config::run` or the scanner.
pub fn compile_regex(
    pattern: &str,
    case_insensitive: bool,
) -> std::result::Result<regex::Regex, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    /// A config has a handful of patterns; the bound only keeps fuzzing from growing it.
    const KEEP: usize = 64;
    static COMPILED: Mutex<Option<HashMap<(String, bool), regex::Regex>>> = Mutex::new(None);
    let key = (pattern.to_string(), case_insensitive);
    if let Ok(cache) = COMPILED.lock()
        && let Some(re) = cache.as_ref().and_then(|c| c.get(&key))
    {
        return Ok(re.clone());
    }
    let re = regex::RegexBuilder::new(pattern)
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
        })?;
    if let Ok(mut cache) = COMPILED.lock() {
        let cache = cache.get_or_insert_with(HashMap::new);
        if cache.len() >= KEEP {
            cache.clear();
        }
        cache.insert(key, re.clone());
    }
    Ok(re)
}

/// Reject `{name}` placeholders not in `known`; `{{` and `}}` are literal braces.
pub fn check_placeholders(item: &str, known: &[&str]) -> std::result::Result<(), String> {
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
        if !known.contains(&name) {
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
