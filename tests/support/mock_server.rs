//! A scripted mock model server for end-to-end tests of the real agent CLIs.
//!
//! It speaks just enough of three provider APIs for codex, claude and gemini to run a turn
//! against it on 127.0.0.1:
//!
//! * OpenAI Responses: `POST /v1/responses` (server-sent events, as codex expects).
//! * Anthropic Messages: `POST /v1/messages?beta=true` (server-sent events when `"stream": true`,
//!   JSON otherwise) and `POST /v1/messages/count_tokens` (JSON).
//! * Gemini: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (server-sent events)
//!   and `POST /v1beta/models/{model}:generateContent` (JSON).
//!
//! Anything else gets a 404 JSON error. Every request is recorded.
//!
//! # Scripting
//!
//! Each provider has a FIFO queue of [`Reply`]s; when it is empty the provider's default reply
//! is used (initially `Reply::text("ok")`). Only *agent turns* take replies from the queue,
//! and the rule is the same for the three APIs: **a request is an agent turn when its JSON body
//! has a non-empty `tools` array** (`POST /v1/responses`, `POST /v1/messages`,
//! `:streamGenerateContent` or `:generateContent`). The main agents always send their tool
//! list; every helper call seen from codex 0.169.0, claude 2.1.197 and gemini 0.61.0 sends
//! none or `tools: []`:
//!
//! * claude's `HEAD /` probe before each run (404, no body) and the interactive session-title
//!   request (haiku, `"tools": []`, `output_config.format` JSON schema asking for
//!   `{"title": ...}`); `count_tokens` was not seen but is answered (a JSON count) anyway;
//! * gemini's model-routing `generateContent` call before every turn (no tools,
//!   `generationConfig.responseJsonSchema` asking for `complexity_reasoning` and
//!   `complexity_score`).
//!
//! A reply can carry response headers ([`Reply::with_headers`]), such as the providers'
//! rate-limit headers in [`rate_limit_headers`] (what the CLIs make of them: FINDINGS.md
//! section 7); they go with every form of the reply (stream, JSON, error).
//!
//! Side requests never touch the queue. They are answered with JSON synthesized from the
//! schema they ask for (so the CLI's validation passes: `{"title":"mock"}`,
//! `{"complexity_reasoning":"mock","complexity_score":1}`), or the text `ok`.
//!
//! Streaming is not part of the rule on purpose: after a streamed turn fails, claude retries
//! the same turn *without* `"stream"` (a non-streaming fallback carrying the full tool list),
//! and that request must take the next scripted reply too. Non-streamed turns get the JSON
//! form of the reply.
//!
//! # Why no web framework
//!
//! The server is a small HTTP/1.1 implementation on tokio so that a reply can stream an event,
//! stall, and then be cut off exactly when the test drops the server (a hung reply); a framework
//! body would need a `Stream` implementation from crates the tests do not otherwise depend on.
//! HTTP/1.1 is all the three CLIs speak to a plain `http://` base URL.

// Shared by several integration-test binaries, each of which uses a different subset.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The API a request was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI Responses API (codex).
    OpenAi,
    /// Anthropic Messages API (claude).
    Anthropic,
    /// Gemini API (gemini).
    Gemini,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini];
}

/// One scripted answer to an agent turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    kind: ReplyKind,
    /// Extra response headers (the providers' rate-limit headers, ...), sent with every
    /// form of the reply: streams, JSON answers and errors.
    headers: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ReplyKind {
    Text {
        text: String,
        /// Pause after the first event (streams) or before the response (JSON).
        delay: Duration,
        /// Then also wait, at the same point, until this file exists ([`Reply::held`]).
        gate: Option<std::path::PathBuf>,
        input_tokens: u64,
        output_tokens: u64,
    },
    Status {
        code: u16,
        retry_after: Option<u64>,
        /// Overrides the provider's error type (`insufficient_quota`, ...).
        error_type: Option<String>,
        message: Option<String>,
        /// Replaces the whole error body.
        raw_body: Option<String>,
    },
    /// A 200 stream that fails in-band after its first event.
    StreamError {
        error_type: String,
        message: String,
    },
    Hang,
}

