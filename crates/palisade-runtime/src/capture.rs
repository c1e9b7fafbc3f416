//! Per-invocation capture of guest output: `log` calls, stdout and stderr, held to the
//! invocation's byte and line budgets, with control characters escaped so that a guest can
//! never forge a log line, a terminal escape or a field separator.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use palisade_model::{LogEntry, LogLevel, LogSource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The guest wrote more log bytes or lines than its limit allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log limit exceeded: {what} (limit {limit})")]
pub struct LogLimitExceeded {
    pub what: &'static str,
    pub limit: u64,
}

/// Captured output of one invocation.
#[derive(Debug)]
pub(crate) struct Capture {
    started: Instant,
    max_bytes: u64,
    max_lines: u32,
    bytes: u64,
    entries: Vec<LogEntry>,
    /// Partial lines written to stdout and stderr, not yet ended by a newline.
    pending: [Vec<u8>; 2],
}

/// A cheap handle shared by the host functions and the stdout/stderr streams.
#[derive(Debug, Clone)]
pub(crate) struct SharedCapture(Arc<Mutex<Capture>>);

impl SharedCapture {
    pub(crate) fn new(started: Instant, max_bytes: u64, max_lines: u32) -> Self {
        Self(Arc::new(Mutex::new(Capture {
            started,
            max_bytes,
            max_lines,
            bytes: 0,
            entries: Vec::new(),
            pending: [Vec::new(), Vec::new()],
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Capture> {
        // A poisoned lock only means another thread panicked mid-push; the data is still valid.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one `log.write` call, or refuses it when it would break the budget.
    pub(crate) fn log(&self, level: LogLevel, message: &str) -> Result<(), LogLimitExceeded> {
        self.lock().push(level, LogSource::Log, message.as_bytes())
    }

    /// Appends bytes written to stdout or stderr; complete lines become entries.
    fn write_stream(&self, source: LogSource, bytes: &[u8]) -> Result<(), LogLimitExceeded> {
        let mut capture = self.lock();
        capture.charge_bytes(bytes.len() as u64)?;
        let slot = stream_slot(source);
        capture.pending[slot].extend_from_slice(bytes);
        while let Some(newline) = capture.pending[slot].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = capture.pending[slot].drain(..=newline).collect();
            capture.push_charged(stream_level(source), source, &line[..line.len() - 1])?;
        }
        Ok(())
    }

    /// Ends the capture: unterminated stdout/stderr lines become entries too.
    pub(crate) fn finish(&self) -> (Vec<LogEntry>, u64, u32) {
        let mut capture = self.lock();
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let rest = std::mem::take(&mut capture.pending[stream_slot(source)]);
            if !rest.is_empty() {
                // Over the line budget the trailing fragment is dropped; its bytes were charged.
                let _ = capture.push_charged(stream_level(source), source, &rest);
            }
        }
        let lines = u32::try_from(capture.entries.len()).unwrap_or(u32::MAX);
        (std::mem::take(&mut capture.entries), capture.bytes, lines)
    }

    /// The last few stderr lines, used to explain a trap: a Rust panic prints
    /// "panicked at FILE:LINE:COL:" and its message there before aborting.
    pub(crate) fn stderr_tail(&self) -> Option<String> {
        const LINES: usize = 3;
        let capture = self.lock();
        let pending = &capture.pending[stream_slot(LogSource::Stderr)];
        let mut lines: Vec<String> = capture
            .entries
            .iter()
            .filter(|e| e.source == LogSource::Stderr)
            .map(|e| e.message.clone())
            .chain((!pending.is_empty()).then(|| sanitize(pending)))
            .filter(|line| {
                !line.trim().is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE")
            })
            .collect();
        let keep = lines.len().saturating_sub(LINES);
        lines.drain(..keep);
        (!lines.is_empty()).then(|| lines.join(" / "))
    }

    pub(crate) fn stream(&self, source: LogSource) -> GuestStream {
        GuestStream {
            capture: self.clone(),
            source,
        }
    }
}

impl Capture {
    fn charge_bytes(&mut self, bytes: u64) -> Result<(), LogLimitExceeded> {
        let total = self.bytes.saturating_add(bytes);
        if total > self.max_bytes {
            return Err(LogLimitExceeded {
                what: "bytes",
                limit: self.max_bytes,
            });
        }
        self.bytes = total;
        Ok(())
    }

    fn push(
        &mut self,
        level: LogLevel,
        source: LogSource,
        message: &[u8],
    ) -> Result<(), LogLimitExceeded> {
        self.check_line_budget()?;
        self.charge_bytes(message.len() as u64)?;
        self.push_charged(level, source, message)
    }

    fn check_line_budget(&self) -> Result<(), LogLimitExceeded> {
        if self.entries.len() >= self.max_lines as usize {
            return Err(LogLimitExceeded {
                what: "lines",
                limit: u64::from(self.max_lines),
            });
        }
        Ok(())
    }

    fn push_charged(
        &mut self,
        level: LogLevel,
        source: LogSource,
        message: &[u8],
    ) -> Result<(), LogLimitExceeded> {
        self.check_line_budget()?;
        let kept = sanitize(message);
        // The budget counts the bytes kept: the raw bytes were charged, escaping grows them
        // (up to 10x for `\u{10ffff}`), so the growth is charged too.
        self.charge_bytes((kept.len() as u64).saturating_sub(message.len() as u64))?;
        let elapsed_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.entries.push(LogEntry {
            level,
            source,
            message: kept,
            elapsed_us,
            unix_ms,
        });
        Ok(())
    }
}

fn stream_slot(source: LogSource) -> usize {
    usize::from(source == LogSource::Stderr)
}

fn stream_level(source: LogSource) -> LogLevel {
    match source {
        LogSource::Stderr => LogLevel::Warn,
        LogSource::Stdout | LogSource::Log => LogLevel::Info,
    }
}

/// Escapes everything that could forge structure in a log line: control characters
/// (newlines, escape sequences, NUL, C1 controls), Unicode line and paragraph separators,
/// bidi overrides and isolates, invisible format characters (zero-width spaces and joiners,
/// word joiners, BOM, tags, ...) and invalid UTF-8.
pub fn sanitize(bytes: &[u8]) -> String {
    sanitize_bounded(bytes, usize::MAX)
}

/// Appended to a line [`sanitize_bounded`] cut.
pub const CUT_MARKER: &str = " [cut]";

/// [`sanitize`], then cut to at most `max_bytes` bytes of output (escapes can make the text up
/// to 6 times longer, so the bound applies after escaping). A cut line ends with
/// [`CUT_MARKER`], counted in the bound, and never ends inside an escape sequence or a
/// character.
pub fn sanitize_bounded(bytes: &[u8], max_bytes: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len().min(max_bytes));
    let budget = max_bytes.saturating_sub(CUT_MARKER.len());
    // Output length at the last escape-unit boundary that still leaves room for the marker.
    let mut fits = 0;
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
        if out.len() <= budget {
            fits = out.len();
        }
        if out.len() > max_bytes {
            out.truncate(fits);
            out.push_str(CUT_MARKER);
            return out;
        }
    }
    out
}

/// Characters escaped besides `\`, `\n`, `\r` and `\t`: every `Cc` control (C0, DEL and C1
/// U+0080..U+009F), the line and paragraph separators (`Zl`, `Zp`), every `Cf` format
/// character (zero-width space/joiners, LRM/RLM/ALM, bidi embeddings, overrides and isolates,
/// word joiner and invisible operators, BOM, Mongolian vowel separator, interlinear
/// annotation, tags, ...), and a few invisible fillers.
pub fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061c}'
                | '\u{06dd}'
                | '\u{070f}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08e2}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

/// The guest's stdout or stderr, charged to the invocation's log budget.
#[derive(Debug, Clone)]
pub(crate) struct GuestStream {
    capture: SharedCapture,
    source: LogSource,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.capture
            .write_stream(self.source, &bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = self
            .capture
            .write_stream(self.source, buf)
            .map(|()| buf.len())
            .map_err(std::io::Error::other);
        std::task::Poll::Ready(result)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_forgery_attempts() {
        assert_eq!(
            sanitize(b"ok\n{\"level\":\"error\"}"),
            "ok\\n{\"level\":\"error\"}"
        );
        assert_eq!(sanitize(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(
            sanitize("a\u{2028}b\u{202e}c".as_bytes()),
            "a\\u{2028}b\\u{202e}c"
        );
        assert_eq!(sanitize(b"bad \xff utf8"), "bad \u{fffd} utf8");
        assert_eq!(sanitize(b"back\\slash"), "back\\\\slash");
    }

    #[test]
    fn sanitize_escapes_each_invisible_bidi_separator_and_c1_character() {
        let mut chars: Vec<char> = Vec::new();
        chars.extend('\u{200b}'..='\u{200f}');
        chars.extend('\u{202a}'..='\u{202e}');
        chars.extend('\u{2060}'..='\u{2064}');
        chars.extend('\u{2066}'..='\u{2069}');
        chars.extend(['\u{061c}', '\u{feff}', '\u{180e}', '\u{2028}', '\u{2029}']);
        chars.extend([
            '\u{00ad}',
            '\u{0600}',
            '\u{06dd}',
            '\u{070f}',
            '\u{e0001}',
            '\u{e0041}',
        ]);
        chars.extend('\u{0080}'..='\u{009f}');
        for c in chars {
            let input = format!("a{c}b");
            let expected = format!("a\\u{{{:x}}}b", u32::from(c));
            assert_eq!(
                sanitize(input.as_bytes()),
                expected,
                "U+{:04X}",
                u32::from(c)
            );
        }
        // Visible text, including non-Latin scripts and emoji, is kept as it is.
        assert_eq!(sanitize("héllo \u{202b}".as_bytes()), "héllo \\u{202b}");
        assert_eq!(
            sanitize("日本語 🙂 العربية".as_bytes()),
            "日本語 🙂 العربية"
        );
    }

    #[test]
    fn sanitize_bounded_cuts_after_escaping_a_line_grown_6x() {
        const BOUND: usize = 2048;
        // Each ESC byte becomes the 6 bytes `\u{1b}`.
        let line = vec![0x1b_u8; BOUND];
        assert_eq!(sanitize(&line).len(), 6 * BOUND);
        let cut = sanitize_bounded(&line, BOUND);
        assert!(cut.len() <= BOUND, "{} > {BOUND}", cut.len());
        assert!(cut.ends_with(CUT_MARKER));
        let body = &cut[..cut.len() - CUT_MARKER.len()];
        assert!(body.len() > BOUND - CUT_MARKER.len() - 6);
        // Cut between escapes, never inside one.
        assert_eq!(body.len() % 6, 0);
        assert!(body.split_inclusive('}').all(|u| u == "\\u{1b}"));
        // A line that fits after escaping is not cut.
        assert_eq!(sanitize_bounded(b"\x1bab", 8), "\\u{1b}ab");
        assert_eq!(sanitize_bounded(b"\x1babc", 8), CUT_MARKER);
    }

    #[test]
    fn byte_and_line_budgets_are_enforced() {
        let capture = SharedCapture::new(Instant::now(), 10, 2);
        assert!(capture.log(LogLevel::Info, "12345").is_ok());
        assert_eq!(
            capture.log(LogLevel::Info, "123456"),
            Err(LogLimitExceeded {
                what: "bytes",
                limit: 10
            })
        );
        assert!(capture.log(LogLevel::Info, "1").is_ok());
        assert_eq!(
            capture.log(LogLevel::Info, "2"),
            Err(LogLimitExceeded {
                what: "lines",
                limit: 2
            })
        );
        let (entries, bytes, lines) = capture.finish();
        assert_eq!((entries.len(), bytes, lines), (2, 6, 2));
    }

    #[test]
    fn the_byte_budget_counts_bytes_after_escaping() {
        // 100 escape characters are 100 raw bytes but 600 kept (`\u{1b}` each).
        let capture = SharedCapture::new(Instant::now(), 599, 10);
        let escapes = "\u{1b}".repeat(100);
        assert_eq!(
            capture.log(LogLevel::Info, &escapes),
            Err(LogLimitExceeded {
                what: "bytes",
                limit: 599
            })
        );
        let capture = SharedCapture::new(Instant::now(), 600, 10);
        assert!(capture.log(LogLevel::Info, &escapes).is_ok());
        let (entries, bytes, _) = capture.finish();
        assert_eq!(bytes, 600);
        assert_eq!(entries[0].message.len(), 600);
    }

    #[test]
    fn streams_split_into_lines() {
        let capture = SharedCapture::new(Instant::now(), 100, 10);
        assert!(
            capture
                .write_stream(LogSource::Stderr, b"panicked at x\nnote: ")
                .is_ok()
        );
        assert!(
            capture
                .write_stream(LogSource::Stderr, b"backtrace")
                .is_ok()
        );
        assert_eq!(
            capture.stderr_tail().as_deref(),
            Some("panicked at x / note: backtrace")
        );
        let (entries, _, _) = capture.finish();
        let messages: Vec<_> = entries.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["panicked at x", "note: backtrace"]);
    }
}
