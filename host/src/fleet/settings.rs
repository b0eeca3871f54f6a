//! `[fleet]` and the names it uses: [`HostId`], [`HostPattern`], and the
//! timing rules checked when the config is read.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `[fleet]`: this host shares the backup store with other hosts, and
/// each session runs on exactly one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// This host's name in the fleet (default: the machine's hostname).
    pub host_id: HostId,
    /// A host whose membership record has not changed for this long, as
    /// an observer's own clock measures it, is dead and its sessions move.
    pub lease: Duration,
    /// How often a host renews its membership record.
    pub renew: Duration,
    /// The most sessions this host runs; none: no limit beyond its fair
    /// share.
    pub max_sessions: Option<usize>,
}

impl FleetConfig {
    /// A host that has not had a renewal confirmed for this long stops its
    /// browsers: three quarters of the lease (22.5 s by default). A store
    /// outage shorter than `fence_after - renew` less the one-second retry
    /// (11.5 s by default) stops nothing, whenever it starts: the renewal
    /// before it was confirmed at most one period earlier.
    pub fn fence_after(&self) -> Duration {
        self.lease - self.margin()
    }

    /// The last quarter of the lease (7.5 s by default): the least time
    /// between a silent host's browsers stopping and anyone taking its
    /// sessions. It covers stopping the browsers (under a second) and the
    /// fence watch's polling (a second at most); the two hosts' clocks
    /// need only tick at the same rate. Since `lease >= 3 * renew`, it is
    /// at least three quarters of a renewal period, and `fence_after` at
    /// least two periods and a quarter.
    pub fn margin(&self) -> Duration {
        self.lease / 4
    }

    pub fn new(host_id: HostId) -> Self {
        Self {
            host_id,
            lease: Duration::from_secs(30),
            renew: Duration::from_secs(10),
            max_sessions: None,
        }
    }
}

/// `[fleet]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFields {
    #[serde(default)]
    host_id: Option<HostId>,
    #[serde(default = "default_lease", deserialize_with = "crate::fields::secs")]
    lease_secs: Duration,
    #[serde(default = "default_renew", deserialize_with = "crate::fields::secs")]
    renew_secs: Duration,
    #[serde(default)]
    max_sessions: Option<usize>,
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

fn default_renew() -> Duration {
    Duration::from_secs(10)
}

impl<'de> Deserialize<'de> for FleetConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = FleetFields::deserialize(d)?;
        let host_id = match f.host_id {
            Some(id) => id,
            None => {
                let name = crate::volume::hostname();
                HostId::new(&name).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "[fleet] host_id defaults to the hostname, and {e}; set host_id"
                    ))
                })?
            }
        };
        if f.lease_secs < f.renew_secs * 3 {
            return Err(serde::de::Error::custom(format!(
                "[fleet] lease_secs ({}) must be at least 3 x renew_secs ({}): a host fences \
                 itself after three quarters of the lease without a renewal, and must be able \
                 to miss one renewal before that",
                f.lease_secs.as_secs_f64(),
                f.renew_secs.as_secs_f64()
            )));
        }
        if f.max_sessions == Some(0) {
            return Err(serde::de::Error::custom(
                "[fleet] max_sessions must be at least 1 (leave it out for no limit)",
            ));
        }
        Ok(Self {
            host_id,
            lease: f.lease_secs,
            renew: f.renew_secs,
            max_sessions: f.max_sessions,
        })
    }
}

/// A host's name in the fleet: ASCII letters, digits, `-`, `_`, `.`, not
/// starting with `.`, at most 64 characters (a hostname fits).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct HostId(String);

impl HostId {
    pub fn new(id: &str) -> Result<Self, String> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Self(id.to_string()))
        } else {
            Err(format!(
                "host id {id:?} may only contain ASCII letters, digits, '-', '_' and '.', \
                 must not start with '.', and is at most 64 characters"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for HostId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A glob on host ids (`[[session]] hosts = ["eu-*"]`): `*` matches any
/// run of characters, `?` one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct HostPattern(String);

impl HostPattern {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let ok = !pattern.is_empty()
            && pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?'));
        if ok {
            Ok(Self(pattern.to_string()))
        } else {
            Err(format!(
                "host pattern {pattern:?} may only use host id characters, '*' and '?'"
            ))
        }
    }

    pub fn matches(&self, host: &HostId) -> bool {
        crate::id::glob_matches(self.0.as_bytes(), host.as_str().as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether a session pinned to `pins` may run on `host` (no pins: any).
pub fn allowed_on(pins: &[HostPattern], host: &HostId) -> bool {
    pins.is_empty() || pins.iter().any(|p| p.matches(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_outlasts_a_ten_second_outage_and_keeps_a_margin() {
        let c = FleetConfig::new(HostId::new("a").unwrap());
        assert_eq!(c.fence_after(), Duration::from_millis(22_500));
        assert_eq!(c.margin(), Duration::from_millis(7_500));
        assert!(c.fence_after() - c.renew > Duration::from_secs(10));
        let tight = FleetConfig {
            lease: Duration::from_secs(3),
            renew: Duration::from_secs(1),
            ..c
        };
        assert!(tight.fence_after() >= 2 * tight.renew);
    }

    #[test]
    fn host_patterns_match_whole_ids() {
        let p = HostPattern::new("eu-*").unwrap();
        assert!(p.matches(&HostId::new("eu-1").unwrap()));
        assert!(!p.matches(&HostId::new("us-1").unwrap()));
        assert!(allowed_on(&[], &HostId::new("any").unwrap()));
        assert!(HostPattern::new("a/b").is_err());
        assert!(HostId::new("a~b").is_err());
        assert!(HostId::new(".x").is_err());
    }
}
