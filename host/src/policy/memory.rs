//! The small key-value memory each policy keeps per session.
//!
//! It lives in the host's memory (not on disk): it survives between calls
//! and across reloads of the policy, not across a restart of Vigil. It is
//! keyed by the policy's name (its file name) and the session, so two
//! policies never see each other's memory. A call works on a copy that is
//! written back only when the call succeeded: a trap or timeout leaves the
//! memory as it was.
//!
//! In JSON (the decision journal) a memory is an object of keys to
//! base64 values: `{"tick": "AwAAAAAAAAA="}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::SessionId;

/// At most this many bytes (keys + values) per policy and session.
pub const MEMORY_CAP_BYTES: usize = 64 * 1024;
/// Keys are 1 to this many bytes long.
pub const MAX_KEY_BYTES: usize = 256;

/// Why a write to the memory was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryRefusal {
    Full,
    BadKey,
}

/// One policy's memory for one session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvMemory {
    entries: BTreeMap<String, Vec<u8>>,
    bytes: usize,
}

impl KvMemory {
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    pub fn set(&mut self, key: &str, value: Vec<u8>) -> Result<(), MemoryRefusal> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(MemoryRefusal::BadKey);
        }
        let old = self.entries.get(key).map_or(0, |v| key.len() + v.len());
        let new = key.len() + value.len();
        if self.bytes - old + new > MEMORY_CAP_BYTES {
            return Err(MemoryRefusal::Full);
        }
        self.bytes = self.bytes - old + new;
        self.entries.insert(key.to_owned(), value);
        Ok(())
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(v) = self.entries.remove(key) {
            self.bytes -= key.len() + v.len();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

impl Serialize for KvMemory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.entries.iter().map(|(k, v)| (k, BASE64.encode(v))))
    }
}

impl<'de> Deserialize<'de> for KvMemory {
    /// Checked like the policy's own writes: a memory read back from a
    /// journal is one a policy could have left.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let encoded = BTreeMap::<String, String>::deserialize(d)?;
        let mut memory = KvMemory::default();
        for (key, value) in encoded {
            let bytes = BASE64
                .decode(value.as_bytes())
                .map_err(|e| D::Error::custom(format!("memory key {key:?}: not base64: {e}")))?;
            memory.set(&key, bytes).map_err(|refusal| {
                D::Error::custom(format!("memory key {key:?}: refused ({refusal:?})"))
            })?;
        }
        Ok(memory)
    }
}

/// Every policy's memory, for every session.
#[derive(Default)]
pub(crate) struct MemoryBank {
    memories: Mutex<HashMap<(String, SessionId), KvMemory>>,
}

impl MemoryBank {
    /// A copy of the memory to work on during one call.
    pub fn checkout(&self, policy: &str, session: &SessionId) -> KvMemory {
        let memories = self.memories.lock().unwrap_or_else(|e| e.into_inner());
        memories
            .get(&(policy.to_owned(), session.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// Keeps what a successful call left in the memory.
    pub fn commit(&self, policy: &str, session: &SessionId, memory: KvMemory) {
        let mut memories = self.memories.lock().unwrap_or_else(|e| e.into_inner());
        let key = (policy.to_owned(), session.clone());
        if memory.is_empty() {
            memories.remove(&key);
        } else {
            memories.insert(key, memory);
        }
    }

    /// Drops every policy's memory of a session.
    pub fn forget(&self, session: &SessionId) {
        let mut memories = self.memories.lock().unwrap_or_else(|e| e.into_inner());
        memories.retain(|(_, s), _| s != session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_back_from_json_as_it_was_written() {
        let mut m = KvMemory::default();
        m.set("tick", 3u64.to_le_bytes().to_vec()).unwrap();
        m.set("empty", Vec::new()).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"empty":"","tick":"AwAAAAAAAAA="}"#);
        assert_eq!(serde_json::from_str::<KvMemory>(&json).unwrap(), m);
        assert!(serde_json::from_str::<KvMemory>(r#"{"":"AA=="}"#).is_err());
    }

    #[test]
    fn the_cap_counts_keys_and_values_and_overwrites_free_space() {
        let mut m = KvMemory::default();
        m.set("a", vec![0; MEMORY_CAP_BYTES - 1]).unwrap();
        assert_eq!(m.set("b", vec![]), Err(MemoryRefusal::Full));
        m.set("a", vec![0; 10]).unwrap();
        assert_eq!(m.bytes(), 11);
        m.set("b", vec![1]).unwrap();
        assert_eq!(m.set("", vec![]), Err(MemoryRefusal::BadKey));
        m.remove("a");
        assert_eq!(m.bytes(), 2);
    }
}
