//! The keys the browser presses for a keepalive `key-press`: modifiers
//! only, which type nothing into the page and trigger no shortcut. The
//! action itself is [`crate::action::Action`], the one type from a
//! policy's accepted answer to here.

use std::fmt;
use std::str::FromStr;

/// Keys a keepalive may press: modifiers, which type nothing into the page
/// and trigger no shortcut on their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Shift,
    Control,
    Alt,
    Meta,
}

impl Key {
    pub const ALL: [Key; 4] = [Key::Shift, Key::Control, Key::Alt, Key::Meta];

    /// The DOM `key` value, also the name accepted by [`Key::from_str`].
    pub fn name(self) -> &'static str {
        match self {
            Key::Shift => "Shift",
            Key::Control => "Control",
            Key::Alt => "Alt",
            Key::Meta => "Meta",
        }
    }

    /// The DOM `code` of the left-hand key.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Key::Shift => "ShiftLeft",
            Key::Control => "ControlLeft",
            Key::Alt => "AltLeft",
            Key::Meta => "MetaLeft",
        }
    }

    pub(crate) fn windows_key_code(self) -> i64 {
        match self {
            Key::Shift => 16,
            Key::Control => 17,
            Key::Alt => 18,
            Key::Meta => 91,
        }
    }

    /// The DevTools modifier bit held while the key is down.
    pub(crate) fn modifier_bit(self) -> i64 {
        match self {
            Key::Alt => 1,
            Key::Control => 2,
            Key::Meta => 4,
            Key::Shift => 8,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown key {0:?}: a keepalive may press Shift, Control, Alt or Meta")]
pub struct UnknownKey(pub String);

impl FromStr for Key {
    type Err = UnknownKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKey(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_by_dom_name() {
        assert_eq!("shift".parse::<Key>(), Ok(Key::Shift));
        assert_eq!("Meta".parse::<Key>(), Ok(Key::Meta));
        assert!("a".parse::<Key>().is_err());
        assert!("Enter".parse::<Key>().is_err());
    }
}