impl Reply {
    /// An assistant message with this text, delivered at once.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply {
            kind: ReplyKind::Text {
                text: text.into(),
                delay: Duration::ZERO,
                gate: None,
                input_tokens: 10,
                output_tokens: 5,
            },
            headers: Vec::new(),
        }
    }

    /// Like [`Reply::text`], but the stream stalls for `delay` after its first event (JSON
    /// answers are delayed as a whole).
    pub fn slow(text: impl Into<String>, delay: Duration) -> Reply {
        let mut reply = Reply::text(text);
        if let ReplyKind::Text { delay: d, .. } = &mut reply.kind {
            *d = delay;
        }
        reply
    }

    /// Like [`Reply::text`], but the stream stalls after its first event until the file
    /// `gate` exists (JSON answers wait as a whole): the agent's turn is under way for as
    /// long as the test needs, and ends when the test says so, not after a guessed delay.
    /// A gate never created holds the reply until the server is dropped.
    pub fn held(text: impl Into<String>, gate: impl Into<std::path::PathBuf>) -> Reply {
        let mut reply = Reply::text(text);
        if let ReplyKind::Text { gate: g, .. } = &mut reply.kind {
            *g = Some(gate.into());
        }
        reply
    }

    /// An HTTP error with the provider's error body, and `retry-after: <secs>` when given.
    ///
    /// Error bodies by status: OpenAI 429 type `requests` code `rate_limit_exceeded` (the
    /// message says "Please try again in Ns." when `retry_after` is given), 503 type
    /// `service_unavailable_error` code `server_is_overloaded`, other 5xx `server_error`;
    /// Anthropic 429 `rate_limit_error`, 503/529 `overloaded_error`, other 5xx `api_error`;
    /// Gemini 429 `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`, other 5xx `INTERNAL` (with a
    /// `google.rpc.RetryInfo` detail `retryDelay: "Ns"` when `retry_after` is given).
    pub fn status(code: u16, retry_after: Option<u64>) -> Reply {
        Reply {
            kind: ReplyKind::Status {
                code,
                retry_after,
                error_type: None,
                message: None,
                raw_body: None,
            },
            headers: Vec::new(),
        }
    }

    /// HTTP 429 meaning "out of quota" rather than "slow down": OpenAI `insufficient_quota`,
    /// Anthropic `rate_limit_error` with a usage-limit message, Gemini `RESOURCE_EXHAUSTED`
    /// with a quota message.
    pub fn quota() -> Reply {
        Reply {
            kind: ReplyKind::Status {
                code: 429,
                retry_after: None,
                error_type: Some("insufficient_quota".to_owned()),
                message: None,
                raw_body: None,
            },
            headers: Vec::new(),
        }
    }

    /// An HTTP error whose body is exactly `body` (served as `application/json`).
    pub fn raw_error(code: u16, retry_after: Option<u64>, body: impl Into<String>) -> Reply {
        Reply {
            kind: ReplyKind::Status {
                code,
                retry_after,
                error_type: None,
                message: None,
                raw_body: Some(body.into()),
            },
            headers: Vec::new(),
        }
    }

    /// Sends the response headers and the first stream event (OpenAI `response.created`,
    /// Anthropic `message_start`; gemini: headers only), then never finishes. The connection
    /// is closed when the client goes away or the server is dropped.
    pub fn hang() -> Reply {
        Reply {
            kind: ReplyKind::Hang,
            headers: Vec::new(),
        }
    }

    /// A stream that starts normally (HTTP 200) and then fails in-band: OpenAI
    /// `response.failed` with `error: {code, message}`, Anthropic an `error` event
    /// `{"type":"error","error":{"type","message"}}`, Gemini a `data: {"error": {...}}` event
    /// with `status: error_type`. Non-streamed requests get the provider's HTTP 500 error body
    /// with this type and message instead.
    pub fn stream_error(error_type: impl Into<String>, message: impl Into<String>) -> Reply {
        Reply {
            kind: ReplyKind::StreamError {
                error_type: error_type.into(),
                message: message.into(),
            },
            headers: Vec::new(),
        }
    }

    /// Sets the token counts reported with a text reply (default 10 in, 5 out).
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Reply {
        if let ReplyKind::Text {
            input_tokens: i,
            output_tokens: o,
            ..
        } = &mut self.kind
        {
            *i = input_tokens;
            *o = output_tokens;
        }
        self
    }

    /// Overrides the error message of a status reply.
    pub fn with_message(mut self, text: impl Into<String>) -> Reply {
        if let ReplyKind::Status { message, .. } = &mut self.kind {
            *message = Some(text.into());
        }
        self
    }

    /// Overrides the provider error type of a status reply (OpenAI `type`/`code`, Anthropic
    /// `error.type`, Gemini `status`).
    pub fn with_error_type(mut self, kind: impl Into<String>) -> Reply {
        if let ReplyKind::Status { error_type, .. } = &mut self.kind {
            *error_type = Some(kind.into());
        }
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds response headers (see [`rate_limit_headers`]).
    pub fn with_headers(mut self, headers: impl IntoIterator<Item = (String, String)>) -> Reply {
        self.headers.extend(headers);
        self
    }

    fn describe(&self) -> String {
        match &self.kind {
            ReplyKind::Text { gate: Some(_), .. } => "held".to_owned(),
            ReplyKind::Text { delay, .. } if delay.is_zero() => "text".to_owned(),
            ReplyKind::Text { delay, .. } => format!("slow({delay:?})"),
            ReplyKind::Status { code, .. } => format!("status({code})"),
            ReplyKind::StreamError { error_type, .. } => format!("stream_error({error_type})"),
            ReplyKind::Hang => "hang".to_owned(),
        }
    }
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent (`/v1/messages?beta=true`).
    pub path: String,
    /// Header names in lower case, values as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes exactly as received (after undoing chunked transfer encoding).
    pub body_bytes: Vec<u8>,
    /// The body as text (lossy only where it was not valid UTF-8).
    pub body: String,
    /// The API the path belongs to, if any.
    pub provider: Option<Provider>,
    /// True when this request was an agent turn and took its reply from the script.
    pub is_turn: bool,
    /// What was answered: `text`, `slow(..)`, `status(429)`, `hang`, `side`, `count_tokens`,
    /// `not_found`.
    pub reply: String,
    /// When the request arrived, relative to server start.
    pub at: Duration,
}

