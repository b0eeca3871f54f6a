//! What a keepalive policy may ask the host to do: the one action type,
//! from the policy's accepted answer to the browser.
//!
//! The policy layer makes these (from the WIT answer, after checking it
//! and the policy's permissions); the session layer carries out
//! `backup-now` itself and hands the rest to the browser, which acts on
//! exactly what the policy said (the mouse goes to the policy's point).
//! Plain data: this module imports nothing of Vigil's, so `policy` and
//! `browser` can both use it without knowing each other.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Something a keepalive policy asks the host to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Move the pointer to this point of the page's viewport, in CSS
    /// pixels: trusted `pointermove` / `mousemove` events there.
    MouseMove { x: u32, y: u32 },
    /// Press and release a key named as in the DOM's `KeyboardEvent.key`
    /// ("Shift"). The browser presses only keys that type nothing.
    KeyPress { key: String },
    /// Bring the page to the front and focus it.
    Focus,
    /// Hold a screen wake lock so the page is not throttled.
    WakeLock,
    /// Tell the page the user is present (focus, idle override, lifecycle).
    Presence,
    /// Reload the page and wait for its `load` event.
    ReloadPage,
    /// Run a JavaScript expression in the page. Only an answer accepted
    /// from a policy granted `run_script` carries one.
    RunScript { script: String },
    /// Back the profile up now (the session does it, not the page).
    BackupNow,
    /// Do nothing this time.
    Nothing,
}

impl Action {
    /// The WIT name of the action ("mouse-move").
    pub fn kind(&self) -> &'static str {
        match self {
            Action::MouseMove { .. } => "mouse-move",
            Action::KeyPress { .. } => "key-press",
            Action::Focus => "focus",
            Action::WakeLock => "wake-lock",
            Action::Presence => "presence",
            Action::ReloadPage => "reload-page",
            Action::RunScript { .. } => "run-script",
            Action::BackupNow => "backup-now",
            Action::Nothing => "nothing",
        }
    }

    /// The action's argument as written in scenarios ("200,200", "Shift").
    pub fn argument(&self) -> Option<String> {
        match self {
            Action::MouseMove { x, y } => Some(format!("{x},{y}")),
            Action::KeyPress { key } => Some(key.clone()),
            Action::RunScript { script } => Some(script.clone()),
            _ => None,
        }
    }

    /// Whether the page carries it out (everything but `backup-now` and
    /// `nothing`).
    pub fn is_for_the_page(&self) -> bool {
        !matches!(self, Action::BackupNow | Action::Nothing)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.argument() {
            Some(arg) => write!(f, "{}({arg})", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}
