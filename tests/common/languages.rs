//! Policies in Python and JavaScript for the tests: the examples in
//! `examples/policies/` and the test-only ones in `tests/policies/`, built at
//! most once per test process by scripts/build-policy-examples.sh into
//! target/policy-examples/ (which skips a component whose sources did not
//! change, and installs componentize-py / componentize-js when missing).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::plugins::repo_root;

/// The languages beside Rust, as folder names under examples/policies/.
pub const LANGUAGES: [&str; 2] = ["python", "js"];

fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-policy-examples.sh"))
            .current_dir(repo_root())
            .status()
            .expect("run scripts/build-policy-examples.sh");
        assert!(
            status.success(),
            "building the policy examples failed: {status}"
        );
    });
}

/// `target/policy-examples/<language>/<name>.wasm`, built if needed.
pub fn example(language: &str, name: &str) -> PathBuf {
    ensure_built();
    repo_root()
        .join("target/policy-examples")
        .join(language)
        .join(format!("{name}.wasm"))
}
