//! One policy call, the same for every role: a fresh sandbox with the
//! call's clock, config and memory; the role's export; the answer checked
//! (permissions included, by the policy version that answered) or the
//! role's fallback; and a [`Decision`] that carries its binding and a
//! [`CallRecord`] of what the call saw. Also the built-in decision, made
//! the same way without wasm.
//!
//! No shared state: the caller checks the memory out and decides whether
//! to keep what the call left (the service does; a replay does not).

use std::sync::Arc;
use std::time::Instant;

use super::catalog::{LoadedPolicy, builtin_binding};
use super::config::PolicyConfig;
use super::engine::{CallFailure, PolicyEngine};
use super::file::Limits;
use super::memory::KvMemory;
use super::metrics::CallTally;
use super::role::PolicyRole;
use super::status::{CallRecord, Decision, FallbackCause, ServedBy};
use super::wit::CallState;

/// What a call starts from.
pub(crate) struct CallSetup {
    /// The call's clock: every clock the policy reads says this.
    pub now_ms: u64,
    pub config: Arc<PolicyConfig>,
    /// The policy's memory of the session.
    pub memory: KvMemory,
}

/// Who answers.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The plugin of a loaded policy file.
    Policy(&'a LoadedPolicy),
    /// Vigil's built-in decision (no file binds the session).
    BuiltIn { limits: Limits },
}

/// A call's outcome.
pub(crate) struct Called<T> {
    pub decision: Decision<T>,
    /// The memory to keep, when the call succeeded.
    pub keep: Option<KvMemory>,
    pub tally: CallTally,
}

/// Makes one call of role `R` about `input`.
pub(crate) fn call<R: PolicyRole>(
    engine: &PolicyEngine,
    target: Target<'_>,
    input: &R::Input,
    setup: CallSetup,
) -> Called<R::Answer> {
    match target {
        Target::BuiltIn { limits } => builtin::<R>(limits, input, setup),
        Target::Policy(policy) => plugin::<R>(engine, policy, input, setup),
    }
}

fn builtin<R: PolicyRole>(limits: Limits, input: &R::Input, setup: CallSetup) -> Called<R::Answer> {
    let started = Instant::now();
    let mut memory = setup.memory.clone();
    let value = R::builtin(input, &setup.config, setup.now_ms, &mut memory);
    let took = started.elapsed();
    let record = record(setup, Some(&memory), None);
    Called {
        decision: Decision {
            value,
            served_by: ServedBy::BuiltIn,
            took,
            refused: Vec::new(),
            binding: builtin_binding(R::ROLE, limits),
            record,
        },
        keep: Some(memory),
        tally: CallTally::default(),
    }
}

fn plugin<R: PolicyRole>(
    engine: &PolicyEngine,
    policy: &LoadedPolicy,
    input: &R::Input,
    setup: CallSetup,
) -> Called<R::Answer> {
    let started = Instant::now();
    let session = R::session(input);
    let state = CallState::new(
        policy.limits.memory_bytes,
        setup.memory.clone(),
        setup.config.clone(),
        setup.now_ms,
        policy.name.clone(),
        session.clone(),
    );
    let (outcome, memory) = engine.call(policy.limits, state, |store| {
        match policy.plugin.pre::<R>() {
            Some(pre) => R::call(pre, store, input),
            None => Err(wasmtime::Error::msg(format!(
                "plugin is not linked as a {} policy",
                R::ROLE
            ))),
        }
    });
    let mut tally = CallTally::default();
    let answer = match outcome {
        Ok(raw) => R::accept(raw, input, policy.file.permissions).map_err(|reason| {
            tally.invalid_answer = true;
            FallbackCause::InvalidAnswer { reason }
        }),
        Err(failure) => Err(cause_of(failure, &mut tally)),
    };
    let took = started.elapsed();
    let role = R::ROLE;
    let (value, served_by, refused, keep) = match answer {
        Ok((value, refused)) => {
            for action in &refused {
                tracing::warn!(policy = %policy.name, %session, action = action.kind(), "refused: the policy file does not grant run_script");
            }
            tally.refused_actions = refused.len() as u64;
            (
                value,
                ServedBy::Policy(policy.reference()),
                refused,
                Some(memory),
            )
        }
        Err(cause) => {
            tally.fallback = true;
            tracing::warn!(policy = %policy.name, plugin = %policy.plugin.path.display(), %session, %role, %cause, "policy call failed; using the safe fallback");
            let value = R::fallback(input, &cause.to_string());
            let served_by = ServedBy::Fallback {
                policy: policy.reference(),
                cause,
            };
            (value, served_by, Vec::new(), None)
        }
    };
    let record = record(setup, keep.as_ref(), Some(policy));
    Called {
        decision: Decision {
            value,
            served_by,
            took,
            refused,
            binding: policy.binding(),
            record,
        },
        keep,
        tally,
    }
}

fn record(setup: CallSetup, after: Option<&KvMemory>, policy: Option<&LoadedPolicy>) -> CallRecord {
    let memory_after = after.filter(|m| **m != setup.memory).cloned();
    CallRecord {
        now_ms: setup.now_ms,
        config: setup.config,
        memory_before: setup.memory,
        memory_after,
        plugin_sha256: policy.map(|p| Arc::from(p.plugin.sha256.as_str())),
        file_sha256: policy.map(|p| p.file_sha256.clone()),
    }
}

fn cause_of(failure: CallFailure, tally: &mut CallTally) -> FallbackCause {
    match failure {
        CallFailure::Trap(message) => {
            tally.trap = true;
            FallbackCause::Trap { message }
        }
        CallFailure::Timeout(limit) => {
            tally.timeout = true;
            FallbackCause::Timeout { limit }
        }
        CallFailure::MemoryLimit(limit_bytes) => {
            tally.memory_limit = true;
            FallbackCause::MemoryLimit { limit_bytes }
        }
    }
}

/// One call with the role's made-up input and an empty memory, thrown
/// away after. A plugin that cannot answer it is refused at load.
///
/// A timeout is tried once more: the very first call of a freshly
/// compiled component pays for its cold code and memory image (a Python
/// component's first call took over 50 ms on a loaded 2-core machine,
/// its next ones about 1.4 ms), which says nothing of the calls sessions
/// will make. A plugin that loops times out twice and is refused.
pub(crate) fn self_check<R: PolicyRole>(
    engine: &PolicyEngine,
    policy: &LoadedPolicy,
    now_ms: u64,
) -> Result<(), FallbackCause> {
    let call = || {
        let setup = CallSetup {
            now_ms,
            config: policy.config.clone(),
            memory: KvMemory::default(),
        };
        match plugin::<R>(engine, policy, &R::self_check_input(), setup)
            .decision
            .served_by
        {
            ServedBy::Fallback { cause, .. } => Err(cause),
            _ => Ok(()),
        }
    };
    match call() {
        Err(FallbackCause::Timeout { .. }) => call(),
        checked => checked,
    }
}
