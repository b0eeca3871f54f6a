//! A profile folder <-> a `.tar.gz` byte stream, with its sha256 computed
//! on the way. Owns the archive format, the exclusion rules and the safety
//! rules for extraction (nothing is ever written outside the target).
//!
//! Archives are plain tar.gz (a series of gzip members, which `tar -xzf`
//! reads like any other), optionally wrapped in `age` encryption: no
//! operator is locked in. Each member is compressed on its own core when
//! packing and, because its header records its length, inflated on its own
//! core when unpacking. Memory stays bounded whatever the profile size:
//! data flows through fixed-size blocks, bounded channels and a budget of
//! bytes in flight.
//!
//! Never touches a store, a browser or a session; knows no web app. All
//! functions block: call them from `spawn_blocking`.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::volume::ProfilePath;

mod copy;
mod member;
mod pack;
mod unpack;

pub use copy::copy_tree;
pub use pack::pack;
pub use unpack::{check, unpack};

/// Files Chromium recreates by itself, and its lock links: never archived
/// unless `[backup] default_excludes = false`.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "Singleton*",
    "Cache",
    "Code Cache",
    "GPUCache",
    "ShaderCache",
    "GrShaderCache",
    "GraphiteDawnCache",
    "DawnCache",
    "DawnGraphiteCache",
    "DawnWebGPUCache",
    "component_crx_cache",
    "extensions_crx_cache",
    "Crashpad",
    "Crash Reports",
    "BrowserMetrics*",
];

/// Tar bytes per gzip member: big enough that independent members cost
/// almost no compression, small enough that a few in flight stay cheap.
const BLOCK_SIZE: usize = 1 << 20;
/// Chunks of an archive without framed members (older or foreign ones),
/// inflated on the reading thread.
const PIPE_CHUNK: usize = 128 << 10;
/// Bytes of members (compressed plus inflated) between the reading thread
/// and the extracting one: enough to keep 8 inflating threads busy on 1 MiB
/// blocks, and the bound on what a restore holds whatever the core count.
const IN_FLIGHT: usize = 16 << 20;

/// Which paths of a profile are left out of archives and copies.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<String>,
}

impl Excludes {
    /// The built-in list (when `defaults`) plus `extra`.
    pub fn new(defaults: bool, extra: &[String]) -> Self {
        let mut patterns: Vec<String> = if defaults {
            DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        };
        patterns.extend(extra.iter().map(|p| p.trim_matches('/').to_string()));
        Self { patterns }
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// `rel` is a path inside the profile. A pattern without `/` matches any
    /// single name along it; one with `/` matches the path from the top.
    pub fn is_excluded(&self, rel: &Path) -> bool {
        let rel_str = rel.to_string_lossy();
        self.patterns.iter().any(|p| {
            if p.contains('/') {
                glob(p, &rel_str)
            } else {
                rel.file_name()
                    .is_some_and(|name| glob(p, &name.to_string_lossy()))
            }
        })
    }
}

/// `*` (any run of characters except `/`) and `?` (one character).
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' && t[ti] != '/' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            if t[st] == '/' {
                return false;
            }
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A sha256, shown and stored as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl FromStr for Sha256 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a sha256 (64 hex digits)"));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Self(out))
    }
}

impl serde::Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a stored archive must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Sha256,
    pub size: u64,
}

/// Counters a long operation updates as it goes, for a progress display.
/// Clones share the counters.
#[derive(Debug, Default, Clone)]
pub struct Progress(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicU64,
    files: AtomicU64,
}

impl Progress {
    /// Profile bytes read (pack) or written (unpack) so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
    pub fn files(&self) -> u64 {
        self.0.files.load(Ordering::Relaxed)
    }
    fn add(&self, bytes: u64, files: u64) {
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.0.files.fetch_add(files, Ordering::Relaxed);
    }
}

