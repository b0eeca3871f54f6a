//! The one way Vigil reads a duration a person wrote: `"250ms"`, `"60s"`,
//! `"1.5s"`, `"5m"`, `"2h"`, `"7d"`, or several together (`"1m30s"`).
//! `vigil.toml` and policy files both use it, so an operator learns one
//! grammar. Owns that grammar and the serde helpers for `vigil.toml`'s
//! duration fields; it never decides what a duration is for, and imports
//! nothing of Vigil.
//!
//! A bare number has no unit of its own: the caller says which one it
//! means. In `vigil.toml` it is the unit in the field's name (seconds for
//! `probe_interval_secs`, days for `keep_days`); in policy files,
//! milliseconds.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// What a bare number means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Secs,
    Hours,
    Days,
}

impl Unit {
    fn seconds(self) -> f64 {
        match self {
            Unit::Millis => 0.001,
            Unit::Secs => 1.0,
            Unit::Hours => 3600.0,
            Unit::Days => 86_400.0,
        }
    }

    /// "seconds", for messages about a bare number.
    fn plural(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Secs => "seconds",
            Unit::Hours => "hours",
            Unit::Days => "days",
        }
    }
}

/// The units a duration may be written in, with their length in seconds.
const SUFFIXES: &[(&str, f64)] = &[
    ("ms", 0.001),
    ("s", 1.0),
    ("m", 60.0),
    ("min", 60.0),
    ("h", 3600.0),
    ("d", 86_400.0),
];

fn example(text: &str) -> String {
    format!("{text:?} is not a duration like \"250ms\", \"60s\", \"5m\", \"1h\" or \"1m30s\"")
}

/// Reads `text`: one or more `<number><unit>` parts (`ms`, `s`, `m` or
/// `min`, `h`, `d`; the number may have a fraction; spaces between parts
/// are allowed), or a bare number in `bare` units.
pub fn parse(text: &str, bare: Unit) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(example(text));
    }
    if let Ok(n) = t.parse::<f64>() {
        return from_number(n, bare).map_err(|_| example(text));
    }
    let mut rest = t;
    let mut secs = 0.0_f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let n: f64 = number.parse().map_err(|_| example(text))?;
        let Some((_, scale)) = SUFFIXES.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                example(text)
            } else {
                format!(
                    "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d, as in \"250ms\", \"5m\" or \"1m30s\")"
                )
            });
        };
        secs += n * scale;
        rest = after.trim_start();
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is too long"))
}

fn from_number(n: f64, unit: Unit) -> Result<Duration, String> {
    Duration::try_from_secs_f64(n * unit.seconds()).map_err(|_| {
        format!(
            "{n} is not a number of {} Vigil can wait for",
            unit.plural()
        )
    })
}

/// A `vigil.toml` duration field: a number in `unit`, or a string in the
/// grammar of [`parse`]. `positive`: zero is refused.
fn field<'de, D: Deserializer<'de>>(
    d: D,
    unit: Unit,
    positive: bool,
) -> Result<Duration, D::Error> {
    d.deserialize_any(FieldVisitor { unit, positive })
}

struct FieldVisitor {
    unit: Unit,
    positive: bool,
}

impl FieldVisitor {
    fn refuse_zero<E: de::Error>(&self, shown: &dyn fmt::Display) -> E {
        E::custom(format!(
            "expected a positive number of {} or a duration like \"30s\", got {shown}",
            self.unit.plural()
        ))
    }

    fn number<E: de::Error>(&self, n: f64) -> Result<Duration, E> {
        if n.is_nan() || n < 0.0 || (self.positive && n == 0.0) {
            let kind = if self.positive {
                "positive"
            } else {
                "non-negative"
            };
            return Err(E::custom(format!(
                "expected a {kind} number of {} or a duration like \"30s\", got {n}",
                self.unit.plural()
            )));
        }
        from_number(n, self.unit).map_err(E::custom)
    }
}

impl Visitor<'_> for FieldVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a number of {} or a duration like \"30s\", \"5m\"",
            self.unit.plural()
        )
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        self.number(n as f64)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        self.number(n as f64)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
        self.number(n)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let d = parse(text, self.unit).map_err(E::custom)?;
        if self.positive && d.is_zero() {
            return Err(self.refuse_zero(&format_args!("{text:?}")));
        }
        Ok(d)
    }
}

