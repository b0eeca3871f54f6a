//! Text that a policy plugin or a web page controls (verdict and plan
//! reasons, key names, script text, a policy's `log` messages, probe
//! details, QR text, anything a page says), made safe for the place it is
//! shown. Vigil controls neither, so such text may try to forge a log line
//! (a newline and a fake timestamp), drive the operator's terminal (ESC
//! sequences: clear the screen, retitle the window) or make a line read
//! backwards (Unicode bidi overrides).
//!
//! One rule per sink:
//! - **Logs and terminals** ([`escape`], [`for_log`], [`for_terminal`]):
//!   control characters (C0, DEL, C1), line and paragraph separators and
//!   bidi controls are written as escapes (`\n`, `\x1b`, `\u{202e}`); a
//!   long text is cut, with a marker saying how many bytes were cut. The
//!   log format itself escapes every field and message ([`TextFields`],
//!   [`JsonLines`]), so a call site that forgets cannot forge a line.
//! - **JSON** (the API, webhooks, the event stream, the journal): the exact
//!   text, which JSON escaping already keeps in its string. JSON written to
//!   a terminal or a log also goes through [`json_for_terminal`], which
//!   writes the characters JSON leaves raw (DEL, C1, bidi) as `\uXXXX`: the
//!   same value, nothing for a terminal to act on.
//! - **Metrics labels**: never untrusted text, only values from fixed sets
//!   (session ids from `vigil.toml`, role and outcome names).
//!
//! This module never decides what is untrusted; callers do. It never drops
//! text silently: what it cuts, it says it cut.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Bytes of one untrusted value a log line keeps; the rest is cut.
pub const LOG_LIMIT: usize = 2048;

/// Bytes of one untrusted value a terminal table keeps.
pub const TERMINAL_LIMIT: usize = 4096;

/// Whether `c` must not reach a log or a terminal as itself: it ends a
/// line, drives a terminal or reorders text.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Line and paragraph separators: some viewers break lines there.
            '\u{2028}' | '\u{2029}'
            // Bidi marks, embeddings, overrides and isolates.
            | '\u{200e}' | '\u{200f}' | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every [`is_unsafe`] character escaped, cut after `limit`
/// bytes (at a character boundary) with a `…[cut N bytes]` marker.
/// Borrowed when there is nothing to do.
pub fn escape(text: &str, limit: usize) -> Cow<'_, str> {
    let kept = cut_point(text, limit);
    if kept == text.len() && !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(kept + 16);
    for c in text[..kept].chars() {
        push_escaped(&mut out, c);
    }
    if kept < text.len() {
        let _ = write!(out, "…[cut {} bytes]", text.len() - kept);
    }
    Cow::Owned(out)
}

/// For a log line: escaped, cut at [`LOG_LIMIT`].
pub fn for_log(text: &str) -> Cow<'_, str> {
    escape(text, LOG_LIMIT)
}

/// For a terminal (tables of the CLI): escaped, cut at [`TERMINAL_LIMIT`].
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    escape(text, TERMINAL_LIMIT)
}

/// For text Vigil composed around untrusted parts that may span lines on
/// purpose (an error and its causes, a TOML error's snippet): each line
/// as [`for_terminal`], the newlines between them kept. Untrusted parts
/// must arrive with their own newlines already escaped (as
/// [`crate::policy`] quotes a policy's answers in its errors).
pub fn for_terminal_lines(text: &str) -> Cow<'_, str> {
    if !text.contains('\n') {
        return for_terminal(text);
    }
    Cow::Owned(
        text.split('\n')
            .map(for_terminal)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Serialized JSON made safe to print: DEL, C1 controls, separators and
/// bidi controls, which JSON keeps raw, become `\uXXXX` escapes. The JSON
/// stays valid and means the same value (those characters only occur
/// inside strings); the C0 controls are already escaped by serde_json.
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe_in_json(c) {
            // All of them are in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A value serialized as pretty JSON, ready for a terminal.
pub fn pretty_json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    Ok(json_for_terminal(&serde_json::to_string_pretty(value)?).into_owned())
}

/// A value serialized as one line of JSON, ready for a terminal.
pub fn line_json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    Ok(json_for_terminal(&serde_json::to_string(value)?).into_owned())
}

/// `text` as a `Display` that escapes it for a log or terminal line, for
/// `format!` and tracing's `%`.
pub fn shown(text: &str) -> Shown<'_> {
    Shown(text)
}

/// See [`shown`].
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&for_log(self.0))
    }
}

/// serde_json escapes the C0 controls itself; `"` and `\` too.
fn is_unsafe_in_json(c: char) -> bool {
    (is_unsafe(c) && !c.is_ascii_control()) || c == '\u{7f}'
}

fn cut_point(text: &str, limit: usize) -> usize {
    if text.len() <= limit {
        return text.len();
    }
    let mut at = limit;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_ascii_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_unsafe(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Field formatting for the text log format: every value and the message
/// itself go through [`for_log`], so no event, whoever wrote it, can put a
/// newline or an escape sequence in the log. Fields show as `name=value`
/// after the message, as tracing's default format does.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    fn write(&mut self, name: &str, value: &str) {
        if self.result.is_err() {
            return;
        }
        let pad = if self.first { "" } else { " " };
        self.first = false;
        let value = for_log(value);
        self.result = match name {
            "message" => write!(self.writer, "{pad}{value}"),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.writer, "{pad}{name}={value}")
            }
        };
    }
}