/// How to write an archive.
#[derive(Clone)]
pub struct PackOptions {
    /// gzip level 1..=9.
    pub level: u32,
    /// Compression threads (at least 1).
    pub threads: usize,
    /// Encrypt to these recipients (none: plain tar.gz).
    pub encrypt_to: Vec<age::x25519::Recipient>,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            level: 6,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            encrypt_to: Vec::new(),
        }
    }
}

/// How to read an archive.
#[derive(Clone, Copy)]
pub enum Decoding<'a> {
    /// A plain tar.gz.
    Plain,
    /// An `age`-encrypted tar.gz, opened with one of these identities.
    Age(&'a [Box<dyn age::Identity + Send + Sync>]),
    /// Encrypted, but no identity at hand: only the checksum can be checked.
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSummary {
    /// Regular files archived.
    pub files: u64,
    /// Their bytes before compression.
    pub bytes_in: u64,
    /// The archive's size, as written to the output.
    pub size: u64,
    pub sha256: Sha256,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackSummary {
    pub files: u64,
    pub bytes_out: u64,
    /// The archive's size, as read from the input.
    pub size: u64,
    pub sha256: Sha256,
}

/// What [`check`] found in an archive without extracting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    pub size: u64,
    pub sha256: Sha256,
    /// Entries, when the archive could be read (not [`Decoding::Opaque`]).
    pub entries: Option<u64>,
    /// Critical paths with data in them, when the archive could be read.
    pub critical_present: Option<Vec<ProfilePath>>,
}

/// Why an archive could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("the archive output failed: {0}")]
    Sink(#[source] io::Error),
    #[error("the archive input failed: {0}")]
    Source(#[source] io::Error),
    #[error("damaged archive: {0}")]
    Corrupt(String),
    #[error("refused archive entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("checksum mismatch: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch { expected: Sha256, actual: Sha256 },
    #[error("size mismatch: expected {expected} bytes, got {actual} (truncated or padded)")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("an archive worker thread panicked")]
    Panicked,
}

impl ArchiveError {
    /// The archive's bytes are wrong (as opposed to this host's disk, the
    /// network or a missing key): another copy may still be good.
    pub fn is_damaged_archive(&self) -> bool {
        matches!(
            self,
            Self::Corrupt(_)
                | Self::Unsafe { .. }
                | Self::ChecksumMismatch { .. }
                | Self::SizeMismatch { .. }
        )
    }
}

/// The entry's path inside the archive, refused if it could leave the
/// target. `None` for the archive's own root (`./`).
fn safe_relative(entry_path: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in entry_path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Resolves `target` (a symlink's destination) from the real folder
/// `parent`, without touching the disk. `None` if it leaves `root`.
fn link_stays_inside(root: &Path, parent: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut at = parent.to_path_buf();
    for c in target.components() {
        match c {
            Component::Normal(n) => at.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    at.starts_with(root)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use super::*;

    #[test]
    fn glob_matches_names_and_paths() {
        assert!(glob("Singleton*", "SingletonLock"));
        assert!(glob("Cache", "Cache"));
        assert!(!glob("Cache", "CacheStorage"));
        assert!(glob("Default/*.log", "Default/x.log"));
        assert!(!glob("Default/*.log", "Default/a/x.log"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
    }

    #[test]
    fn default_excludes_catch_locks_and_caches_at_any_depth() {
        let ex = Excludes::new(true, &["Default/Sessions".into()]);
        assert!(ex.is_excluded(Path::new("SingletonLock")));
        assert!(ex.is_excluded(Path::new("Default/SingletonCookie")));
        assert!(ex.is_excluded(Path::new("Default/Cache")));
        assert!(ex.is_excluded(Path::new("Default/Code Cache")));
        assert!(ex.is_excluded(Path::new("Default/Sessions")));
        assert!(!ex.is_excluded(Path::new("Default/IndexedDB")));
        assert!(!ex.is_excluded(Path::new("Default/Service Worker/CacheStorage")));
        assert!(!Excludes::new(false, &[]).is_excluded(Path::new("SingletonLock")));
    }

    #[test]
    fn entry_paths_that_leave_the_target_are_refused() {
        assert!(safe_relative(Path::new("../x")).is_err());
        assert!(safe_relative(Path::new("a/../../x")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert_eq!(safe_relative(Path::new("./")).unwrap(), None);
        assert_eq!(
            safe_relative(Path::new("./Default/x")).unwrap(),
            Some(PathBuf::from("Default/x"))
        );
    }

    #[test]
    fn links_are_judged_from_their_real_folder() {
        let root = Path::new("/r");
        assert!(link_stays_inside(
            root,
            Path::new("/r/a"),
            Path::new("../b")
        ));
        assert!(!link_stays_inside(
            root,
            Path::new("/r/a"),
            Path::new("../../b")
        ));
        assert!(!link_stays_inside(root, Path::new("/r"), Path::new("/etc")));
    }

    #[test]
    fn sha256_round_trips_through_hex() {
        let s = Sha256([0xab; 32]);
        assert_eq!(s.to_string().parse::<Sha256>().unwrap(), s);
        assert!("xyz".parse::<Sha256>().is_err());
    }

    fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(
                        p.strip_prefix(dir).unwrap().to_path_buf(),
                        fs::read(&p).unwrap(),
                    );
                }
            }
        }
        out
    }

    #[test]
    fn pack_then_unpack_gives_the_same_files_minus_exclusions() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("Default/IndexedDB/x.leveldb")).unwrap();
        fs::create_dir_all(src.path().join("Default/Cache")).unwrap();
        // Bigger than one block, so several gzip members are stitched.
        let big: Vec<u8> = (0..3 * BLOCK_SIZE as u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        fs::write(
            src.path().join("Default/IndexedDB/x.leveldb/000003.log"),
            &big,
        )
        .unwrap();
        fs::write(src.path().join("Default/Cache/data_0"), b"cache").unwrap();
        fs::write(src.path().join("Local State"), b"{}").unwrap();
        std::os::unix::fs::symlink("host-1", src.path().join("SingletonLock")).unwrap();

        let mut archive = Vec::new();
        let packed = pack(
            src.path(),
            &Excludes::new(true, &[]),
            &PackOptions {
                threads: 3,
                ..Default::default()
            },
            &mut archive,
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(packed.files, 2);
        assert_eq!(packed.size, archive.len() as u64);

        let dst = tempfile::tempdir().unwrap();
        let expect = Expected {
            sha256: packed.sha256,
            size: packed.size,
        };
        let unpacked = unpack(
            &archive[..],
            dst.path(),
            Some(expect),
            Decoding::Plain,
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(unpacked.files, 2);
        let got = tree(dst.path());
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[Path::new("Default/IndexedDB/x.leveldb/000003.log")],
            big
        );
        assert_eq!(got[Path::new("Local State")], b"{}");
    }

    /// A profile of `blocks` tar blocks and its archive, with the expected
    /// checksum.
    fn packed(blocks: usize) -> (tempfile::TempDir, Vec<u8>, Expected) {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("Default/IndexedDB")).unwrap();
        for i in 0..blocks {
            let data: Vec<u8> = (0..BLOCK_SIZE as u32)
                .map(|j| ((i as u32 + 1) * j % 251) as u8)
                .collect();
            fs::write(
                src.path().join(format!("Default/IndexedDB/{i:03}.ldb")),
                data,
            )
            .unwrap();
        }
        let mut archive = Vec::new();
        let packed = pack(
            src.path(),
            &Excludes::default(),
            &PackOptions::default(),
            &mut archive,
            &Progress::default(),
        )
        .unwrap();
        let expect = Expected {
            sha256: packed.sha256,
            size: packed.size,
        };
        (src, archive, expect)
    }

    fn unpack_into(
        archive: &[u8],
        expect: Option<Expected>,
    ) -> Result<tempfile::TempDir, ArchiveError> {
        let dst = tempfile::tempdir().unwrap();
        unpack(
            archive,
            dst.path(),
            expect,
            Decoding::Plain,
            &Progress::default(),
        )?;
        Ok(dst)
    }

    #[test]
    fn archives_without_framed_members_still_unpack() {
        let (src, _, _) = packed(3);
        // The tar stream, gzipped as `tar czf` does (one member) and as
        // older Vigils did (plain members, no length in their headers).
        let mut tar_stream = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut tar_stream);
            builder.append_dir_all(".", src.path()).unwrap();
            builder.finish().unwrap();
        }
        let gzip = |part: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            std::io::Write::write_all(&mut gz, part).unwrap();
            gz.finish().unwrap()
        };
        let one_member = gzip(&tar_stream);
        let plain_members: Vec<u8> = tar_stream.chunks(BLOCK_SIZE).flat_map(gzip).collect();
        // Framed members first, then plain ones.
        let (head, tail) = tar_stream.split_at(2 * BLOCK_SIZE);
        let mut mixed: Vec<u8> = head
            .chunks(BLOCK_SIZE)
            .flat_map(|b| member::compress(b, flate2::Compression::new(6)).unwrap())
            .collect();
        mixed.extend(gzip(tail));
        for (name, archive) in [
            ("one member", one_member),
            ("plain members", plain_members),
            ("mixed", mixed),
        ] {
            let dst = unpack_into(&archive, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(tree(dst.path()), tree(src.path()), "{name}");
        }
    }

    #[test]
    fn a_flipped_bit_in_any_member_is_caught() {
        let (_src, archive, expect) = packed(3);
        for at in [30, archive.len() / 2, archive.len() - 3] {
            let mut bad = archive.clone();
            bad[at] ^= 0x04;
            let err = unpack_into(&bad, Some(expect)).unwrap_err();
            assert!(
                matches!(err, ArchiveError::ChecksumMismatch { .. }),
                "flip at {at}: {err}"
            );
            // Without a checksum to compare, gzip's own checks catch it.
            let err = unpack_into(&bad, None).unwrap_err();
            assert!(err.is_damaged_archive(), "flip at {at}: {err}");
        }
    }

    #[test]
    fn a_truncated_archive_is_caught() {
        let (_src, archive, expect) = packed(3);
        for len in [archive.len() / 2, archive.len() - 1] {
            let cut = &archive[..len];
            let err = unpack_into(cut, Some(expect)).unwrap_err();
            assert!(
                matches!(err, ArchiveError::SizeMismatch { .. }),
                "cut at {len}: {err}"
            );
            let err = unpack_into(cut, None).unwrap_err();
            assert!(err.is_damaged_archive(), "cut at {len}: {err}");
        }
    }

    #[test]
    fn encrypted_archives_need_the_identity() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("Default")).unwrap();
        fs::write(src.path().join("Default/Preferences"), b"secret login").unwrap();
        let identity = age::x25519::Identity::generate();
        let mut archive = Vec::new();
        let options = PackOptions {
            encrypt_to: vec![identity.to_public()],
            ..Default::default()
        };
        pack(
            src.path(),
            &Excludes::default(),
            &options,
            &mut archive,
            &Progress::default(),
        )
        .unwrap();
        assert!(!archive.windows(12).any(|w| w == b"secret login"));

        let identities: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(identity)];
        let dst = tempfile::tempdir().unwrap();
        unpack(
            &archive[..],
            dst.path(),
            None,
            Decoding::Age(&identities),
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(
            fs::read(dst.path().join("Default/Preferences")).unwrap(),
            b"secret login"
        );

        let stranger: Vec<Box<dyn age::Identity + Send + Sync>> =
            vec![Box::new(age::x25519::Identity::generate())];
        let dst = tempfile::tempdir().unwrap();
        let err = unpack(
            &archive[..],
            dst.path(),
            None,
            Decoding::Age(&stranger),
            &Progress::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ArchiveError::Decrypt(_)), "{err}");
        assert!(!err.is_damaged_archive());
    }
}
