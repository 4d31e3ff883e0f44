//! Lines of the status table as text with a meaning per span (a [`Tone`]), so widths are
//! measured and cuts made on the plain text, and escape sequences are added only when the
//! line is finally written, only when colour is on. The text put in a span is already
//! sanitised (D35); colour never comes from agent text.
//!
//! anstyle renders the styles: pure ANSI, no global switch and no environment lookup of
//! its own, so `--color always` means always (crossterm's `style` drops colours whenever
//! `NO_COLOR` is set, whatever the flag says). clap already builds it.

use std::io::IsTerminal;

use anstyle::{AnsiColor, Effects, Style};

/// What a span means to the person reading the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tone {
    #[default]
    Plain,
    /// A live run waits for a person (an answer, an approval).
    Person,
    /// Its supervisor is gone.
    Stale,
    /// The run failed, or its state cannot be read.
    Error,
    /// Stopped by a breaker or budget, retrying, paused: not failed, not moving either.
    Warn,
    /// Running as it should.
    Running,
    /// Over as asked, or interrupted: history.
    Finished,
    /// A failed run's own words under its row.
    Detail,
}

impl Tone {
    pub fn style(self) -> Style {
        let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
        match self {
            Tone::Plain => Style::new(),
            Tone::Person => fg(AnsiColor::Magenta).bold(),
            Tone::Stale => fg(AnsiColor::Yellow).bold(),
            Tone::Error => fg(AnsiColor::Red).bold(),
            Tone::Warn => fg(AnsiColor::Yellow),
            Tone::Running => fg(AnsiColor::Green),
            Tone::Finished => Style::new().dimmed(),
            Tone::Detail => fg(AnsiColor::Red),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub text: String,
    pub tone: Tone,
}

/// One line of output: spans of plain text, each with its tone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    pub spans: Vec<Span>,
}

impl From<String> for Line {
    fn from(text: String) -> Self {
        Line::plain(text)
    }
}

impl From<&str> for Line {
    fn from(text: &str) -> Self {
        Line::plain(text)
    }
}

impl Line {
    pub fn plain(text: impl Into<String>) -> Self {
        let mut l = Line::default();
        l.push(text, Tone::Plain);
        l
    }

    pub fn push(&mut self, text: impl Into<String>, tone: Tone) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.spans.last_mut() {
            Some(last) if last.tone == tone => last.text.push_str(&text),
            _ => self.spans.push(Span { text, tone }),
        }
    }

    /// The text without any styling: what widths are measured on.
    pub fn text(&self) -> String {
        self.spans.iter().map(|s| s.text.as_str()).collect()
    }

    /// Width in characters (cells are counted as the table counts them).
    pub fn width(&self) -> usize {
        self.spans.iter().map(|s| s.text.chars().count()).sum()
    }

    /// The first `width` characters, styles kept: a cut never lands inside an escape
    /// sequence because there is none yet.
    pub fn clipped(&self, width: usize) -> Line {
        let mut out = Line::default();
        let mut left = width;
        for s in &self.spans {
            if left == 0 {
                break;
            }
            let part: String = s.text.chars().take(left).collect();
            left -= part.chars().count();
            out.push(part, s.tone);
        }
        out
    }

    /// Without trailing whitespace (across spans).
    pub fn trim_end(mut self) -> Line {
        while let Some(last) = self.spans.last_mut() {
            let kept = last.text.trim_end().len();
            if kept == 0 {
                self.spans.pop();
            } else {
                last.text.truncate(kept);
                break;
            }
        }
        self
    }

    /// Spaces up to `width` characters (a selected row's bar reaches the edge).
    pub fn padded(mut self, width: usize) -> Line {
        let w = self.width();
        if w < width {
            self.push(" ".repeat(width - w), Tone::Plain);
        }
        self
    }

    /// The line as written: each span in its tone's style when `color` is on, all of it in
    /// reverse video when `selected` (a selection must show without colour too: reverse
    /// is not a colour, so NO_COLOR keeps it).
    pub fn render(&self, color: bool, selected: bool) -> String {
        let mut out = String::new();
        for s in &self.spans {
            let mut style = if color { s.tone.style() } else { Style::new() };
            if selected {
                style = style.effects(style.get_effects() | Effects::INVERT);
            }
            if style == Style::new() {
                out.push_str(&s.text);
            } else {
                out.push_str(&format!("{style}{}{style:#}", s.text));
            }
        }
        out
    }
}

/// Colour on or off: `always` and `never` as said; `auto` only when stdout is a terminal
/// and `NO_COLOR` is unset or empty (no-color.org).
pub fn use_color(
    choice: clap::ColorChoice,
    stdout_is_terminal: bool,
    no_color: Option<&str>,
) -> bool {
    match choice {
        clap::ColorChoice::Always => true,
        clap::ColorChoice::Never => false,
        clap::ColorChoice::Auto => stdout_is_terminal && no_color.is_none_or(str::is_empty),
    }
}

/// [`use_color`] for this process.
pub fn color_for_stdout(choice: clap::ColorChoice) -> bool {
    let no_color = std::env::var_os("NO_COLOR");
    use_color(
        choice,
        std::io::stdout().is_terminal(),
        no_color.as_deref().map(|v| v.to_str().unwrap_or("1")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_colours_only_a_terminal_without_no_color() {
        use clap::ColorChoice::*;
        assert!(use_color(Auto, true, None));
        assert!(use_color(Auto, true, Some("")));
        assert!(!use_color(Auto, true, Some("1")));
        assert!(!use_color(Auto, false, None));
        assert!(use_color(Always, false, Some("1")));
        assert!(!use_color(Never, true, None));
    }

    #[test]
    fn spans_render_in_their_tone_and_plain_without_colour() {
        let mut l = Line::plain("a  ");
        l.push("stale", Tone::Stale);
        l.push("  b", Tone::Plain);
        assert_eq!(l.text(), "a  stale  b");
        assert_eq!(l.width(), 11);
        assert_eq!(l.render(false, false), "a  stale  b");
        assert_eq!(l.render(true, false), "a  \x1b[1m\x1b[33mstale\x1b[0m  b");
        assert_eq!(
            l.render(false, true),
            "\x1b[7ma  \x1b[0m\x1b[7mstale\x1b[0m\x1b[7m  b\x1b[0m"
        );
        assert_eq!(
            Line::plain("x").render(true, true),
            "\x1b[7mx\x1b[0m",
            "a selected plain span is reversed"
        );
    }

    #[test]
    fn clipping_counts_characters_of_the_text_never_escapes() {
        let mut l = Line::plain("ab");
        l.push("éèê", Tone::Error);
        l.push("z", Tone::Plain);
        let c = l.clipped(4);
        assert_eq!(c.text(), "abéè");
        assert_eq!(c.render(true, false), "ab\x1b[1m\x1b[31méè\x1b[0m");
        assert_eq!(l.clipped(0), Line::default());
        assert_eq!(l.clipped(2).padded(5).text(), "ab   ");
    }
}
