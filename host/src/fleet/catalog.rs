//! The catalog: every session the hosts sharing a store should run, in one
//! object (`.fleet/catalog.json`) changed only by conditional writes.
//!
//! One object rather than one per session: the catalog changes rarely (an
//! operator adds or removes a session), while every host needs all of it;
//! one object is one read when it changed and none when it did not.
//!
//! Where entries come from:
//! - `vigil.toml`: at start each host *seeds* its `[[session]]`s. An id not
//!   in the catalog is added; one already there takes the file's settings
//!   (the file is what the operator edits and reviews). The entry records
//!   which hosts' files define it; when every such host has restarted
//!   without it, it leaves the catalog. So on a single host, removing a
//!   session from the file removes it, as before catalogs existed.
//! - the API (`POST /v1/sessions`, `vigil session add`): stays until
//!   removed by the API. An id any `vigil.toml` defines cannot be removed
//!   by the API (it would come back at the next start): it is refused with
//!   the hosts to edit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::FleetError;
use super::record::{CATALOG_OBJECT, RECORD_FORMAT};
use super::settings::HostId;
use super::store::{FleetStore, Version, Versioned, token};
use crate::config::SessionConfig;
use crate::id::SessionId;

/// The sessions of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub format: u32,
    pub sessions: BTreeMap<SessionId, CatalogEntry>,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub spec: SessionConfig,
    pub origin: Origin,
}

/// Who put a session in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Origin {
    /// The `vigil.toml` of these hosts defines it.
    Config { hosts: BTreeSet<HostId> },
    /// Added at runtime through the API.
    Api { added: DateTime<Utc>, by: HostId },
}

/// What seeding a host's `vigil.toml` sessions changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    pub added: Vec<SessionId>,
    /// Already there with other settings (or added by the API): the
    /// file's settings now apply.
    pub updated: Vec<SessionId>,
    /// Left the catalog: no host's file defines them any more.
    pub dropped: Vec<SessionId>,
}

/// How often a change retries after losing a race to another writer.
const ATTEMPTS: usize = 16;

impl Catalog {
    pub fn get(&self, id: &SessionId) -> Option<&CatalogEntry> {
        self.sessions.get(id)
    }

    pub fn specs(&self) -> impl Iterator<Item = &SessionConfig> {
        self.sessions.values().map(|e| &e.spec)
    }
}

/// Reads the catalog (empty if none was ever written).
pub async fn load(store: &FleetStore) -> Result<Versioned<Catalog>, FleetError> {
    Ok(read(store).await?.unwrap_or_else(|| Versioned {
        value: Catalog::default(),
        version: Version {
            e_tag: None,
            version: None,
        },
    }))
}

async fn read(store: &FleetStore) -> Result<Option<Versioned<Catalog>>, FleetError> {
    store.read(&store.key(CATALOG_OBJECT)).await
}

/// Adds a session at runtime. An id already in the catalog is
/// [`FleetError::DuplicateSession`].
pub async fn add(
    store: &FleetStore,
    spec: SessionConfig,
    by: &HostId,
) -> Result<Catalog, FleetError> {
    change(store, |catalog| {
        if catalog.sessions.contains_key(&spec.id) {
            return Err(FleetError::DuplicateSession {
                session: spec.id.clone(),
            });
        }
        catalog.sessions.insert(
            spec.id.clone(),
            CatalogEntry {
                spec: spec.clone(),
                origin: Origin::Api {
                    added: Utc::now(),
                    by: by.clone(),
                },
            },
        );
        Ok(true)
    })
    .await
}

/// Removes a session added at runtime. Its backups are not touched here.
pub async fn remove(store: &FleetStore, id: &SessionId) -> Result<Catalog, FleetError> {
    change(store, |catalog| match catalog.sessions.get(id) {
        None => Err(FleetError::NoSuchSession {
            session: id.clone(),
        }),
        Some(CatalogEntry {
            origin: Origin::Config { hosts },
            ..
        }) => Err(FleetError::DefinedInConfig {
            session: id.clone(),
            hosts: hosts.iter().cloned().collect(),
        }),
        Some(_) => {
            catalog.sessions.remove(id);
            Ok(true)
        }
    })
    .await
}

/// Seeds `host`'s `vigil.toml` sessions (see the module docs).
pub async fn seed(
    store: &FleetStore,
    sessions: &[SessionConfig],
    host: &HostId,
) -> Result<(Catalog, SeedReport), FleetError> {
    let mut report = SeedReport::default();
    let catalog = change(store, |catalog| {
        let before = catalog.clone();
        report = seed_into(catalog, sessions, host);
        Ok(*catalog != before)
    })
    .await?;
    for id in &report.updated {
        tracing::warn!(session = %id, host = %host, "vigil.toml changes this session's settings in the shared catalog");
    }
    for id in &report.dropped {
        tracing::info!(session = %id, "no vigil.toml defines this session any more: it leaves the catalog (its backups stay)");
    }
    Ok((catalog, report))
}