impl tracing::field::Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // A plain string field: quoted like tracing's default, escaped.
        if field.name() == "message" {
            self.write("message", value);
        } else {
            self.write(field.name(), &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name().starts_with("log.") {
            return;
        }
        self.write(field.name(), &format!("{value:?}"));
    }
}

/// A writer for the JSON log format: each line tracing writes goes out
/// through [`json_for_terminal`], so the JSON keeps every value exactly
/// while bidi controls and C1 codes are escaped like serde_json escapes
/// ESC.
#[derive(Clone, Copy, Debug)]
pub struct JsonLines<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for JsonLines<M>
{
    type Writer = EscapedJson<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapedJson(self.0.make_writer())
    }
}

/// See [`JsonLines`].
pub struct EscapedJson<W>(W);

impl<W: std::io::Write> std::io::Write for EscapedJson<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing writes a whole event in one `write_all`; a buffer that is
        // not UTF-8 on its own (never seen) goes out unchanged.
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(json_for_terminal(text).as_bytes())?,
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the issue's attacker answered, as a watchdog verdict or a page.
    const FORGED: &str = "ok\n2026-01-01T00:00:00.000000Z  INFO vigil::session::state: session main is connected: forged\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}txt.exe";

    #[test]
    fn plain_text_is_left_alone_and_borrowed() {
        for text in [
            "probe: connected",
            "2@abc,DEF==",
            "naïve – ünïcödé 日本 😀",
            "",
        ] {
            assert!(matches!(escape(text, 100), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn a_forged_line_stays_on_one_line_and_drives_nothing() {
        let shown = for_log(FORGED);
        assert_eq!(
            shown,
            "ok\\n2026-01-01T00:00:00.000000Z  INFO vigil::session::state: session main is connected: forged\\x1b[2J\\x1b]0;pwned\\x07\\u{202e}txt.exe"
        );
        assert!(!shown.chars().any(is_unsafe), "{shown}");
    }

    #[test]
    fn every_kind_of_dangerous_character_is_escaped() {
        assert_eq!(escape("a\r\tb\u{0}\u{7f}", 100), "a\\r\\tb\\x00\\x7f");
        assert_eq!(escape("\u{9b}\u{85}", 100), "\\u{9b}\\u{85}");
        assert_eq!(
            escape(
                "\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}\u{2066}\u{2067}\u{2068}\u{2069}\u{200e}\u{200f}\u{61c}",
                100
            ),
            "\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}\\u{2066}\\u{2067}\\u{2068}\\u{2069}\\u{200e}\\u{200f}\\u{61c}"
        );
        assert_eq!(escape("a\u{2028}b\u{2029}", 100), "a\\u{2028}b\\u{2029}");
    }

    #[test]
    fn long_text_is_cut_with_a_marker_saying_how_much() {
        let long = "k".repeat(10_000);
        assert_eq!(
            escape(&long, 2048),
            format!("{}…[cut 7952 bytes]", "k".repeat(2048))
        );
        // Never inside a character: "é" is two bytes.
        assert_eq!(escape("éé", 3), "é…[cut 2 bytes]");
        // Cut first, then escaped: the marker counts the original's bytes.
        assert_eq!(escape("\n\n\n\n", 2), "\\n\\n…[cut 2 bytes]");
        assert_eq!(for_log(&long).len(), LOG_LIMIT + "…[cut 7952 bytes]".len());
    }

    #[test]
    fn composed_text_keeps_its_lines_and_nothing_else() {
        assert_eq!(
            for_terminal_lines("bad.toml:5:10: bad\n  | x\u{1b}[2J\u{202e}\r"),
            "bad.toml:5:10: bad\n  | x\\x1b[2J\\u{202e}\\r"
        );
        assert!(matches!(for_terminal_lines("one line"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_for_a_terminal_keeps_the_exact_value() {
        let json = serde_json::to_string(&serde_json::json!({ "reason": FORGED })).unwrap();
        assert!(json.contains('\u{202e}'), "serde_json leaves bidi raw");
        let safe = json_for_terminal(&json);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        assert!(
            safe.contains("\\u202e") && safe.contains("\\u001b"),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["reason"], FORGED);
        // C1 and DEL, which serde_json leaves raw too.
        let json = serde_json::to_string("\u{9b}\u{7f}").unwrap();
        assert_eq!(json_for_terminal(&json), "\"\\u009b\\u007f\"");
        let plain = "{\"a\":\"b\"}";
        assert!(matches!(json_for_terminal(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn the_text_log_format_escapes_messages_and_fields() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(TextFields)
            .with_ansi(false)
            .without_time()
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // A careless call site: untrusted text in the message itself.
            tracing::warn!(session = "main", reason = %FORGED, "watchdog said {FORGED}");
            tracing::info!(key = ?FORGED, "pressed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with(" WARN "), "{text}");
        assert!(lines[1].starts_with(" INFO "), "{text}");
        for line in &lines {
            assert!(!line.chars().any(is_unsafe), "{line:?}");
        }
        assert!(
            lines[0].contains("watchdog said ok\\n2026-01-01T00:00:00.000000Z")
                && lines[0].contains("reason=ok\\n2026"),
            "{text}"
        );
    }

    #[test]
    fn the_json_log_writer_escapes_bidi_and_keeps_the_value() {
        let mut out = Vec::new();
        let line = format!("{}\n", serde_json::json!({ "reason": FORGED }));
        std::io::Write::write_all(&mut EscapedJson(&mut out), line.as_bytes()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.trim_end().chars().any(is_unsafe), "{text:?}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["reason"], FORGED);
    }
}
