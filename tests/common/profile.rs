//! Chromium-like profiles made on disk for the tests and the benchmark,
//! and snapshots to compare them byte for byte.
//!
//! Layout follows what Chromium writes (see docs/FACTS): the login lives in
//! `Default/IndexedDB/<origin>.indexeddb.leveldb/` and
//! `Default/Local Storage/leveldb/`; caches and `Singleton*` locks sit
//! beside them and are left out of backups.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest;

pub const ORIGIN_DB: &str = "Default/IndexedDB/https_app.example.test_0.indexeddb.leveldb";
pub const LOCAL_STORAGE: &str = "Default/Local Storage/leveldb";

/// A deterministic generator (xorshift): same seed, same profile.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Bytes that do not compress (media, snappy blocks).
    pub fn random(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
    /// Text that compresses like JSON or JavaScript (about 3 to 4 times).
    pub fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "message",
            "\"id\":",
            "timestamp",
            "function",
            "return",
            "chat",
            "true",
            "false",
            "null",
            "{\"key\":",
            "contact",
            "status",
            "const ",
            "this.",
            "=>",
            "value",
            "session",
            "encrypted",
            "}",
            "[",
            "]",
            ",",
            "media",
            "thumbnail",
            "width",
            "height",
            "author",
            "quoted",
            "reaction",
            "group",
            "participant",
            "ack",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
            if self.below(4) == 0 {
                out.extend_from_slice(format!("{}", self.below(1_000_000)).as_bytes());
            }
            out.push(if self.below(12) == 0 { b'\n' } else { b' ' });
        }
        out.truncate(len);
        out
    }
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
}

/// A small profile with its login, a cache, a stale lock from another host
/// and a "crashed" exit: what a real one looks like after a kill.
pub fn small(dir: &Path) {
    let mut n = Noise::new(7);
    write(&dir.join(ORIGIN_DB).join("000003.log"), &n.text(40_000));
    write(&dir.join(ORIGIN_DB).join("CURRENT"), b"MANIFEST-000001\n");
    write(&dir.join(ORIGIN_DB).join("MANIFEST-000001"), &n.random(300));
    write(
        &dir.join(LOCAL_STORAGE).join("000005.ldb"),
        &n.random(20_000),
    );
    write(
        &dir.join(LOCAL_STORAGE).join("CURRENT"),
        b"MANIFEST-000001\n",
    );
    write(
        &dir.join("Default/Cache/Cache_Data/data_0"),
        &n.random(5_000),
    );
    write(&dir.join("Default/Code Cache/js/index"), &n.random(1_000));
    write(
        &dir.join("Default/Preferences"),
        br#"{"profile":{"exit_type":"Crashed","exited_cleanly":false,"name":"Person 1"}}"#,
    );
    write(
        &dir.join("Local State"),
        br#"{"browser":{"enabled_labs_experiments":[]}}"#,
    );
    std::os::unix::fs::symlink("another-machine-4242", dir.join("SingletonLock")).unwrap();
    std::os::unix::fs::symlink(
        "/tmp/org.chromium.Chromium.gone/SingletonSocket",
        dir.join("SingletonSocket"),
    )
    .unwrap();
}

