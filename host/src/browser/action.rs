//! What the browser can be asked to do to keep a page alive. These are the
//! browser's own words: the session layer maps policy verdicts onto them,
//! and decides whether a policy may run a script. This module never imports
//! the policy module.

use std::fmt;
use std::str::FromStr;

/// One keepalive action, carried out with DevTools commands so the page
/// sees trusted events (`event.isTrusted`), as from a person.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Move the pointer to a new point inside the page (`Input.dispatchMouseEvent`
    /// `mouseMoved`): trusted `pointermove` / `mousemove`.
    MouseMove,
    /// Press and release a key (`Input.dispatchKeyEvent`): trusted
    /// `keydown` / `keyup`. Only keys that type nothing are offered.
    KeyPress(Key),
    /// Make this the focused page: `Page.bringToFront` and
    /// `Emulation.setFocusEmulationEnabled(true)`, so `document.hasFocus()`
    /// is true and `focus` handlers run although no window has OS focus.
    Focus,
    /// Hold a screen wake lock in the page (`navigator.wakeLock.request`),
    /// after granting the `screen-wake-lock` permission with
    /// `Browser.setPermission`. The sentinel is kept on `window` so it is
    /// not collected; a reload drops it.
    WakeLock,
    /// Tell the page a person is here: [`Action::Focus`], plus
    /// `Emulation.setIdleOverride(user active, screen unlocked)` for the
    /// Idle Detection API and `Page.setWebLifecycleState("active")` so a
    /// frozen page thaws. The page is visible already (headless pages are,
    /// and Vigil's flags disable backgrounding of occluded windows).
    Presence,
    /// Reload the page and wait for its `load` event.
    Reload,
    /// Run a JS expression in the page (promises are awaited). The caller
    /// checks that the policy asking for it was granted scripts.
    RunScript(String),
}

impl Action {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Action::MouseMove => "mouse-move",
            Action::KeyPress(_) => "key-press",
            Action::Focus => "focus",
            Action::WakeLock => "wake-lock",
            Action::Presence => "presence",
            Action::Reload => "reload",
            Action::RunScript(_) => "run-script",
        }
    }
}

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

/// Where the `n`th mouse move goes: a small loop around the middle of the
/// page, so every move lands on a new point (a move to the same point fires
/// no event) and stays clear of edges and scroll bars.
pub(crate) fn pointer_target(n: u64, width: u32, height: u32) -> (f64, f64) {
    const LOOP: [(f64, f64); 6] = [
        (0.0, 0.0),
        (23.0, 11.0),
        (41.0, -7.0),
        (17.0, -29.0),
        (-13.0, -17.0),
        (-31.0, 5.0),
    ];
    let (dx, dy) = LOOP[(n % LOOP.len() as u64) as usize];
    (f64::from(width) / 2.0 + dx, f64::from(height) / 2.0 + dy)
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

    #[test]
    fn consecutive_mouse_moves_land_on_different_points_inside_the_page() {
        for n in 0..24 {
            let a = pointer_target(n, 1280, 800);
            let b = pointer_target(n + 1, 1280, 800);
            assert_ne!(a, b);
            assert!(a.0 > 0.0 && a.0 < 1280.0 && a.1 > 0.0 && a.1 < 800.0);
        }
    }
}