/// `deserialize_with` for a positive duration whose bare numbers are
/// seconds (`10`, `0.25`, `"250ms"`, `"5m"`).
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    field(d, Unit::Secs, true)
}

/// Like [`secs`], zero allowed.
pub fn secs_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    field(d, Unit::Secs, false)
}

/// Zero or more; bare numbers are hours (`24`, `"90m"`).
pub fn hours<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    field(d, Unit::Hours, false)
}

/// Zero or more; bare numbers are days (`30`, `"12h"`).
pub fn days<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    field(d, Unit::Days, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn units_fractions_and_compounds() {
        let p = |t| parse(t, Unit::Secs).unwrap();
        assert_eq!(p("250ms"), 250 * MS);
        assert_eq!(p("60s"), Duration::from_secs(60));
        assert_eq!(p("1.5s"), 1500 * MS);
        assert_eq!(p("5m"), Duration::from_secs(300));
        assert_eq!(p("5min"), Duration::from_secs(300));
        assert_eq!(p("2h"), Duration::from_secs(7200));
        assert_eq!(p("7d"), Duration::from_secs(7 * 86_400));
        assert_eq!(p("1m30s"), Duration::from_secs(90));
        assert_eq!(p(" 1h30m "), Duration::from_secs(5400));
        assert_eq!(p("0s"), Duration::ZERO);
    }

    #[test]
    fn a_bare_number_is_in_the_callers_unit() {
        assert_eq!(parse("50", Unit::Millis).unwrap(), 50 * MS);
        assert_eq!(parse("50", Unit::Secs).unwrap(), Duration::from_secs(50));
        assert_eq!(parse("0.5", Unit::Secs).unwrap(), 500 * MS);
        assert_eq!(
            parse("2", Unit::Days).unwrap(),
            Duration::from_secs(2 * 86_400)
        );
    }

    #[test]
    fn nonsense_is_refused_saying_what_a_duration_looks_like() {
        for bad in ["", "s", "5 minutes", "1.2.3s", "-5s", "5s-", "ms5", "1e3s"] {
            let e = parse(bad, Unit::Secs).unwrap_err();
            assert!(
                e.contains("is not a duration like") || e.contains("unknown unit"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            parse("1m 30s", Unit::Secs).unwrap(),
            Duration::from_secs(90)
        );
        let e = parse("30 parsecs", Unit::Secs).unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        assert!(parse("99999999999999999999d", Unit::Secs).is_err());
        assert!(parse("-1", Unit::Secs).is_err());
    }

    #[derive(serde::Deserialize, Debug)]
    struct Fields {
        #[serde(default, deserialize_with = "secs")]
        positive: Duration,
        #[serde(default, deserialize_with = "days")]
        days: Duration,
    }

    fn fields(text: &str) -> Result<Fields, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn toml_fields_take_numbers_in_their_unit_or_strings() {
        assert_eq!(
            fields("positive = 10").unwrap().positive,
            Duration::from_secs(10)
        );
        assert_eq!(fields("positive = 0.25").unwrap().positive, 250 * MS);
        assert_eq!(
            fields("positive = \"5m\"").unwrap().positive,
            Duration::from_secs(300)
        );
        assert_eq!(
            fields("days = 30").unwrap().days,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            fields("days = \"12h\"").unwrap().days,
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(fields("days = 0").unwrap().days, Duration::ZERO);

        let e = fields("positive = 0").unwrap_err();
        assert!(e.contains("positive number of seconds"), "{e}");
        let e = fields("positive = \"0s\"").unwrap_err();
        assert!(e.contains("positive number of seconds"), "{e}");
        let e = fields("days = -1").unwrap_err();
        assert!(e.contains("non-negative number of days"), "{e}");
        let e = fields("positive = \"soon\"").unwrap_err();
        assert!(e.contains("\"soon\" is not a duration"), "{e}");
        let e = fields("positive = true").unwrap_err();
        assert!(e.contains("a number of seconds or a duration"), "{e}");
    }
}
