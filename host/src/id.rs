//! Identifiers shared by every layer. Owns only the rules for what a valid
//! id looks like, and how a glob matches one; knows nothing about what a
//! session does.

use std::fmt;
use std::str::FromStr;

/// The operator's name for a session (`main`, `support-bot`, ...). It names a
/// profile directory and a prefix in the object store, so it is restricted to
/// characters that are safe in both: ASCII letters, digits, `-`, `_`, `.`,
/// not starting with `.`, at most 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

/// Why a string is not a valid [`SessionId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionIdError {
    #[error("session id is empty")]
    Empty,
    #[error("session id {0:?} is longer than 64 characters")]
    TooLong(String),
    #[error(
        "session id {0:?} may only contain ASCII letters, digits, '-', '_' and '.', and must not start with '.'"
    )]
    BadCharacter(String),
}

impl SessionId {
    pub fn new(id: impl Into<String>) -> Result<Self, SessionIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(SessionIdError::Empty);
        }
        if id.len() > 64 {
            return Err(SessionIdError::TooLong(id));
        }
        let ok = id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !id.starts_with('.');
        if !ok {
            return Err(SessionIdError::BadCharacter(id));
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The switch Vigil puts on the command line of every Chromium it
    /// starts for this session (`--vigil-session=<id>`; Chromium ignores
    /// it), so that a later Vigil recognises a browser an earlier one left
    /// running (see [`crate::volume::judge_holder`]).
    pub fn browser_marker(&self) -> String {
        format!("{BROWSER_MARKER}{}", self.0)
    }
}

/// The prefix of [`SessionId::browser_marker`].
pub const BROWSER_MARKER: &str = "--vigil-session=";

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SessionId {
    type Err = SessionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// Whether `text` (an id) matches `pattern`: `*` matches any run of
/// characters, `?` one. Shared by the patterns over session and host ids.
pub(crate) fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with one backtrack point: linear for our patterns.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_operator_names_and_refuses_path_tricks() {
        assert!(SessionId::new("main").is_ok());
        assert!(SessionId::new("support-bot_2.eu").is_ok());
        assert_eq!(SessionId::new(""), Err(SessionIdError::Empty));
        for bad in ["../x", "a/b", ".hidden", "sp ace", "é"] {
            assert!(
                matches!(SessionId::new(bad), Err(SessionIdError::BadCharacter(_))),
                "{bad} accepted"
            );
        }
        assert!(matches!(
            SessionId::new("x".repeat(65)),
            Err(SessionIdError::TooLong(_))
        ));
    }
}
