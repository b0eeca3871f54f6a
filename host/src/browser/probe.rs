//! How a session's page says what state it is in. A probe is per session
//! config (embedded in `vigil.toml`); the outcome is a typed verdict with a
//! detail for logs and policies. Knows no web app by name.

use serde::{Deserialize, Serialize};

/// A per-session probe, in TOML either
///
/// ```toml
/// probe = { script = "document.body.dataset.state" }
/// ```
///
/// where the JS expression (it may return a promise) yields `"connected"`,
/// `"needs-login"`, or anything else (reported as the detail), or
///
/// ```toml
/// probe = { connected = "#chat-list", needs_login = "canvas[aria-label*='QR']" }
/// ```
///
/// where a CSS selector matching some element in the page means that state.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "ProbeSpec", into = "ProbeSpec")]
pub enum Probe {
    Script(String),
    Selectors {
        connected: String,
        needs_login: String,
    },
}

/// The TOML shape of a [`Probe`], checked on conversion.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ProbeSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    script: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    needs_login: Option<String>,
}

impl TryFrom<ProbeSpec> for Probe {
    type Error = String;

    fn try_from(spec: ProbeSpec) -> Result<Self, Self::Error> {
        let blank = |s: &Option<String>| s.as_deref().is_some_and(|s| s.trim().is_empty());
        if blank(&spec.script) || blank(&spec.connected) || blank(&spec.needs_login) {
            return Err("probe: `script`, `connected` and `needs_login` must not be empty".into());
        }
        match spec {
            ProbeSpec {
                script: Some(script),
                connected: None,
                needs_login: None,
            } => Ok(Probe::Script(script)),
            ProbeSpec {
                script: None,
                connected: Some(connected),
                needs_login: Some(needs_login),
            } => Ok(Probe::Selectors {
                connected,
                needs_login,
            }),
            _ => Err(
                "probe: set either `script` (a JS expression) or both `connected` and `needs_login` (CSS selectors)"
                    .into(),
            ),
        }
    }
}

impl From<Probe> for ProbeSpec {
    fn from(p: Probe) -> Self {
        match p {
            Probe::Script(script) => ProbeSpec {
                script: Some(script),
                ..ProbeSpec::default()
            },
            Probe::Selectors {
                connected,
                needs_login,
            } => ProbeSpec {
                script: None,
                connected: Some(connected),
                needs_login: Some(needs_login),
            },
        }
    }
}

impl Probe {
    /// The JS run in the page. Selector probes are one round trip too.
    pub(crate) fn expression(&self) -> String {
        match self {
            Probe::Script(script) => script.clone(),
            Probe::Selectors {
                connected,
                needs_login,
            } => {
                // JSON string literals are valid JS string literals.
                let c = serde_json::Value::from(connected.as_str());
                let n = serde_json::Value::from(needs_login.as_str());
                format!(
                    "[document.querySelector({c}) !== null, document.querySelector({n}) !== null]"
                )
            }
        }
    }

    /// Reads what the expression returned.
    pub(crate) fn judge(&self, value: &serde_json::Value) -> ProbeOutcome {
        match self {
            Probe::Script(_) => judge_script(value),
            Probe::Selectors {
                connected,
                needs_login,
            } => match value.as_array().map(|a| a.as_slice()) {
                Some([serde_json::Value::Bool(c), serde_json::Value::Bool(n)]) => {
                    judge_selectors(connected, *c, needs_login, *n)
                }
                _ => ProbeOutcome::other(format!("selector probe returned {value}")),
            },
        }
    }
}

/// What a probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageState {
    Connected,
    NeedsLogin,
    /// Anything else: loading, disconnected, idle, an error page... The
    /// detail says which.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub state: PageState,
    /// What the page said, for logs and policies: the script's value, the
    /// selector that matched, or why neither applied.
    pub detail: String,
}

impl ProbeOutcome {
    pub(crate) fn other(detail: impl Into<String>) -> Self {
        Self {
            state: PageState::Other,
            detail: detail.into(),
        }
    }

    /// Connected or needs-login: a state worth acting on, as opposed to a
    /// page still loading.
    pub fn is_settled(&self) -> bool {
        self.state != PageState::Other
    }
}