impl RecordedRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body_bytes).ok()
    }

    /// The user prompt of this request: the last user message's text (see
    /// [`MockServer::prompts`]).
    pub fn prompt(&self) -> Option<String> {
        let body = self.json()?;
        match self.provider? {
            Provider::OpenAi => openai_prompt(&body),
            Provider::Anthropic => anthropic_prompt(&body),
            Provider::Gemini => gemini_prompt(&body),
        }
    }
}

/// Codex: the last `input` item with `role: user`, its `input_text` parts joined.
fn openai_prompt(body: &Value) -> Option<String> {
    let items = body.get("input")?.as_array()?;
    let item = items
        .iter()
        .rev()
        .find(|i| i.get("role").and_then(Value::as_str) == Some("user"))?;
    match item.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        ),
        _ => None,
    }
}

/// Claude: the last `messages` entry with `role: user`; its last text block that is not a
/// `<system-reminder>` claude adds on its own.
fn anthropic_prompt(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let message = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match message.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .rev()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .find(|t| !t.starts_with("<system-reminder>"))
            .map(str::to_owned),
        _ => None,
    }
}

/// Gemini: the last `contents` entry with `role: user`; its last text part that is not the
/// `<session_context>` gemini adds on its own.
fn gemini_prompt(body: &Value) -> Option<String> {
    let contents = body.get("contents")?.as_array()?;
    let content = contents
        .iter()
        .rev()
        .find(|c| c.get("role").and_then(Value::as_str) == Some("user"))?;
    content
        .get("parts")?
        .as_array()?
        .iter()
        .rev()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .find(|t| !t.starts_with("<session_context>"))
        .map(str::to_owned)
}

#[derive(Default)]
struct State {
    queues: HashMap<Provider, VecDeque<Reply>>,
    defaults: HashMap<Provider, Reply>,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    started: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not turn every later call into a second panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_reply(&self, provider: Provider) -> Reply {
        let mut state = self.lock();
        if let Some(reply) = state
            .queues
            .get_mut(&provider)
            .and_then(VecDeque::pop_front)
        {
            return reply;
        }
        state
            .defaults
            .get(&provider)
            .cloned()
            .unwrap_or_else(|| Reply::text("ok"))
    }

    fn record(&self, request: RecordedRequest) {
        self.lock().requests.push(request);
        self.changed.notify_all();
    }
}

/// A running mock server; dropping it stops the server and closes every connection.
pub struct MockServer {
    shared: Arc<Shared>,
    port: u16,
    shutdown: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Binds 127.0.0.1 on an ephemeral port and serves on a background thread with its own
    /// tokio runtime. Panics if the port cannot be bound (test support).
    pub fn start() -> MockServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("set the listener non-blocking");
        let port = listener.local_addr().expect("listener address").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            started: Instant::now(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build the mock server's tokio runtime");
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("mock-server-{port}"))
            .spawn(move || {
                runtime.block_on(serve(listener, thread_shared, shutdown_rx));
                // Dropping the runtime cancels every connection task, hung ones included.
                drop(runtime);
            })
            .expect("spawn the mock server thread");
        MockServer {
            shared,
            port,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Appends a reply to the provider's queue of agent-turn replies.
    pub fn push(&self, provider: Provider, reply: Reply) {
        self.shared
            .lock()
            .queues
            .entry(provider)
            .or_default()
            .push_back(reply);
    }

    /// The reply used for agent turns when the provider's queue is empty.
    pub fn set_default(&self, provider: Provider, reply: Reply) {
        self.shared.lock().defaults.insert(provider, reply);
    }

    /// Replies still queued for the provider.
    pub fn queued(&self, provider: Provider) -> usize {
        self.shared
            .lock()
            .queues
            .get(&provider)
            .map_or(0, VecDeque::len)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The agent-turn requests (those answered from the script) for the provider.
    pub fn turns(&self, provider: Provider) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_turn && r.provider == Some(provider))
            .cloned()
            .collect()
    }