/// A profile of about `bytes`: many small files (blobs, service-worker
/// cache) plus LevelDB-style logs and tables and a SQLite-like history,
/// about a third incompressible. Returns (files, bytes) written.
pub fn generate(dir: &Path, bytes: u64, seed: u64) -> (u64, u64) {
    let mut n = Noise::new(seed);
    let mut files = 0u64;
    let mut total = 0u64;
    let put = |path: PathBuf, data: Vec<u8>, files: &mut u64, total: &mut u64| {
        *total += data.len() as u64;
        *files += 1;
        write(&path, &data);
    };
    let budget = |share: f64| (bytes as f64 * share) as u64;

    // Media blobs of the app: small, incompressible.
    let blobs = dir.join("Default/IndexedDB/https_app.example.test_0.indexeddb.blob/1");
    let mut spent = 0;
    let mut i = 0;
    while spent < budget(0.30) {
        let len = 4_096 + n.below(60_000) as usize;
        spent += len as u64;
        put(
            blobs.join(format!("{:02x}/{:04x}", i % 64, i)),
            n.random(len),
            &mut files,
            &mut total,
        );
        i += 1;
    }
    // Service-worker cache: many small text files (scripts, pages).
    let cache = dir.join("Default/Service Worker/CacheStorage/3f2a1c/5b1e7d");
    spent = 0;
    i = 0;
    while spent < budget(0.25) {
        let len = 1_024 + n.below(30_000) as usize;
        spent += len as u64;
        put(
            cache.join(format!("{i:x}_0")),
            n.text(len),
            &mut files,
            &mut total,
        );
        i += 1;
    }
    // LevelDB tables: blocks of records, some snappy-compressed.
    for (db, share) in [(ORIGIN_DB, 0.20), (LOCAL_STORAGE, 0.05)] {
        spent = 0;
        i = 5;
        while spent < budget(share) {
            let len = (2 << 20).min(budget(share) - spent + 1) as usize;
            let mut table = n.text(len / 2);
            table.extend(n.random(len - len / 2));
            spent += len as u64;
            put(
                dir.join(db).join(format!("{i:06}.ldb")),
                table,
                &mut files,
                &mut total,
            );
            i += 2;
        }
        put(
            dir.join(db).join(format!("{i:06}.log")),
            n.text((budget(share) / 8).max(1) as usize),
            &mut files,
            &mut total,
        );
        put(
            dir.join(db).join("CURRENT"),
            b"MANIFEST-000001\n".to_vec(),
            &mut files,
            &mut total,
        );
        put(
            dir.join(db).join("MANIFEST-000001"),
            n.random(2_000),
            &mut files,
            &mut total,
        );
        put(
            dir.join(db).join("LOG"),
            n.text(3_000),
            &mut files,
            &mut total,
        );
        put(
            dir.join(db).join("LOCK"),
            Vec::new(),
            &mut files,
            &mut total,
        );
    }
    // SQLite-like history: 4 KiB pages, text then zeros.
    let mut history = Vec::new();
    while (history.len() as u64) < budget(0.10) {
        let used = 512 + n.below(3_000) as usize;
        history.extend(n.text(used));
        history.extend(std::iter::repeat_n(0u8, 4_096 - used));
    }
    put(dir.join("Default/History"), history, &mut files, &mut total);
    put(
        dir.join("Default/Preferences"),
        br#"{"profile":{"exit_type":"Normal","exited_cleanly":true}}"#.to_vec(),
        &mut files,
        &mut total,
    );
    put(
        dir.join("Local State"),
        br#"{"browser":{}}"#.to_vec(),
        &mut files,
        &mut total,
    );
    // What a backup leaves out: caches and locks.
    put(
        dir.join("Default/Cache/Cache_Data/data_1"),
        n.random(100_000),
        &mut files,
        &mut total,
    );
    put(
        dir.join("Default/GPUCache/data_0"),
        n.random(10_000),
        &mut files,
        &mut total,
    );
    std::os::unix::fs::symlink("another-machine-1", dir.join("SingletonLock")).unwrap();
    (files, total)
}

/// Every file a backup keeps (default exclusions left out), path -> sha256.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let excludes = vigil::archive::Excludes::new(true, &[]);
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(dir.join(&rel_dir)) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let rel = rel_dir.join(entry.file_name());
            if excludes.is_excluded(&rel) {
                continue;
            }
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(rel);
            } else if meta.is_file() {
                let digest = sha2::Sha256::digest(fs::read(entry.path()).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                out.insert(rel.to_string_lossy().into_owned(), hex);
            }
        }
    }
    out
}

/// Every path under `dir` (files, folders, links), for "nothing else
/// was written" checks.
pub fn all_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}
