//! The keepalive role: `tick(facts) -> list<action>`, called every
//! interval to keep a connected session looking used.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::PolicyRole;
use crate::id::SessionId;
use crate::policy::answer::accept_actions;
use crate::policy::builtin;
use crate::policy::config::PolicyConfig;
use crate::policy::file::Permissions;
use crate::policy::memory::KvMemory;
use crate::policy::types::{Action, Facts, Role};
use crate::policy::wit::{self, CallState};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "keepalive",
        with: { "vigil:policy": crate::policy::wit::shared::vigil::policy },
    });
}

use bindings::vigil::policy::types as w;

pub(crate) struct Keepalive;

impl PolicyRole for Keepalive {
    const ROLE: Role = Role::Keepalive;
    type Input = Facts;
    type Answer = Vec<Action>;
    type Pre = bindings::KeepalivePre<CallState>;

    fn link(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        bindings::Keepalive::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)
    }

    fn prepare(pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        bindings::KeepalivePre::new(pre)
    }

    fn call(
        pre: &Self::Pre,
        store: &mut Store<CallState>,
        facts: &Facts,
    ) -> wasmtime::Result<Vec<Action>> {
        let answer = pre
            .instantiate(&mut *store)?
            .call_tick(&mut *store, &wit::facts(facts))?;
        Ok(answer.into_iter().map(action).collect())
    }

    fn accept(
        actions: Vec<Action>,
        _: &Facts,
        permissions: Permissions,
    ) -> Result<(Vec<Action>, Vec<Action>), String> {
        accept_actions(actions, permissions)
    }

    fn builtin(
        facts: &Facts,
        config: &PolicyConfig,
        _now_ms: u64,
        memory: &mut KvMemory,
    ) -> Vec<Action> {
        builtin::keepalive(facts, config, memory)
    }

    fn fallback(_: &Facts, _cause: &str) -> Vec<Action> {
        builtin::keepalive_fallback()
    }

    fn session(facts: &Facts) -> &SessionId {
        &facts.session
    }

    fn self_check_input() -> Facts {
        wit::self_check_facts()
    }

    fn describe(actions: &Vec<Action>) -> String {
        super::describe_actions(actions)
    }
}

fn action(a: w::Action) -> Action {
    match a {
        w::Action::MouseMove(p) => Action::MouseMove { x: p.x, y: p.y },
        w::Action::KeyPress(key) => Action::KeyPress { key },
        w::Action::Focus => Action::Focus,
        w::Action::WakeLock => Action::WakeLock,
        w::Action::Presence => Action::Presence,
        w::Action::ReloadPage => Action::ReloadPage,
        w::Action::RunScript(script) => Action::RunScript { script },
        w::Action::BackupNow => Action::BackupNow,
        w::Action::Nothing => Action::Nothing,
    }
}