    /// The user prompt of each agent turn for the provider, in order: the text of the last
    /// user message (OpenAI `input[]` item with `role: user`, its `input_text` parts joined;
    /// Anthropic last `messages[]` user entry, its last text block that is not a
    /// `<system-reminder>`; Gemini last `contents[]` user entry, its last text part that is
    /// not the `<session_context>`). On a resumed session that is the new prompt, not the
    /// history.
    pub fn prompts(&self, provider: Provider) -> Vec<String> {
        self.turns(provider)
            .iter()
            .filter_map(RecordedRequest::prompt)
            .collect()
    }

    /// Blocks until `done(requests)` holds or `timeout` passes; returns whether it held.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[RecordedRequest]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state.requests) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Blocks until the provider has had at least `n` agent turns or `timeout` passes.
    pub fn wait_for_turns(&self, provider: Provider, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |requests| {
            requests
                .iter()
                .filter(|r| r.is_turn && r.provider == Some(provider))
                .count()
                >= n
        })
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, Arc::clone(&shared)));
                }
            }
        }
    }
}

/// A parsed request head plus body.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Serves one keep-alive connection until the client closes it or a reply ends it.
async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let Ok(Some(request)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let keep_alive = request.keep_alive;
        match respond(&mut stream, request, &shared).await {
            Ok(Flow::KeepAlive) if keep_alive => {}
            _ => return,
        }
    }
}

enum Flow {
    KeepAlive,
    Close,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn fill(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> std::io::Result<usize> {
    // Read straight into the Vec's spare capacity: a stack buffer would bloat every future.
    buf.reserve(16 * 1024);
    stream.read_buf(buf).await
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one request; `Ok(None)` on a clean close between requests.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        if fill(stream, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(invalid("connection closed mid-request"))
            };
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
        keep_alive: true,
    };
    let connection = request.header("connection").map(str::to_ascii_lowercase);
    request.keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version != "HTTP/1.0",
    };
    if request
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked(stream, buf).await?;
    } else {
        let len: usize = request
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            return Err(invalid("request body too large"));
        }
        while buf.len() < len {
            if fill(stream, buf).await? == 0 {
                return Err(invalid("connection closed mid-body"));
            }
        }
        request.body = buf.drain(..len).collect();
    }
    Ok(Some(request))
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(pos) = find(buf, b"\r\n") {
                break pos;
            }
            if fill(stream, buf).await? == 0 {
                return Err(invalid("connection closed mid-chunk"));
            }
        };
        let size_line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (if any) end with an empty line.
            loop {
                if let Some(pos) = find(buf, b"\r\n") {
                    let empty = pos == 0;
                    buf.drain(..pos + 2);
                    if empty {
                        return Ok(body);
                    }
                } else if fill(stream, buf).await? == 0 {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("request body too large"));
        }
        while buf.len() < size + 2 {
            if fill(stream, buf).await? == 0 {
                return Err(invalid("connection closed mid-chunk"));
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// What kind of endpoint a request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Responses,
    Messages,
    CountTokens,
    GeminiStream { sse: bool },
    GeminiGenerate,
    NotFound,
}

fn route(method: &str, target: &str) -> (Option<Provider>, Endpoint) {
    let path = target.split('?').next().unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    if method != "POST" {
        return (None, Endpoint::NotFound);
    }
    match path {
        "/v1/responses" => (Some(Provider::OpenAi), Endpoint::Responses),
        "/v1/messages" => (Some(Provider::Anthropic), Endpoint::Messages),
        "/v1/messages/count_tokens" => (Some(Provider::Anthropic), Endpoint::CountTokens),
        _ if path.starts_with("/v1beta/models/") && path.ends_with(":streamGenerateContent") => {
            let sse = query.split('&').any(|kv| kv == "alt=sse");
            (Some(Provider::Gemini), Endpoint::GeminiStream { sse })
        }
        _ if path.starts_with("/v1beta/models/") && path.ends_with(":generateContent") => {
            (Some(Provider::Gemini), Endpoint::GeminiGenerate)
        }
        _ => (None, Endpoint::NotFound),
    }
}

fn has_tools(body: &Value) -> bool {
    body.get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}

/// Whether a request is an agent turn (takes a scripted reply); see the module docs.
fn is_turn(endpoint: Endpoint, body: &Value) -> bool {
    match endpoint {
        Endpoint::Responses
        | Endpoint::Messages
        | Endpoint::GeminiStream { .. }
        | Endpoint::GeminiGenerate => has_tools(body),
        Endpoint::CountTokens | Endpoint::NotFound => false,
    }
}

async fn respond(
    stream: &mut TcpStream,
    request: Request,
    shared: &Shared,
) -> std::io::Result<Flow> {
    let (provider, endpoint) = route(&request.method, &request.target);
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let turn = provider.is_some() && is_turn(endpoint, &body);
    let reply = match provider {
        Some(p) if turn => Some(shared.next_reply(p)),
        _ => None,
    };
    let described = match (&reply, endpoint) {
        (Some(r), _) => r.describe(),
        (None, Endpoint::NotFound) => "not_found".to_owned(),
        (None, Endpoint::CountTokens) => "count_tokens".to_owned(),
        (None, _) => "side".to_owned(),
    };
    shared.record(RecordedRequest {
        method: request.method.clone(),
        path: request.target.clone(),
        headers: request.headers.clone(),
        body: String::from_utf8_lossy(&request.body).into_owned(),
        body_bytes: request.body.clone(),
        provider,
        is_turn: turn,
        reply: described,
        at: shared.started.elapsed(),
    });

    let model = request_model(&request.target, &body);
    match endpoint {
        Endpoint::NotFound => {
            let msg = format!(
                "mock server: no route for {} {}",
                request.method, request.target
            );
            let body = json!({"error": {"type": "not_found_error", "code": 404, "message": msg}});
            if request.method == "HEAD" {
                // Same head as the GET answer, no body (claude sends `HEAD /` before a turn).
                write_head_only(stream, 404, body.to_string().len()).await?;
            } else {
                write_json(stream, 404, &[], &body.to_string()).await?;
            }
            Ok(Flow::KeepAlive)
        }
        Endpoint::CountTokens => {
            // Roughly four bytes per token, like the real counter on English text.
            let tokens = (request.body.len() / 4).max(1);
            write_json(
                stream,
                200,
                &[],
                &json!({"input_tokens": tokens}).to_string(),
            )
            .await?;
            Ok(Flow::KeepAlive)
        }
        _ => {
            let reply = reply.unwrap_or_else(|| side_reply(&body));
            let provider = provider.unwrap_or(Provider::OpenAi);
            send_reply(stream, provider, endpoint, &model, &body, reply).await
        }
    }
}

/// The answer to a request that is not an agent turn: JSON synthesized from the structured
/// output schema when the request asks for one (claude's session title, gemini's routing
/// decision), `ok` otherwise.
fn side_reply(body: &Value) -> Reply {
    let schema = [
        "/generationConfig/responseJsonSchema",
        "/generationConfig/responseSchema",
        "/output_config/format/schema",
        "/text/format/schema",
    ]
    .iter()
    .find_map(|pointer| body.pointer(pointer));
    match schema {
        Some(schema) => Reply::text(synthesize(schema).to_string()),
        None => Reply::text("ok"),
    }
}

/// A small value matching a JSON schema (Gemini `OBJECT`/`STRING`/... or JSON-schema types).
fn synthesize(schema: &Value) -> Value {
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_ascii_lowercase();
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    match kind.as_str() {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    out.insert(name.clone(), synthesize(sub));
                }
            }
            Value::Object(out)
        }
        "array" => Value::Array(Vec::new()),
        "string" => Value::String("mock".to_owned()),
        "integer" | "number" => {
            let min = schema.get("minimum").and_then(Value::as_i64).unwrap_or(1);
            json!(min.max(1))
        }
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

