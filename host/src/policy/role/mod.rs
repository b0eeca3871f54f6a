//! One lifecycle for every policy role, behind [`PolicyRole`]: **link**
//! the world's imports, **prepare** a compiled plugin for its export,
//! **call** it in a fresh instance, **accept** (or refuse) its answer,
//! and the **builtin** decision and safe **fallback** when no plugin
//! answers. The runtime, the journal and replays are written once against
//! this trait.
//!
//! A new role is a WIT world in `wit/`, one file here implementing
//! [`PolicyRole`] (its bindings, conversions, checks, defaults), and its
//! plugin; then its name in [`Role`] and a line in [`dispatch!`].

mod keepalive;
mod restore;
mod watchdog;

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

use super::config::PolicyConfig;
use super::file::Permissions;
use super::memory::KvMemory;
use super::types::{Action, Role};
use super::wit::CallState;
use crate::id::SessionId;

pub(crate) use keepalive::Keepalive;
pub(crate) use restore::Restore;
pub(crate) use watchdog::Watchdog;

/// The lifecycle of one role. Implemented by a unit type per role.
pub(crate) trait PolicyRole: 'static {
    const ROLE: Role;
    /// What the host asks the policy about.
    type Input: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// What the policy answers, in plain types.
    type Answer: Clone + Debug + PartialEq + Send + Serialize + DeserializeOwned + 'static;
    /// A compiled plugin linked for this role's world.
    type Pre: Send + Sync + 'static;

    /// Adds the world's imports (log, clock, config, memory) to `linker`.
    fn link(linker: &mut Linker<CallState>) -> wasmtime::Result<()>;

    /// Checks that a linked component exports this role's function.
    fn prepare(pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre>;

    /// Instantiates the plugin in `store` and calls its export once. The
    /// answer is not checked yet.
    fn call(
        pre: &Self::Pre,
        store: &mut Store<CallState>,
        input: &Self::Input,
    ) -> wasmtime::Result<Self::Answer>;

    /// Checks an answer before anything acts on it. `Ok` holds the answer
    /// to carry out and the actions refused for lack of a permission;
    /// `Err` says, in at most about 200 characters of the policy's own
    /// text, why the whole answer is invalid.
    fn accept(
        answer: Self::Answer,
        input: &Self::Input,
        permissions: Permissions,
    ) -> Result<(Self::Answer, Vec<Action>), String>;

    /// Vigil's own decision when no policy file binds the session.
    fn builtin(
        input: &Self::Input,
        config: &PolicyConfig,
        now_ms: u64,
        memory: &mut KvMemory,
    ) -> Self::Answer;

    /// The safe answer when the bound plugin failed, for `cause`.
    fn fallback(input: &Self::Input, cause: &str) -> Self::Answer;

    /// The session the call is about.
    fn session(input: &Self::Input) -> &SessionId;

    /// Made-up input for the call a plugin must answer at load.
    fn self_check_input() -> Self::Input;

    /// The answer in words, for status, logs and replays
    /// ("restart-browser (not connected for 40 s)").
    fn describe(answer: &Self::Answer) -> String;
}

/// Runs `$body` with `$r` naming the [`PolicyRole`] type of the
/// [`Role`] value `$role`: the one place that maps role names to types.
macro_rules! dispatch {
    ($role:expr, $r:ident => $body:expr) => {
        match $role {
            $crate::policy::types::Role::Keepalive => {
                type $r = $crate::policy::role::Keepalive;
                $body
            }
            $crate::policy::types::Role::Watchdog => {
                type $r = $crate::policy::role::Watchdog;
                $body
            }
            $crate::policy::types::Role::Restore => {
                type $r = $crate::policy::role::Restore;
                $body
            }
        }
    };
}
pub(crate) use dispatch;

/// A list of actions in words ("mouse-move(200,200), key-press(Shift)").
pub(crate) fn describe_actions(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "nothing".to_string();
    }
    actions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
