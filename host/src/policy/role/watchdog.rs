//! The watchdog role: `check(facts) -> verdict`, called every interval,
//! at once when a session drops or reconnects, and after a failed launch.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::PolicyRole;
use crate::id::SessionId;
use crate::policy::answer::accept_verdict;
use crate::policy::builtin;
use crate::policy::config::PolicyConfig;
use crate::policy::file::Permissions;
use crate::policy::memory::KvMemory;
use crate::policy::types::{Action, Facts, Role, Verdict};
use crate::policy::wit::{self, CallState};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "watchdog",
        with: { "vigil:policy": crate::policy::wit::shared::vigil::policy },
    });
}

use bindings::vigil::policy::types as w;

pub(crate) struct Watchdog;

impl PolicyRole for Watchdog {
    const ROLE: Role = Role::Watchdog;
    type Input = Facts;
    type Answer = Verdict;
    type Pre = bindings::WatchdogPre<CallState>;

    fn link(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        bindings::Watchdog::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)
    }

    fn prepare(pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        bindings::WatchdogPre::new(pre)
    }

    fn call(
        pre: &Self::Pre,
        store: &mut Store<CallState>,
        facts: &Facts,
    ) -> wasmtime::Result<Verdict> {
        let answer = pre
            .instantiate(&mut *store)?
            .call_check(&mut *store, &wit::facts(facts))?;
        Ok(verdict(answer))
    }

    fn accept(
        verdict: Verdict,
        _: &Facts,
        _: Permissions,
    ) -> Result<(Verdict, Vec<Action>), String> {
        Ok((accept_verdict(verdict), Vec::new()))
    }

    fn builtin(
        facts: &Facts,
        config: &PolicyConfig,
        now_ms: u64,
        memory: &mut KvMemory,
    ) -> Verdict {
        builtin::watchdog(facts, config, now_ms, memory)
    }

    fn fallback(_: &Facts, cause: &str) -> Verdict {
        builtin::watchdog_fallback(cause)
    }

    fn session(facts: &Facts) -> &SessionId {
        &facts.session
    }

    fn self_check_input() -> Facts {
        wit::self_check_facts()
    }

    fn describe(verdict: &Verdict) -> String {
        verdict.to_string()
    }
}

fn verdict(v: w::Verdict) -> Verdict {
    match v {
        w::Verdict::Healthy => Verdict::Healthy,
        w::Verdict::Degraded(reason) => Verdict::Degraded { reason },
        w::Verdict::ReloadPage(reason) => Verdict::ReloadPage { reason },
        w::Verdict::RestartBrowser(reason) => Verdict::RestartBrowser { reason },
        w::Verdict::RestoreFromBackup(reason) => Verdict::RestoreFromBackup { reason },
        w::Verdict::GiveUp(reason) => Verdict::GiveUp { reason },
    }
}
