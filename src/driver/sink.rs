//! Where an attempt's output goes: the prompt's log (every byte), the scanner (markers,
//! errors, session ids, usage), a verify command's facts and, in the single layout, the
//! terminal echo.

use super::gate_output::GateOutput;
use crate::agents::self_retry::SelfRetry;
use crate::agents::{Scanner, Stream};
use crate::console::echo::Echo;
use crate::effects::outlog::LogWriter;
use crate::effects::process::{OutputSink, SinkAction};

pub struct Sink {
    pub log: LogWriter,
    pub scanner: Scanner,
    pub echo: Option<Echo>,
    /// A stop pattern ends the attempt at once (`kill_on_stop_pattern`).
    pub kill_on_error: bool,
    /// The log could not be written: the attempt is ended and the run stops with why.
    pub log_error: Option<String>,
    /// The latest informational notice (a CLI's own retry) for `state.json`.
    pub notice: Option<String>,
    /// A verify command's output facts (pass, count, tail), when this sink serves one.
    pub gate: Option<GateOutput>,
    /// The CLI's own retries go to the supervisor as they happen (issue 18), not only at
    /// the attempt's end.
    pub retries: Option<tokio::sync::mpsc::UnboundedSender<SelfRetry>>,
}

impl Sink {
    pub fn new(log: LogWriter, scanner: Scanner, echo: bool, kill_on_error: bool) -> Self {
        Sink {
            log,
            scanner,
            echo: echo.then(Echo::default),
            kill_on_error,
            log_error: None,
            notice: None,
            gate: None,
            retries: None,
        }
    }
}

impl OutputSink for Sink {
    fn chunk(&mut self, stream: Stream, data: &[u8]) -> SinkAction {
        if let Err(e) = self.log.chunk(stream, data)
            && self.log_error.is_none()
        {
            self.log_error = Some(format!("cannot write {}: {e}", self.log.path().display()));
        }
        if let Some(echo) = &mut self.echo {
            echo.feed(stream, data);
        }
        if let Some(gate) = &mut self.gate {
            gate.feed(stream, data);
        }
        let news = self.scanner.feed(stream, data);
        self.tell(news.retry);
        if news.notice.is_some() {
            self.notice = news.notice;
        }
        if self.log_error.is_some() || (news.error && self.kill_on_error) {
            SinkAction::Terminate
        } else {
            SinkAction::Continue
        }
    }

    fn eof(&mut self, stream: Stream) {
        let _ = self.log.eof(stream);
        if let Some(echo) = &mut self.echo {
            echo.finish(stream);
        }
        if let Some(gate) = &mut self.gate {
            gate.finish_stream(stream);
        }
        let news = self.scanner.finish_stream(stream);
        self.tell(news.retry);
        if news.notice.is_some() {
            self.notice = news.notice;
        }
    }
}

impl Sink {
    fn tell(&self, retry: Option<SelfRetry>) {
        if let (Some(tx), Some(r)) = (&self.retries, retry) {
            // The supervisor may be gone (the run ended): the retry is then nobody's news.
            let _ = tx.send(r);
        }
    }
}
