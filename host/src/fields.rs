//! The shapes of values in the files Vigil reads (`vigil.toml`, policy
//! files, scenarios, journals): durations, sizes, web addresses, paths
//! relative to the file being read, and a position as `file:line:col`.
//! Each is parsed in one place, here. Durations have one grammar for every
//! file (`"250ms"`, `"60s"`, `"1.5s"`, `"5m"`, `"7d"`, `"1m30s"`), so an
//! operator learns it once; only what a bare number means differs (the
//! unit in a `vigil.toml` field's name, milliseconds in policy files).
//!
//! Plain types and functions that import nothing of Vigil's: a module that
//! owns a section of `vigil.toml` (`backup`, `webhook`, `browser`, ...)
//! uses them without importing `config`, which imports those sections.

use std::cell::RefCell;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// What a bare number in a duration means. A written unit (`"30s"`) always
/// wins; a bare one has none of its own, so the caller says which it means:
/// in `vigil.toml` the unit in the field's name (seconds for
/// `probe_interval_secs`, days for `keep_days`), in policy files,
/// scenarios and journals milliseconds.
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
const DURATION_UNITS: &[(&str, f64)] = &[
    ("ms", 0.001),
    ("s", 1.0),
    ("m", 60.0),
    ("min", 60.0),
    ("h", 3600.0),
    ("d", 86_400.0),
];

fn not_a_duration(text: &str) -> String {
    format!("{text:?} is not a duration like \"250ms\", \"60s\", \"5m\", \"1h\" or \"1m30s\"")
}

/// A duration as a person writes it, the one grammar of every file Vigil
/// reads: one or more `<number><unit>` parts (`ms`, `s`, `m` or `min`,
/// `h`, `d`; the number may have a fraction; spaces between parts are
/// allowed), as in `"250ms"`, `"1.5s"`, `"5m"`, `"7d"`, `"1m30s"`; or a
/// bare number in `bare` units.
pub fn parse_duration_in(text: &str, bare: Unit) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(not_a_duration(text));
    }
    if let Ok(n) = t.parse::<f64>() {
        return duration_of(n, bare).map_err(|_| not_a_duration(text));
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
        let n: f64 = number.parse().map_err(|_| not_a_duration(text))?;
        let Some((_, scale)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                not_a_duration(text)
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

/// A duration in policy files, scenarios and journals: the grammar of
/// [`parse_duration_in`], a bare number being milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_in(text, Unit::Millis)
}

fn duration_of(n: f64, unit: Unit) -> Result<Duration, String> {
    Duration::try_from_secs_f64(n * unit.seconds()).map_err(|_| {
        format!(
            "{n} is not a number of {} Vigil can wait for",
            unit.plural()
        )
    })
}

/// A duration as `parse_duration` reads it, in its shortest exact form
/// ("90s", "1500ms", "2h").
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms > 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A size: "16MiB", "512KiB", "1GiB", or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"16MiB\""))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A `vigil.toml` duration field: a number in `unit`, or a string in the
/// grammar of [`parse_duration_in`]. `positive`: zero is refused.
fn duration_field<'de, D: Deserializer<'de>>(
    d: D,
    unit: Unit,
    positive: bool,
) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationField { unit, positive })
}

struct DurationField {
    unit: Unit,
    positive: bool,
}

impl DurationField {
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
        duration_of(n, self.unit).map_err(E::custom)
    }
}

impl Visitor<'_> for DurationField {
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
        let d = parse_duration_in(text, self.unit).map_err(E::custom)?;
        if self.positive && d.is_zero() {
            return Err(E::custom(format!(
                "expected a positive number of {} or a duration like \"30s\", got {text:?}",
                self.unit.plural()
            )));
        }
        Ok(d)
    }
}

/// `deserialize_with` for a positive duration whose bare numbers are
/// seconds (`10`, `0.25`, `"250ms"`, `"5m"`), as the `*_secs` fields of
/// `vigil.toml` take them.
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, Unit::Secs, true)
}

/// Like [`secs`], zero allowed.
pub fn secs_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, Unit::Secs, false)
}

/// Zero or more; bare numbers are hours (`24`, `"90m"`).
pub fn hours<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, Unit::Hours, false)
}

/// Zero or more; bare numbers are days (`30`, `"12h"`).
pub fn days<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, Unit::Days, false)
}

/// A positive duration whose bare numbers are seconds, as a field type
/// (for optional fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(Duration);

impl Seconds {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for Seconds {
    fn from(d: Duration) -> Self {
        Seconds(d)
    }
}

/// Written as a number of seconds, which reads back the same.
impl serde::Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        secs(d).map(Seconds)
    }
}

/// Where in a file something is: shown as `file:line:col` (1-based, the
/// column in characters), the one form every error about a file uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The position of byte `offset` of `text`, the content of `file`.
    pub fn of(file: &Path, text: &str, offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: file.to_path_buf(),
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

thread_local! {
    /// The folder relative paths are resolved against while a file is
    /// being deserialized. A thread-local rather than a parameter so that
    /// a section is a plain `Deserialize` struct.
    static BASE_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs `f` (a deserialization) with relative paths resolved against
/// `base`.
pub fn with_base_dir<T>(base: &Path, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<PathBuf>);
    impl Drop for Reset {
        fn drop(&mut self) {
            BASE_DIR.with(|b| *b.borrow_mut() = self.0.take());
        }
    }
    let previous = BASE_DIR.with(|b| b.borrow_mut().replace(base.to_path_buf()));
    let _reset = Reset(previous);
    f()
}

/// `p` made absolute against the folder of the file being read (or the
/// current directory outside of [`with_base_dir`]).
pub fn resolve(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let base = BASE_DIR
        .with(|b| b.borrow().clone())
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    normalize(&base.join(p))
}

/// Drops `.` and folds `..` lexically, so logs show `/srv/vigil/data`
/// rather than `/srv/vigil/./data`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `deserialize_with` for a path resolved against the file's folder.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let p = PathBuf::deserialize(d)?;
    Ok(resolve(&p))
}

