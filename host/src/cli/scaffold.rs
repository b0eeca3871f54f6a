//! `vigil policy new`: lays out a policy folder that builds and passes its
//! scenario as it is, in Rust, Python or JavaScript.
//!
//! Everything it writes is embedded in this binary, so a scaffold made
//! anywhere builds against the WIT this binary speaks: the sources are the
//! default policies of each language (the Rust plugins in `plugins/`, the
//! examples in `examples/policies/`), the policy file and the scenario are
//! the shipped ones (`policies/`), and the build scripts are the templates
//! beside this file, with the tool versions of `scripts/policy-tools.env`.
//! It never overwrites anything: an existing folder is refused.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vigil::policy::Role;

/// The WIT this binary speaks.
const WIT: &str = include_str!("../../../wit/policy.wit");
/// The pinned tool versions, as `KEY=value` lines.
const TOOLS: &str = include_str!("../../../scripts/policy-tools.env");

/// The language a policy is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    Js,
}

impl Language {
    pub fn describe(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::Js => "JavaScript",
        }
    }
}

/// The role a new policy plays (a clap-friendly copy of [`Role`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Keepalive,
    Watchdog,
    Restore,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Keepalive => Role::Keepalive,
            RoleArg::Watchdog => Role::Watchdog,
            RoleArg::Restore => Role::Restore,
        }
    }
}

/// The shipped default of a role: its plugin's name, source in each
/// language, policy file and scenario.
struct Shipped {
    plugin: &'static str,
    rust: &'static str,
    python: &'static str,
    js: &'static str,
    policy: &'static str,
    scenario: &'static str,
}

fn shipped_of(role: Role) -> Shipped {
    match role {
        Role::Keepalive => Shipped {
            plugin: "activity",
            rust: include_str!("../../../plugins/activity/src/lib.rs"),
            python: include_str!("../../../examples/policies/python/activity/app.py"),
            js: include_str!("../../../examples/policies/js/activity/app.js"),
            policy: include_str!("../../../policies/activity.toml"),
            scenario: include_str!("../../../policies/scenarios/activity.toml"),
        },
        Role::Watchdog => Shipped {
            plugin: "heartbeat",
            rust: include_str!("../../../plugins/heartbeat/src/lib.rs"),
            python: include_str!("../../../examples/policies/python/heartbeat/app.py"),
            js: include_str!("../../../examples/policies/js/heartbeat/app.js"),
            policy: include_str!("../../../policies/heartbeat.toml"),
            scenario: include_str!("../../../policies/scenarios/heartbeat.toml"),
        },
        Role::Restore => Shipped {
            plugin: "restore-default",
            rust: include_str!("../../../plugins/restore-default/src/lib.rs"),
            python: include_str!("../../../examples/policies/python/restore-default/app.py"),
            js: include_str!("../../../examples/policies/js/restore-default/app.js"),
            policy: include_str!("../../../policies/restore.toml"),
            scenario: include_str!("../../../policies/scenarios/restore.toml"),
        },
    }
}

/// A scaffold laid out on disk.
pub struct Created {
    /// The folder as the commands below name it.
    pub shown: String,
    /// Files written, relative to `dir`.
    pub files: Vec<PathBuf>,
    /// The command that builds the policy.
    pub build: String,
    /// The command that runs its scenario.
    pub test: String,
    /// The shipped plugin whose decisions it makes.
    pub like: &'static str,
}

/// A policy name: a folder, a `.wasm`, a policy file and (in Rust) a crate
/// name, so lowercase letters, digits and inner dashes only.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "{name:?} is not a valid policy name: use 1 to 64 lowercase letters, digits and dashes, starting with a letter and not ending with a dash (it names the folder, the .wasm and the policy file)"
        );
    }
    Ok(())
}

/// The files of a new policy `name`, by path relative to its folder.
pub fn files(name: &str, role: Role, language: Language) -> Vec<(PathBuf, String)> {
    let shipped = shipped_of(role);
    let build = |template: &str| render(template, name, role);
    let mut files: Vec<(&str, String)> = match language {
        Language::Rust => vec![
            (
                "src/lib.rs",
                shipped
                    .rust
                    .replace(r#"path: "../../wit""#, r#"path: "wit""#),
            ),
            ("Cargo.toml", build(include_str!("scaffold/Cargo.toml.in"))),
            (
                ".cargo/config.toml",
                include_str!("scaffold/cargo-config.toml").to_owned(),
            ),
            ("build.sh", build(include_str!("scaffold/build-rust.sh"))),
            (".gitignore", "*.wasm\ntarget/\n".to_owned()),
        ],
        Language::Python => vec![
            ("app.py", shipped.python.to_owned()),
            ("build.sh", build(include_str!("scaffold/build-python.sh"))),
            (".gitignore", "*.wasm\n__pycache__/\n".to_owned()),
        ],
        Language::Js => vec![
            ("app.js", shipped.js.to_owned()),
            ("build.sh", build(include_str!("scaffold/build-js.sh"))),
            (".gitignore", "*.wasm\n".to_owned()),
        ],
    };
    files.push(("wit/policy.wit", WIT.to_owned()));
    files.push(("policy.toml", policy_file(name, role, language, &shipped)));
    files.push(("scenario.toml", scenario(name, &shipped)));
    files
        .into_iter()
        .map(|(path, text)| {
            let path = if path == "policy.toml" {
                PathBuf::from(format!("{name}.toml"))
            } else {
                PathBuf::from(path)
            };
            (path, text)
        })
        .collect()
}

/// Creates `parent/name/` with a new policy. Refuses an existing path.
pub fn create(
    parent: &Path,
    name: &str,
    role: Role,
    language: Language,
) -> anyhow::Result<Created> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; choose another name or remove it first (nothing was written)",
            dir.display()
        );
    }
    let files = files(name, role, language);
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, text) in &files {
        let full = dir.join(path);
        if let Some(folder) = full.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        std::fs::write(&full, text).with_context(|| format!("cannot write {}", full.display()))?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", full.display()))?;
        }
    }
    let shown = display_dir(parent, name);
    Ok(Created {
        build: format!("{shown}/build.sh"),
        test: format!("vigil policy test {shown}/{name}.toml --scenario {shown}/scenario.toml"),
        files: files.into_iter().map(|(p, _)| p).collect(),
        like: shipped_of(role).plugin,
        shown,
    })
}