fn judge_script(value: &serde_json::Value) -> ProbeOutcome {
    match value.as_str() {
        Some("connected") => ProbeOutcome {
            state: PageState::Connected,
            detail: "connected".into(),
        },
        Some("needs-login") => ProbeOutcome {
            state: PageState::NeedsLogin,
            detail: "needs-login".into(),
        },
        Some(other) => ProbeOutcome::other(other),
        None => ProbeOutcome::other(value.to_string()),
    }
}

fn judge_selectors(
    connected: &str,
    connected_found: bool,
    needs_login: &str,
    needs_login_found: bool,
) -> ProbeOutcome {
    match (connected_found, needs_login_found) {
        (true, false) => ProbeOutcome {
            state: PageState::Connected,
            detail: format!("matched {connected}"),
        },
        (false, true) => ProbeOutcome {
            state: PageState::NeedsLogin,
            detail: format!("matched {needs_login}"),
        },
        // A page showing both is changing screens: not a state to act on.
        (true, true) => ProbeOutcome::other(format!("both {connected} and {needs_login} matched")),
        (false, false) => {
            ProbeOutcome::other(format!("neither {connected} nor {needs_login} matched"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Session {
        probe: Probe,
    }

    fn parse(toml_text: &str) -> Result<Probe, String> {
        toml::from_str::<Session>(toml_text)
            .map(|s| s.probe)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn probes_read_from_toml() {
        assert_eq!(
            parse("probe = { script = \"document.title\" }"),
            Ok(Probe::Script("document.title".into()))
        );
        assert_eq!(
            parse("probe = { connected = \"#a\", needs_login = \"#b\" }"),
            Ok(Probe::Selectors {
                connected: "#a".into(),
                needs_login: "#b".into()
            })
        );
        for bad in [
            "probe = { connected = \"#a\" }",
            "probe = { script = \"x\", connected = \"#a\", needs_login = \"#b\" }",
            "probe = {}",
            "probe = { script = \" \" }",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("probe:"), "{bad}: {err}");
        }
        assert!(
            parse("probe = { scrip = \"x\" }")
                .unwrap_err()
                .contains("scrip")
        );
    }

    #[test]
    fn the_shipped_whatsapp_example_has_a_valid_probe() {
        #[derive(Deserialize)]
        struct Example {
            session: Vec<ExampleSession>,
        }
        #[derive(Deserialize)]
        struct ExampleSession {
            probe: Probe,
        }
        let text = include_str!("../../../examples/whatsapp.toml");
        let example: Example = toml::from_str(text).unwrap();
        match &example.session[0].probe {
            Probe::Script(s) => {
                assert!(s.contains("\"needs-login\"") && s.contains("\"connected\""))
            }
            other => panic!("expected a script probe, got {other:?}"),
        }
    }

    #[test]
    fn a_probe_survives_a_round_trip_through_toml() {
        #[derive(Serialize, Deserialize)]
        struct S {
            probe: Probe,
        }
        let p = Probe::Selectors {
            connected: "#a".into(),
            needs_login: "#b".into(),
        };
        let text = toml::to_string(&S { probe: p.clone() }).unwrap();
        assert_eq!(toml::from_str::<S>(&text).unwrap().probe, p);
    }

    #[test]
    fn script_values_map_to_states() {
        let p = Probe::Script(String::new());
        assert_eq!(p.judge(&json!("connected")).state, PageState::Connected);
        assert_eq!(p.judge(&json!("needs-login")).state, PageState::NeedsLogin);
        let idle = p.judge(&json!("idle"));
        assert_eq!(
            (idle.state, idle.detail.as_str()),
            (PageState::Other, "idle")
        );
        assert_eq!(p.judge(&json!(null)).detail, "null");
        assert_eq!(p.judge(&json!({"a": 1})).detail, "{\"a\":1}");
    }

    #[test]
    fn selectors_decide_only_when_exactly_one_matches() {
        let p = Probe::Selectors {
            connected: "#c".into(),
            needs_login: "#n".into(),
        };
        assert_eq!(p.judge(&json!([true, false])).state, PageState::Connected);
        assert_eq!(p.judge(&json!([false, true])).state, PageState::NeedsLogin);
        assert_eq!(p.judge(&json!([true, true])).state, PageState::Other);
        let none = p.judge(&json!([false, false]));
        assert_eq!(none.state, PageState::Other);
        assert!(none.detail.contains("neither #c nor #n"));
        assert!(p.expression().contains("document.querySelector(\"#c\")"));
    }
}