/// Like [`path`], for an optional field.
pub fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let p = Option::<PathBuf>::deserialize(d)?;
    Ok(p.map(|p| resolve(&p)))
}

/// `Deserialize` for a type read from a string with its `FromStr`, whose
/// error becomes the message (with the value's line and column).
pub fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// A web address Vigil opens or posts to (`http` or `https`).
#[derive(Clone, PartialEq, Eq)]
pub struct AppUrl(url::Url);

impl AppUrl {
    pub fn get(&self) -> &url::Url {
        &self.0
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for AppUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("url {s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url {s:?} must start with http:// or https://"));
        }
        Ok(Self(url))
    }
}

impl fmt::Debug for AppUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for AppUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for AppUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for AppUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_every_unit_and_print_back_the_same() {
        for (text, ms) in [
            ("50ms", 50),
            ("30s", 30_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d, Duration::from_millis(ms));
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert!(parse_duration("3 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("1TB").is_err());
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn durations_take_units_fractions_and_compounds() {
        let p = |t| parse_duration_in(t, Unit::Secs).unwrap();
        assert_eq!(p("250ms"), 250 * MS);
        assert_eq!(p("60s"), Duration::from_secs(60));
        assert_eq!(p("1.5s"), 1500 * MS);
        assert_eq!(p("5m"), Duration::from_secs(300));
        assert_eq!(p("5min"), Duration::from_secs(300));
        assert_eq!(p("2h"), Duration::from_secs(7200));
        assert_eq!(p("7d"), Duration::from_secs(7 * 86_400));
        assert_eq!(p("1m30s"), Duration::from_secs(90));
        assert_eq!(p(" 1h30m "), Duration::from_secs(5400));
        assert_eq!(p("1m 30s"), Duration::from_secs(90));
        assert_eq!(p("0s"), Duration::ZERO);
    }

    #[test]
    fn a_bare_number_is_in_the_callers_unit() {
        assert_eq!(parse_duration("50").unwrap(), 50 * MS);
        assert_eq!(parse_duration_in("50", Unit::Millis).unwrap(), 50 * MS);
        assert_eq!(
            parse_duration_in("50", Unit::Secs).unwrap(),
            Duration::from_secs(50)
        );
        assert_eq!(parse_duration_in("0.5", Unit::Secs).unwrap(), 500 * MS);
        assert_eq!(
            parse_duration_in("2", Unit::Days).unwrap(),
            Duration::from_secs(2 * 86_400)
        );
    }

    #[test]
    fn duration_nonsense_is_refused_saying_what_a_duration_looks_like() {
        for bad in ["", "s", "5 minutes", "1.2.3s", "-5s", "5s-", "ms5", "1e3s"] {
            let e = parse_duration_in(bad, Unit::Secs).unwrap_err();
            assert!(
                e.contains("is not a duration like") || e.contains("unknown unit"),
                "{bad}: {e}"
            );
        }
        let e = parse_duration("30 parsecs").unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        assert!(parse_duration_in("99999999999999999999d", Unit::Secs).is_err());
        assert!(parse_duration_in("-1", Unit::Secs).is_err());
    }

    #[derive(serde::Deserialize, Debug)]
    struct DurationFields {
        #[serde(default, deserialize_with = "secs")]
        positive: Duration,
        #[serde(default, deserialize_with = "days")]
        days: Duration,
    }

    fn duration_fields(text: &str) -> Result<DurationFields, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn toml_duration_fields_take_numbers_in_their_unit_or_strings() {
        let f = duration_fields;
        assert_eq!(
            f("positive = 10").unwrap().positive,
            Duration::from_secs(10)
        );
        assert_eq!(f("positive = 0.25").unwrap().positive, 250 * MS);
        assert_eq!(
            f("positive = \"5m\"").unwrap().positive,
            Duration::from_secs(300)
        );
        assert_eq!(
            f("days = 30").unwrap().days,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            f("days = \"12h\"").unwrap().days,
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(f("days = 0").unwrap().days, Duration::ZERO);

        let e = f("positive = 0").unwrap_err();
        assert!(e.contains("positive number of seconds"), "{e}");
        let e = f("positive = \"0s\"").unwrap_err();
        assert!(e.contains("positive number of seconds"), "{e}");
        let e = f("days = -1").unwrap_err();
        assert!(e.contains("non-negative number of days"), "{e}");
        let e = f("positive = \"soon\"").unwrap_err();
        assert!(e.contains("\"soon\" is not a duration"), "{e}");
        let e = f("positive = true").unwrap_err();
        assert!(e.contains("a number of seconds or a duration"), "{e}");
    }

    #[test]
    fn locations_count_lines_and_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        let at = Location::of(Path::new("v.toml"), text, text.find('"').unwrap());
        assert_eq!(at.to_string(), "v.toml:2:6");
        assert_eq!(
            Location::of(Path::new("v.toml"), text, 0).to_string(),
            "v.toml:1:1"
        );
    }
}