fn request_model(target: &str, body: &Value) -> String {
    if let Some(m) = body.get("model").and_then(Value::as_str) {
        return m.to_owned();
    }
    let path = target.split('?').next().unwrap_or_default();
    path.strip_prefix("/v1beta/models/")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or("mock-model")
        .to_owned()
}

async fn send_reply(
    stream: &mut TcpStream,
    provider: Provider,
    endpoint: Endpoint,
    model: &str,
    request: &Value,
    reply: Reply,
) -> std::io::Result<Flow> {
    let streaming = match endpoint {
        Endpoint::Responses => true,
        Endpoint::Messages => request.get("stream").and_then(Value::as_bool) == Some(true),
        Endpoint::GeminiStream { sse } => sse,
        _ => false,
    };
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    match reply.kind {
        ReplyKind::Status {
            code,
            retry_after,
            error_type,
            message,
            raw_body,
        } => {
            let body = raw_body.unwrap_or_else(|| {
                error_body(
                    provider,
                    code,
                    retry_after,
                    error_type.as_deref(),
                    message.as_deref(),
                )
            });
            let retry = retry_after.map(|s| s.to_string());
            let mut extra: Vec<(&str, &str)> = headers.clone();
            if let Some(r) = &retry {
                extra.push(("retry-after", r));
            }
            write_json(stream, code, &extra, &body).await?;
            Ok(Flow::KeepAlive)
        }
        ReplyKind::Text {
            text,
            delay,
            gate,
            input_tokens,
            output_tokens,
        } => {
            let usage = Usage {
                input: input_tokens,
                output: output_tokens,
            };
            let pause = Pause { delay, gate };
            if streaming {
                let events = stream_events(provider, model, &text, usage);
                write_events(stream, &headers, events, &pause).await?;
            } else {
                pause.wait().await;
                let body = json_answer(provider, endpoint, model, &text, usage);
                write_json(stream, 200, &headers, &body).await?;
            }
            Ok(Flow::KeepAlive)
        }
        ReplyKind::StreamError {
            error_type,
            message,
        } => {
            if streaming {
                let events = stream_error_events(provider, model, &error_type, &message);
                write_events(stream, &headers, events, &Pause::NONE).await?;
            } else {
                let body = error_body(provider, 500, None, Some(&error_type), Some(&message));
                write_json(stream, 500, &headers, &body).await?;
            }
            Ok(Flow::KeepAlive)
        }
        ReplyKind::Hang => {
            if streaming {
                write_sse_head(stream, &headers).await?;
                if let Some(first) = hang_first_event(provider, model) {
                    write_chunk(stream, first.as_bytes()).await?;
                }
            }
            // Never answer; end when the client goes away (or the runtime is dropped).
            let mut sink = Vec::with_capacity(4096);
            loop {
                sink.clear();
                if !matches!(stream.read_buf(&mut sink).await, Ok(n) if n > 0) {
                    break;
                }
            }
            Ok(Flow::Close)
        }
    }
}

