//! Bounds on every guest-controlled value that leaves an invocation: the error message, the
//! output's content type and body, and the log. The runtime applies them where the values
//! are made; the supervisor checks them again on every outcome a worker sends, because a
//! hostile worker can send anything.

use palisade_model::{Limits, Outcome, Usage};

use crate::capture::must_escape;

/// Longest error message an invocation reports (bytes, after escaping, marker included).
pub const ERROR_MESSAGE_BYTES: usize = 4096;

/// Longest content type an output may carry (bytes).
pub const CONTENT_TYPE_BYTES: usize = 256;

/// An already escaped message cut to [`ERROR_MESSAGE_BYTES`] at a character boundary, with
/// the cut marker.
pub fn bound_message(mut message: String) -> String {
    use crate::capture::CUT_MARKER;
    if message.len() <= ERROR_MESSAGE_BYTES {
        return message;
    }
    let mut end = ERROR_MESSAGE_BYTES - CUT_MARKER.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(CUT_MARKER);
    message
}

/// Why a content type is refused, if it is: longer than [`CONTENT_TYPE_BYTES`], or not a
/// header value made of visible ASCII and spaces.
pub fn content_type_problem(content_type: &str) -> Option<String> {
    if content_type.len() > CONTENT_TYPE_BYTES {
        return Some(format!(
            "the content type is {} bytes; the limit is {CONTENT_TYPE_BYTES}",
            content_type.len()
        ));
    }
    if !content_type
        .bytes()
        .all(|b| b == b' ' || b.is_ascii_graphic())
    {
        return Some("the content type holds characters a header value cannot".into());
    }
    None
}

/// Checks an outcome against the bounds and `limits`, as the supervisor does with what a
/// worker sends: output and content type, the error message, the log's lines, bytes and
/// escaping. `Err` names the first violation. Usage the worker reports is clamped to what the
/// limits allow and recomputed where the supervisor can see the truth.
pub fn check_outcome(outcome: &mut Outcome, limits: &Limits) -> Result<(), String> {
    match &outcome.result {
        Ok(output) => {
            if output.body.len() as u64 > limits.output_bytes {
                return Err(format!(
                    "an output of {} bytes, over its limit of {}",
                    output.body.len(),
                    limits.output_bytes
                ));
            }
            if let Some(problem) = content_type_problem(&output.content_type) {
                return Err(problem);
            }
        }
        Err(error) => {
            if error.message.len() > ERROR_MESSAGE_BYTES {
                return Err(format!(
                    "an error message of {} bytes, over {ERROR_MESSAGE_BYTES}",
                    error.message.len()
                ));
            }
            if error.message.chars().any(must_escape) {
                return Err("an error message with unescaped control characters".into());
            }
        }
    }
    if outcome.logs.len() > limits.log_lines as usize {
        return Err(format!(
            "{} log lines, over its limit of {}",
            outcome.logs.len(),
            limits.log_lines
        ));
    }
    let log_bytes: u64 = outcome.logs.iter().map(|l| l.message.len() as u64).sum();
    if log_bytes > limits.log_bytes {
        return Err(format!(
            "{log_bytes} log bytes, over its limit of {}",
            limits.log_bytes
        ));
    }
    if outcome
        .logs
        .iter()
        .any(|l| l.message.chars().any(must_escape))
    {
        return Err("a log line with unescaped control characters".into());
    }
    let reported = outcome.usage;
    outcome.usage = Usage {
        fuel_consumed: reported.fuel_consumed.min(limits.fuel),
        peak_memory_bytes: reported.peak_memory_bytes.min(limits.memory_bytes),
        output_bytes: outcome.result.as_ref().map_or(0, |o| o.body.len() as u64),
        log_bytes: reported.log_bytes.min(limits.log_bytes),
        log_lines: reported.log_lines.min(limits.log_lines),
        input_bytes: reported.input_bytes.min(limits.input_bytes),
        ..reported
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{ErrorKind, InvocationError, LogEntry, LogLevel, LogSource, Output};

    fn ok(body: usize, content_type: &str) -> Outcome {
        Outcome {
            result: Ok(Output {
                body: vec![b'x'; body],
                content_type: content_type.into(),
            }),
            usage: Usage::default(),
            logs: Vec::new(),
            isolation: Default::default(),
        }
    }

    #[test]
    fn every_guest_controlled_value_is_held_to_its_bound() {
        let limits = Limits {
            output_bytes: 10,
            log_lines: 2,
            log_bytes: 8,
            ..Limits::DEFAULT
        };
        assert!(check_outcome(&mut ok(10, "text/plain"), &limits).is_ok());
        assert!(check_outcome(&mut ok(11, "text/plain"), &limits).is_err());
        let long = "a".repeat(CONTENT_TYPE_BYTES + 1);
        assert!(check_outcome(&mut ok(1, &long), &limits).is_err());
        assert!(check_outcome(&mut ok(1, "text/plain\r\nx: y"), &limits).is_err());
        let cut = bound_message("é".repeat(ERROR_MESSAGE_BYTES));
        assert!(cut.len() <= ERROR_MESSAGE_BYTES && cut.ends_with(crate::capture::CUT_MARKER));

        let mut failed = Outcome::rejected(InvocationError::new(
            ErrorKind::GuestError,
            "e".repeat(ERROR_MESSAGE_BYTES + 1),
        ));
        assert!(check_outcome(&mut failed, &limits).is_err());
        let mut forged = Outcome::rejected(InvocationError::new(
            ErrorKind::GuestError,
            "a\nlevel=error",
        ));
        assert!(check_outcome(&mut forged, &limits).is_err());

        let line = |message: &str| LogEntry {
            level: LogLevel::Info,
            source: LogSource::Log,
            message: message.into(),
            elapsed_us: 0,
            unix_ms: 0,
        };
        let mut logged = ok(1, "text/plain");
        logged.logs = vec![line("1234"), line("5678")];
        logged.usage.peak_memory_bytes = u64::MAX;
        assert!(check_outcome(&mut logged, &limits).is_ok());
        assert_eq!(logged.usage.peak_memory_bytes, limits.memory_bytes);
        logged.logs.push(line("9"));
        assert!(check_outcome(&mut logged, &limits).is_err());
        logged.logs = vec![line("123456789")];
        assert!(check_outcome(&mut logged, &limits).is_err());
        logged.logs = vec![line("\u{202e}")];
        assert!(check_outcome(&mut logged, &limits).is_err());
    }
}
