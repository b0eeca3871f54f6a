//! Built policy plugins for the tests: the default ones (`plugins/`) and
//! the misbehaving test-only ones (`tests/plugins/`). Built at most once per
//! test process, with the same script as `make plugins` (which builds in
//! its own target dir, so it does not wait on the lock `cargo test` holds).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-plugins.sh"))
            .current_dir(repo_root())
            .status()
            .expect("run scripts/build-plugins.sh");
        assert!(status.success(), "building the plugins failed: {status}");
    });
}

/// `target/plugins/<name>.wasm`, built if needed.
pub fn plugin(name: &str) -> PathBuf {
    ensure_built();
    repo_root()
        .join("target/plugins")
        .join(format!("{name}.wasm"))
}

/// `target/test-plugins/<name>.wasm`, built if needed.
pub fn test_plugin(name: &str) -> PathBuf {
    ensure_built();
    repo_root()
        .join("target/test-plugins")
        .join(format!("{name}.wasm"))
}

/// A compile cache shared by the tests: a debug build of the host compiles
/// a plugin in about a second, from the cache in milliseconds.
pub fn compile_cache() -> PathBuf {
    repo_root().join("target/policy-test-cache")
}