/// Where a text reply stalls: a delay, then a gate file ([`Reply::slow`], [`Reply::held`]).
struct Pause {
    delay: Duration,
    gate: Option<std::path::PathBuf>,
}

impl Pause {
    const NONE: Pause = Pause {
        delay: Duration::ZERO,
        gate: None,
    };

    async fn wait(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(gate) = &self.gate {
            // Polled: a test creates the file from another thread or process, and 20 ms is
            // nothing next to a CLI's turn.
            while !gate.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Writes a whole event stream: head, first event, the pause, the rest, end of body.
async fn write_events(
    stream: &mut TcpStream,
    headers: &[(&str, &str)],
    events: Vec<String>,
    pause: &Pause,
) -> std::io::Result<()> {
    write_sse_head(stream, headers).await?;
    let mut events = events.into_iter();
    if let Some(first) = events.next() {
        write_chunk(stream, first.as_bytes()).await?;
    }
    pause.wait().await;
    for event in events {
        write_chunk(stream, event.as_bytes()).await?;
    }
    stream.write_all(b"0\r\n\r\n").await?;
    stream.flush().await
}

/// The event a hung stream sends before stalling (none for gemini, whose every chunk carries
/// content).
fn hang_first_event(provider: Provider, model: &str) -> Option<String> {
    match provider {
        Provider::OpenAi => Some(sse_named(
            "response.created",
            &json!({"type": "response.created",
                    "response": {"id": "resp_mock", "status": "in_progress"}}),
        )),
        Provider::Anthropic => Some(sse_named(
            "message_start",
            &anthropic_message_start(
                model,
                Usage {
                    input: 10,
                    output: 1,
                },
            ),
        )),
        Provider::Gemini => None,
    }
}

#[derive(Clone, Copy)]
struct Usage {
    input: u64,
    output: u64,
}

fn sse_named(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn sse_data(data: &Value) -> String {
    format!("data: {data}\r\n\r\n")
}

fn anthropic_message_start(model: &str, usage: Usage) -> Value {
    json!({
        "type": "message_start",
        "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": usage.input, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1}
        }
    })
}

fn gemini_chunk(model: &str, text: &str, usage: Usage) -> Value {
    json!({
        "candidates": [{
            "content": {"parts": [{"text": text}], "role": "model"},
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": {
            "promptTokenCount": usage.input,
            "candidatesTokenCount": usage.output,
            "totalTokenCount": usage.input + usage.output
        },
        "modelVersion": model,
        "responseId": "mock-response"
    })
}

/// The events of a streamed text answer, each already framed as SSE.
fn stream_events(provider: Provider, model: &str, text: &str, usage: Usage) -> Vec<String> {
    match provider {
        Provider::OpenAi => {
            let item_id = "msg_mock";
            vec![
                sse_named(
                    "response.created",
                    &json!({"type": "response.created",
                            "response": {"id": "resp_mock", "status": "in_progress"}}),
                ),
                sse_named(
                    "response.output_item.added",
                    &json!({"type": "response.output_item.added", "output_index": 0,
                            "item": {"type": "message", "id": item_id, "role": "assistant",
                                     "status": "in_progress", "content": []}}),
                ),
                sse_named(
                    "response.output_text.delta",
                    &json!({"type": "response.output_text.delta", "item_id": item_id,
                            "output_index": 0, "content_index": 0, "delta": text}),
                ),
                sse_named(
                    "response.output_item.done",
                    &json!({"type": "response.output_item.done", "output_index": 0,
                            "item": {"type": "message", "id": item_id, "role": "assistant",
                                     "status": "completed",
                                     "content": [{"type": "output_text", "text": text,
                                                  "annotations": []}]}}),
                ),
                sse_named(
                    "response.completed",
                    &json!({"type": "response.completed",
                            "response": {"id": "resp_mock", "status": "completed",
                                "usage": {"input_tokens": usage.input,
                                          "input_tokens_details": {"cached_tokens": 0},
                                          "output_tokens": usage.output,
                                          "output_tokens_details": {"reasoning_tokens": 0},
                                          "total_tokens": usage.input + usage.output}}}),
                ),
            ]
        }
        Provider::Anthropic => vec![
            sse_named("message_start", &anthropic_message_start(model, usage)),
            sse_named(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            ),
            sse_named("ping", &json!({"type": "ping"})),
            sse_named(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": text}}),
            ),
            sse_named(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ),
            sse_named(
                "message_delta",
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                        "usage": {"output_tokens": usage.output}}),
            ),
            sse_named("message_stop", &json!({"type": "message_stop"})),
        ],
        Provider::Gemini => vec![sse_data(&gemini_chunk(model, text, usage))],
    }
}

/// The events of a stream that fails in-band.
fn stream_error_events(
    provider: Provider,
    model: &str,
    error_type: &str,
    message: &str,
) -> Vec<String> {
    match provider {
        Provider::OpenAi => vec![
            sse_named(
                "response.created",
                &json!({"type": "response.created",
                        "response": {"id": "resp_mock", "status": "in_progress"}}),
            ),
            sse_named(
                "response.failed",
                &json!({"type": "response.failed",
                        "response": {"id": "resp_mock", "status": "failed",
                                     "error": {"code": error_type, "message": message}}}),
            ),
        ],
        Provider::Anthropic => vec![
            sse_named(
                "message_start",
                &anthropic_message_start(
                    model,
                    Usage {
                        input: 10,
                        output: 1,
                    },
                ),
            ),
            sse_named(
                "error",
                &json!({"type": "error", "error": {"type": error_type, "message": message}}),
            ),
        ],
        Provider::Gemini => vec![sse_data(&json!({
            "error": {"code": 500, "message": message, "status": error_type}
        }))],
    }
}

/// A non-streamed text answer.
fn json_answer(
    provider: Provider,
    endpoint: Endpoint,
    model: &str,
    text: &str,
    usage: Usage,
) -> String {
    match provider {
        Provider::OpenAi => json!({
            "id": "resp_mock", "object": "response", "status": "completed", "model": model,
            "output": [{"type": "message", "id": "msg_mock", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": usage.input, "output_tokens": usage.output,
                      "total_tokens": usage.input + usage.output}
        })
        .to_string(),
        Provider::Anthropic => json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": usage.input, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": usage.output}
        })
        .to_string(),
        Provider::Gemini => {
            let chunk = gemini_chunk(model, text, usage);
            if matches!(endpoint, Endpoint::GeminiStream { sse: false }) {
                // streamGenerateContent without alt=sse answers a JSON array of chunks.
                Value::Array(vec![chunk]).to_string()
            } else {
                chunk.to_string()
            }
        }
    }
}