/// The plain part of [`seed`]: how `host`'s sessions change `catalog`.
pub fn seed_into(catalog: &mut Catalog, sessions: &[SessionConfig], host: &HostId) -> SeedReport {
    let mut report = SeedReport::default();
    for spec in sessions {
        match catalog.sessions.get_mut(&spec.id) {
            None => {
                catalog.sessions.insert(
                    spec.id.clone(),
                    CatalogEntry {
                        spec: spec.clone(),
                        origin: Origin::Config {
                            hosts: [host.clone()].into(),
                        },
                    },
                );
                report.added.push(spec.id.clone());
            }
            Some(entry) => {
                let changed = entry.spec != *spec;
                match &mut entry.origin {
                    Origin::Config { hosts } => {
                        hosts.insert(host.clone());
                    }
                    origin @ Origin::Api { .. } => {
                        *origin = Origin::Config {
                            hosts: [host.clone()].into(),
                        };
                        report.updated.push(spec.id.clone());
                    }
                }
                if changed {
                    entry.spec = spec.clone();
                    if report.updated.last() != Some(&spec.id) {
                        report.updated.push(spec.id.clone());
                    }
                }
            }
        }
    }
    let mine: BTreeSet<&SessionId> = sessions.iter().map(|s| &s.id).collect();
    catalog.sessions.retain(|id, entry| {
        let Origin::Config { hosts } = &mut entry.origin else {
            return true;
        };
        if !mine.contains(id) {
            hosts.remove(host);
        }
        if hosts.is_empty() {
            report.dropped.push(id.clone());
            return false;
        }
        true
    });
    report
}

/// Read, change, write back if unchanged meanwhile; again on a lost race.
/// `edit` answers whether it changed anything (no write if not).
async fn change(
    store: &FleetStore,
    mut edit: impl FnMut(&mut Catalog) -> Result<bool, FleetError>,
) -> Result<Catalog, FleetError> {
    let key = store.key(CATALOG_OBJECT);
    for attempt in 0..ATTEMPTS {
        let current = read(store).await?;
        let mut catalog = current
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default();
        if !edit(&mut catalog)? {
            return Ok(catalog);
        }
        catalog.format = RECORD_FORMAT;
        catalog.token = token();
        let written = match &current {
            None => store.create(&key, &catalog).await,
            Some(c) => store.update(&key, &catalog, &c.version).await,
        };
        match written {
            Ok(_) => return Ok(catalog),
            Err(FleetError::Conflict { .. }) => {
                // Another host changed it first: read again, after a pause
                // that grows and differs between writers.
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 50;
                tokio::time::sleep(Duration::from_millis(20 * attempt as u64 + jitter)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(FleetError::Busy {
        key: key.to_string(),
        attempts: ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session with only an id and a URL, as the API adds one.
    fn spec(id: &str, url: &str) -> SessionConfig {
        serde_json::from_value(serde_json::json!({ "id": id, "url": url })).unwrap()
    }

    fn host(name: &str) -> HostId {
        HostId::new(name).unwrap()
    }

    #[test]
    fn two_hosts_seed_the_same_session_and_it_stays_until_both_drop_it() {
        let mut c = Catalog::default();
        let main = spec("main", "https://a.example/");
        let r = seed_into(&mut c, std::slice::from_ref(&main), &host("a"));
        assert_eq!(r.added, vec![main.id.clone()]);
        let r = seed_into(&mut c, std::slice::from_ref(&main), &host("b"));
        assert_eq!(r, SeedReport::default());
        // a restarts without it: b still defines it.
        let r = seed_into(&mut c, &[], &host("a"));
        assert!(r.dropped.is_empty());
        assert!(c.get(&main.id).is_some());
        let r = seed_into(&mut c, &[], &host("b"));
        assert_eq!(r.dropped, vec![main.id.clone()]);
        assert!(c.sessions.is_empty());
    }

    #[test]
    fn the_file_wins_over_the_catalog_and_over_the_api() {
        let mut c = Catalog::default();
        seed_into(&mut c, &[spec("main", "https://old.example/")], &host("a"));
        let r = seed_into(&mut c, &[spec("main", "https://new.example/")], &host("a"));
        assert_eq!(r.updated.len(), 1);
        assert_eq!(
            c.sessions.values().next().unwrap().spec.url.as_str(),
            "https://new.example/"
        );
        let id = SessionId::new("api").unwrap();
        c.sessions.insert(
            id.clone(),
            CatalogEntry {
                spec: spec("api", "https://api.example/"),
                origin: Origin::Api {
                    added: Utc::now(),
                    by: host("b"),
                },
            },
        );
        // Seeding without it leaves an API session alone...
        seed_into(&mut c, &[spec("main", "https://new.example/")], &host("a"));
        assert!(c.get(&id).is_some());
        // ...and a file that defines it takes it over.
        let r = seed_into(&mut c, &[spec("api", "https://file.example/")], &host("a"));
        assert!(r.updated.contains(&id));
        assert!(matches!(c.get(&id).unwrap().origin, Origin::Config { .. }));
    }
}
