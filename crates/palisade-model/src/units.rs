//! Human-friendly units in manifests and policies: byte sizes ("64 KiB") and durations ("250ms").

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a byte size or duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a number followed by a known unit.
    #[error("`{text}` is not a {what}: expected {expected}")]
    Malformed {
        text: String,
        what: &'static str,
        expected: &'static str,
    },
    /// The value does not fit in 64 bits.
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// A number of bytes, written in manifests as an integer or as text with a unit
/// (`B`, `KiB`, `MiB`, `GiB`, and the decimal `KB`, `MB`, `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "u64")]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"64 KiB"`, `"1MiB"`, `"512"`, `"2 MB"`.
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let malformed = || UnitError::Malformed {
            text: text.to_owned(),
            what: "byte size",
            expected: "a whole number with an optional unit B, KiB, MiB, GiB, KB, MB or GB (e.g. \"64 KiB\")",
        };
        let (number, unit) = split_number(text.trim()).ok_or_else(malformed)?;
        let factor: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(malformed()),
        };
        number
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| UnitError::Overflow(text.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (factor, unit) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{} {unit}", self.0 / factor);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> u64 {
        size.0
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Number(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for ByteSize {
    type Error = UnitError;
    fn try_from(repr: SizeRepr) -> Result<Self, UnitError> {
        match repr {
            SizeRepr::Number(n) => Ok(Self(n)),
            SizeRepr::Text(text) => Self::parse(&text),
        }
    }
}

/// A span of time, written as text with a unit: `"250ms"`, `"2s"`, `"1m"`, `"500us"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DurationSpec(pub Duration);

impl DurationSpec {
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let malformed = || UnitError::Malformed {
            text: text.to_owned(),
            what: "duration",
            expected: "a whole number with a unit us, ms, s or m (e.g. \"250ms\")",
        };
        let (number, unit) = split_number(text.trim()).ok_or_else(malformed)?;
        let overflow = || UnitError::Overflow(text.to_owned());
        let duration = match unit {
            "us" | "µs" => Duration::from_micros(number),
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" | "min" => Duration::from_secs(number.checked_mul(60).ok_or_else(overflow)?),
            _ => return Err(malformed()),
        };
        Ok(Self(duration))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        if micros.is_multiple_of(1_000_000) {
            write!(f, "{}s", micros / 1_000_000)
        } else if micros.is_multiple_of(1_000) {
            write!(f, "{}ms", micros / 1_000)
        } else {
            write!(f, "{micros}us")
        }
    }
}

impl TryFrom<String> for DurationSpec {
    type Error = UnitError;
    fn try_from(text: String) -> Result<Self, UnitError> {
        Self::parse(&text)
    }
}

impl From<DurationSpec> for String {
    fn from(duration: DurationSpec) -> String {
        duration.to_string()
    }
}

/// Splits `"64 KiB"` into `(64, "KiB")`; underscores in the number are allowed.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let digits: String = text[..digits_end].chars().filter(|c| *c != '_').collect();
    if digits.is_empty() {
        return None;
    }
    let number = digits.parse().ok()?;
    Some((number, text[digits_end..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        assert_eq!(ByteSize::parse("64 KiB"), Ok(ByteSize(65_536)));
        assert_eq!(ByteSize::parse("1MiB"), Ok(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert_eq!(ByteSize::parse("2 MB"), Ok(ByteSize(2_000_000)));
        assert_eq!(ByteSize::parse("1_024 B"), Ok(ByteSize(1024)));
    }

    #[test]
    fn bad_byte_sizes_are_typed_errors() {
        assert!(matches!(
            ByteSize::parse("lots"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            ByteSize::parse("12 parsecs"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            ByteSize::parse("-1 KiB"),
            Err(UnitError::Malformed { .. })
        ));
        assert_eq!(
            ByteSize::parse("99999999999999999 GiB"),
            Err(UnitError::Overflow("99999999999999999 GiB".into()))
        );
        assert!(matches!(
            ByteSize::parse("999999999999999999999999"),
            Err(UnitError::Malformed { .. })
        ));
    }

    #[test]
    fn durations_parse_and_display() {
        assert_eq!(
            DurationSpec::parse("250ms").map(|d| d.0),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            DurationSpec::parse("2 s").map(|d| d.0),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(
            DurationSpec::parse("1m").map(|d| d.0),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            DurationSpec(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(DurationSpec(Duration::from_secs(3)).to_string(), "3s");
        assert!(DurationSpec::parse("soon").is_err());
        assert!(DurationSpec::parse("5 fortnights").is_err());
    }

    #[test]
    fn byte_size_display_picks_the_largest_exact_unit() {
        assert_eq!(ByteSize::mib(64).to_string(), "64 MiB");
        assert_eq!(ByteSize(1536).to_string(), "1536 B");
        assert_eq!(ByteSize::kib(3).to_string(), "3 KiB");
    }
}