/// The provider's error body for an HTTP status.
fn error_body(
    provider: Provider,
    code: u16,
    retry_after: Option<u64>,
    error_type: Option<&str>,
    message: Option<&str>,
) -> String {
    let quota = error_type == Some("insufficient_quota");
    match provider {
        Provider::OpenAi => {
            // (type, code) as the real API sends them.
            let (kind, error_code) = match error_type {
                Some(t) => (t, t),
                None => match code {
                    429 => ("requests", "rate_limit_exceeded"),
                    400 => ("invalid_request_error", "invalid_request_error"),
                    401 => ("invalid_request_error", "invalid_api_key"),
                    404 => ("invalid_request_error", "model_not_found"),
                    503 => ("service_unavailable_error", "server_is_overloaded"),
                    500..=599 => ("server_error", "server_error"),
                    _ => ("api_error", "api_error"),
                },
            };
            let default_message = if quota {
                "You exceeded your current quota, please check your plan and billing details."
                    .to_owned()
            } else if code == 429 {
                let wait =
                    retry_after.map_or(String::new(), |s| format!(" Please try again in {s}s."));
                format!("Rate limit reached for mock-model (mock server).{wait}")
            } else if code == 503 {
                "The server is overloaded or not ready yet.".to_owned()
            } else {
                "The server had an error while processing your request.".to_owned()
            };
            json!({"error": {"type": kind, "code": error_code,
                             "message": message.map_or(default_message, str::to_owned),
                             "param": null}})
            .to_string()
        }
        Provider::Anthropic => {
            let kind = match error_type {
                Some(t) if !quota => t,
                _ => match code {
                    429 => "rate_limit_error",
                    503 | 529 => "overloaded_error",
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    _ => "api_error",
                },
            };
            let default_message = match kind {
                _ if quota => "You have reached your usage limit (mock server).",
                "rate_limit_error" => {
                    "Number of requests has exceeded your rate limit (mock server)."
                }
                "overloaded_error" => "Overloaded",
                _ => "Internal server error",
            };
            json!({"type": "error",
                   "error": {"type": kind, "message": message.unwrap_or(default_message)},
                   "request_id": "req_mock"})
            .to_string()
        }
        Provider::Gemini => {
            let status = match error_type {
                Some(t) if !quota => t,
                _ => match code {
                    429 => "RESOURCE_EXHAUSTED",
                    503 => "UNAVAILABLE",
                    400 => "INVALID_ARGUMENT",
                    401 => "UNAUTHENTICATED",
                    403 => "PERMISSION_DENIED",
                    404 => "NOT_FOUND",
                    504 => "DEADLINE_EXCEEDED",
                    _ => "INTERNAL",
                },
            };
            let default_message = match status {
                _ if quota => {
                    "You exceeded your current quota, please check your plan and billing details."
                }
                "RESOURCE_EXHAUSTED" => "Resource has been exhausted (e.g. check quota).",
                "UNAVAILABLE" => "The model is overloaded. Please try again later.",
                _ => "Internal error encountered.",
            };
            let mut error = json!({"code": code,
                                   "message": message.unwrap_or(default_message),
                                   "status": status});
            if let Some(secs) = retry_after {
                error["details"] = json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{secs}s")
                }]);
            }
            json!({"error": error}).to_string()
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site Overloaded",
        _ => "Unknown",
    }
}

