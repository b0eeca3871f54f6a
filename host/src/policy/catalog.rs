//! The policies serving now: every loaded policy file with its compiled
//! plugin, swapped as a whole on reload, and the rule that picks the one
//! that binds a session in a role. Knows nothing of how files are read or
//! calls are made.

use std::cmp::Reverse;
use std::sync::{Arc, RwLock};

use super::config::PolicyConfig;
use super::engine::Plugin;
use super::file::{Limits, Permissions, PolicyFile};
use super::status::{Binding, PolicyRef};
use super::types::Role;
use crate::id::SessionId;

/// A policy file that passed every check and serves.
pub(crate) struct LoadedPolicy {
    pub file: PolicyFile,
    /// Full hex sha256 of the policy file's text (empty for a bare plugin).
    pub file_sha256: Arc<str>,
    pub name: Arc<str>,
    pub limits: Limits,
    pub config: Arc<PolicyConfig>,
    pub plugin: Arc<Plugin>,
    pub loaded_at_ms: u64,
}

impl LoadedPolicy {
    pub fn reference(&self) -> PolicyRef {
        PolicyRef {
            file: self.file.path.clone(),
            plugin: self.plugin.path.clone(),
            sha256: self.plugin.short_sha().to_owned(),
        }
    }

    /// What this version of the policy binds: the answer of a call it
    /// made carries this, so nothing downstream looks the binding up again.
    pub fn binding(&self) -> Binding {
        Binding {
            role: self.file.role,
            policy: Some(self.reference()),
            interval: self.file.interval,
            limits: self.limits,
            permissions: self.file.permissions,
        }
    }
}

/// The binding when no policy file binds a session in `role`.
pub(crate) fn builtin_binding(role: Role, limits: Limits) -> Binding {
    Binding {
        role,
        policy: None,
        interval: PolicyFile::default_interval(role),
        limits,
        permissions: Permissions::default(),
    }
}

/// Every policy serving now. Readers take a snapshot; a reload swaps the
/// whole list, so a call in flight keeps the version it started with.
#[derive(Default)]
pub(crate) struct Catalog {
    policies: RwLock<Arc<Vec<Arc<LoadedPolicy>>>>,
}

impl Catalog {
    pub fn current(&self) -> Arc<Vec<Arc<LoadedPolicy>>> {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn swap(&self, next: Vec<Arc<LoadedPolicy>>) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }

    /// The policy that binds `session` in `role`: the highest `priority`
    /// among matching files, then the file name that sorts first.
    pub fn resolve(&self, session: &SessionId, role: Role) -> Option<Arc<LoadedPolicy>> {
        self.current()
            .iter()
            .filter(|p| p.file.role == role && p.file.matches(session.as_str()))
            .max_by_key(|p| (p.file.priority, Reverse(p.name.clone())))
            .cloned()
    }
}
