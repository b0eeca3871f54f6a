//! The restore role: `decide(session-id, inventory, backups) -> plan`,
//! asked before the browser starts where the profile comes from.

use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::PolicyRole;
use crate::id::SessionId;
use crate::policy::answer::accept_plan;
use crate::policy::builtin;
use crate::policy::config::PolicyConfig;
use crate::policy::file::Permissions;
use crate::policy::memory::KvMemory;
use crate::policy::types::{
    Action, BackupFacts, Inventory, LockState, Plan, RestoreQuestion, Role,
};
use crate::policy::wit::{self, CallState};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "restore",
        with: { "vigil:policy": crate::policy::wit::shared::vigil::policy },
    });
}

use bindings::vigil::policy::types as w;

pub(crate) struct Restore;

impl PolicyRole for Restore {
    const ROLE: Role = Role::Restore;
    type Input = RestoreQuestion;
    type Answer = Plan;
    type Pre = bindings::RestorePre<CallState>;

    fn link(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        bindings::Restore::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)
    }

    fn prepare(pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        bindings::RestorePre::new(pre)
    }

    fn call(
        pre: &Self::Pre,
        store: &mut Store<CallState>,
        q: &RestoreQuestion,
    ) -> wasmtime::Result<Plan> {
        let plan = pre.instantiate(&mut *store)?.call_decide(
            &mut *store,
            q.session.as_str(),
            &inventory(&q.inventory),
            &backups(&q.backups),
        )?;
        Ok(self::plan(plan))
    }

    fn accept(
        plan: Plan,
        q: &RestoreQuestion,
        _: Permissions,
    ) -> Result<(Plan, Vec<Action>), String> {
        accept_plan(plan, &q.backups).map(|plan| (plan, Vec::new()))
    }

    fn builtin(
        q: &RestoreQuestion,
        config: &PolicyConfig,
        _now_ms: u64,
        _memory: &mut KvMemory,
    ) -> Plan {
        builtin::restore(&q.inventory, &q.backups, config)
    }

    fn fallback(q: &RestoreQuestion, cause: &str) -> Plan {
        builtin::restore_fallback(&q.inventory, cause)
    }

    fn session(q: &RestoreQuestion) -> &SessionId {
        &q.session
    }

    fn self_check_input() -> RestoreQuestion {
        RestoreQuestion {
            session: wit::self_check_facts().session,
            inventory: Inventory::missing(),
            backups: vec![BackupFacts {
                id: "self-check-backup".into(),
                age: Duration::from_secs(3600),
                size_bytes: 1 << 20,
                verified: true,
                restore_failed: false,
            }],
        }
    }

    fn describe(plan: &Plan) -> String {
        plan.to_string()
    }
}

fn inventory(i: &Inventory) -> w::Inventory {
    w::Inventory {
        exists: i.exists,
        critical_files: i
            .critical_files
            .iter()
            .map(|c| w::CriticalFile {
                path: c.path.clone(),
                present: c.present,
                non_empty: c.non_empty,
            })
            .collect(),
        size_bytes: i.size_bytes,
        lock: match i.lock {
            LockState::None => w::LockState::None,
            LockState::Stale => w::LockState::Stale,
            LockState::Held => w::LockState::Held,
        },
    }
}

fn backups(b: &[BackupFacts]) -> Vec<w::Backup> {
    b.iter()
        .map(|b| w::Backup {
            id: b.id.clone(),
            age_ms: b.age.as_millis().try_into().unwrap_or(u64::MAX),
            size_bytes: b.size_bytes,
            verified: b.verified,
            restore_failed: b.restore_failed,
        })
        .collect()
}

fn plan(p: w::Plan) -> Plan {
    let reason = p.reason;
    match p.choice {
        w::Choice::UseDisk => Plan::UseDisk { reason },
        w::Choice::RestoreBackup(id) => Plan::RestoreBackup { id, reason },
        w::Choice::StartFresh => Plan::StartFresh { reason },
        w::Choice::Wait(ms) => Plan::Wait {
            after: Duration::from_millis(ms),
            reason,
        },
    }
}