async fn write_json(
    stream: &mut (impl AsyncWrite + Unpin),
    code: u16,
    extra_headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        reason(code),
        body.len()
    );
    for (name, value) in extra_headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await
}

async fn write_head_only(
    stream: &mut (impl AsyncWrite + Unpin),
    code: u16,
    content_length: usize,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n\r\n",
        reason(code)
    );
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

async fn write_sse_head(
    stream: &mut (impl AsyncWrite + Unpin),
    extra_headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
         transfer-encoding: chunked\r\n",
    );
    for (name, value) in extra_headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

async fn write_chunk(stream: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    stream.write_all(data).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}

/// The providers' rate-limit response headers, as the real CLIs read them (the names were
/// found in the CLIs' bundled code; what each CLI makes of them is recorded in
/// `tests/fixtures/clis/FINDINGS.md`). Attach them with [`Reply::with_headers`].
pub mod rate_limit_headers {
    /// One window of claude's unified (subscription) limits: its claim abbreviation (`5h`,
    /// `7d`), the fraction used (0..1) and its reset (epoch seconds).
    pub struct ClaudeWindow<'a> {
        pub abbrev: &'a str,
        pub utilization: f64,
        pub resets_at: u64,
    }

    /// claude: `anthropic-ratelimit-unified-status` (`allowed`, `allowed_warning`,
    /// `rejected`), `-reset` (epoch seconds), `-representative-claim` (the window that
    /// decides: `five_hour`, `seven_day`, ...), and per window `-<abbrev>-utilization` and
    /// `-<abbrev>-reset`. claude reads them only when signed in to claude.ai (an OAuth
    /// token), never with an API key.
    pub fn claude(
        status: &str,
        claim: &str,
        resets_at: u64,
        windows: &[ClaudeWindow<'_>],
    ) -> Vec<(String, String)> {
        let p = "anthropic-ratelimit-unified";
        let mut h = vec![
            (format!("{p}-status"), status.to_owned()),
            (format!("{p}-reset"), resets_at.to_string()),
            (format!("{p}-representative-claim"), claim.to_owned()),
        ];
        for w in windows {
            h.push((
                format!("{p}-{}-utilization", w.abbrev),
                w.utilization.to_string(),
            ));
            h.push((format!("{p}-{}-reset", w.abbrev), w.resets_at.to_string()));
        }
        h
    }

    /// One codex window: percent used (0..100), its length in minutes, and its reset
    /// (epoch seconds).
    pub struct CodexWindow {
        pub used_percent: f64,
        pub window_minutes: u64,
        pub resets_at: u64,
    }

    /// codex: `x-codex-primary-used-percent`, `-primary-window-minutes`,
    /// `-primary-reset-at`, and the same for `secondary`.
    pub fn codex(primary: &CodexWindow, secondary: Option<&CodexWindow>) -> Vec<(String, String)> {
        let mut h = Vec::new();
        for (name, w) in [("primary", Some(primary)), ("secondary", secondary)] {
            let Some(w) = w else { continue };
            h.push((
                format!("x-codex-{name}-used-percent"),
                w.used_percent.to_string(),
            ));
            h.push((
                format!("x-codex-{name}-window-minutes"),
                w.window_minutes.to_string(),
            ));
            h.push((format!("x-codex-{name}-reset-at"), w.resets_at.to_string()));
        }
        h
    }
}