/// The folder as the operator typed it: `name` in the current folder.
fn display_dir(parent: &Path, name: &str) -> String {
    if parent == Path::new(".") || parent.as_os_str().is_empty() {
        name.to_owned()
    } else {
        parent.join(name).display().to_string()
    }
}

/// The value of `KEY=value` in scripts/policy-tools.env.
pub fn tool_version(key: &str) -> &'static str {
    TOOLS
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("scripts/policy-tools.env has no {key}"))
}

fn render(template: &str, name: &str, role: Role) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{role}}", role.as_str())
        .replace("{{world}}", role.as_str())
        .replace(
            "{{componentize_py}}",
            tool_version("COMPONENTIZE_PY_VERSION"),
        )
        .replace(
            "{{componentize_js}}",
            tool_version("COMPONENTIZE_JS_VERSION"),
        )
        .replace("{{wit_bindgen}}", tool_version("WIT_BINDGEN_VERSION"))
}

/// The shipped policy file of the role, bound to the new plugin, under a
/// header that says what the folder is.
fn policy_file(name: &str, role: Role, language: Language, shipped: &Shipped) -> String {
    let source = match language {
        Language::Rust => "src/lib.rs",
        Language::Python => "app.py",
        Language::Js => "app.js",
    };
    let mut out = format!(
        "# {name}: a {role} policy in {} ({source}), built into {name}.wasm by\n\
         # build.sh. It starts as a copy of Vigil's default {role} policy\n\
         # ({}): the same decisions, so the shipped scenario passes.\n\
         # Format: Vigil's README, \"Policy files\".\n",
        language.describe(),
        shipped.plugin,
    );
    let body = shipped
        .policy
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| {
            if l.starts_with("plugin = ") {
                format!("plugin = \"{name}.wasm\"")
            } else if l.starts_with("memory = ") && language == Language::Python {
                // Measured: a fresh CPython instance starts with 12.6 MiB
                // of linear memory, too close to the 16 MiB default.
                "memory = \"32MiB\"   # a Python instance starts with about 13 MiB".to_owned()
            } else {
                l.to_owned()
            }
        });
    for line in body {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The shipped scenario of the role, with the command that runs it.
fn scenario(name: &str, shipped: &Shipped) -> String {
    let body: Vec<&str> = shipped
        .scenario
        .lines()
        .skip_while(|l| l.starts_with("# `vigil policy test"))
        .collect();
    format!(
        "# `vigil policy test {name}/{name}.toml --scenario {name}/scenario.toml`\n\
         # The shipped scenario of {}: change what it expects as you change\n\
         # the policy. Format: Vigil's README, \"Testing a policy\".\n{}\n",
        shipped.plugin,
        body.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_folder_wasm_and_crate_safe() {
        for ok in ["mine", "my-watchdog", "w2"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "Mine", "-x", "x-", "my_policy", "a/b", "..", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_language_and_role_gets_a_source_wit_policy_and_scenario() {
        for role in Role::ALL {
            for language in [Language::Rust, Language::Python, Language::Js] {
                let files = files("mine", role, language);
                let text = |p: &str| {
                    &files
                        .iter()
                        .find(|(path, _)| path == Path::new(p))
                        .unwrap_or_else(|| panic!("{p} for {role} in {language:?}"))
                        .1
                };
                assert_eq!(text("wit/policy.wit"), WIT);
                let policy = text("mine.toml");
                assert!(policy.contains("\nplugin = \"mine.wasm\"\n"), "{policy}");
                assert!(policy.contains(&format!("role = \"{role}\"")), "{policy}");
                assert!(text("scenario.toml").contains(&format!("role = \"{role}\"")));
                assert!(!text("build.sh").contains("{{"), "{}", text("build.sh"));
                if language == Language::Rust {
                    assert!(text("src/lib.rs").contains(r#"path: "wit""#));
                    assert!(text("Cargo.toml").contains("name = \"mine\""));
                }
            }
        }
    }

    #[test]
    fn pins_are_the_ones_the_workspace_builds_with() {
        let lock = include_str!("../../../Cargo.lock");
        let wit_bindgen = tool_version("WIT_BINDGEN_VERSION");
        assert!(
            lock.contains(&format!(
                "name = \"wit-bindgen\"\nversion = \"{wit_bindgen}\""
            )),
            "Cargo.lock has no wit-bindgen {wit_bindgen}"
        );
        assert!(!tool_version("COMPONENTIZE_PY_VERSION").is_empty());
        assert!(!tool_version("COMPONENTIZE_JS_VERSION").is_empty());
    }
}
