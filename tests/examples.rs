//! The configs the repository ships are the ones operators copy: each must
//! load as Vigil loads it, and the three copies of the WhatsApp Web probe
//! must stay the same.

use std::path::{Path, PathBuf};

use vigil::config::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn load(relative: &str) -> Config {
    let path = repo().join(relative);
    Config::load(&path).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The `vigil.toml: |` block of the Kubernetes ConfigMap, unindented.
fn configmap_toml(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "vigil.toml: |");
    let header = lines
        .next()
        .expect("a `vigil.toml: |` key in the ConfigMap");
    let key_indent = header.len() - header.trim_start().len();
    let mut block = String::new();
    let mut indent = None;
    for line in lines {
        if line.trim().is_empty() {
            block.push('\n');
            continue;
        }
        let this = line.len() - line.trim_start().len();
        if this <= key_indent {
            break;
        }
        let indent = *indent.get_or_insert(this);
        block.push_str(&line[indent.min(this)..]);
        block.push('\n');
    }
    block
}

#[test]
fn make_run_config_starts_the_fixture_and_one_session_on_it() {
    let config = load("examples/vigil.toml");
    let fixture = config.fixture.as_ref().expect("[fixture] is set");
    assert_eq!(config.sessions.len(), 1);
    let session = &config.sessions[0];
    assert_eq!(session.id.as_str(), "main");
    assert_eq!(
        session.url.as_str(),
        format!("http://{}/", fixture.listen),
        "the session opens the fixture app"
    );
    assert!(session.probe.is_some(), "the fixture page has a probe");
    assert!(
        config.api.listen.ip().is_loopback(),
        "no token needed for the first run"
    );
    // Relative paths are the repository's folders.
    assert_eq!(config.policy.dir, repo().join("policies"));
    assert!(config.policy.dir.is_dir());
    assert_eq!(config.data_dir, repo().join("data"));
}

#[test]
fn the_whatsapp_example_the_docker_config_and_the_configmap_agree() {
    let whatsapp = load("examples/whatsapp.toml");
    let docker = load("examples/docker/vigil.toml");
    let yaml = std::fs::read_to_string(repo().join("examples/kubernetes/vigil.yaml")).unwrap();
    let text = configmap_toml(&yaml);
    let file = Path::new("examples/kubernetes/vigil.yaml");
    let kubernetes = Config::parse(&text, file, Path::new("/"))
        .unwrap_or_else(|e| panic!("the ConfigMap's vigil.toml: {e}"));

    let probe = whatsapp.sessions[0]
        .probe
        .clone()
        .expect("a WhatsApp probe");
    for (name, config) in [("docker", &docker), ("kubernetes", &kubernetes)] {
        let session = &config.sessions[0];
        assert!(
            session.url.as_str().starts_with("https://web.whatsapp.com"),
            "{name}: {}",
            session.url
        );
        assert_eq!(session.probe.as_ref(), Some(&probe), "{name}'s probe");
        // Served beside other containers: off loopback, so a token is needed.
        assert!(!config.api.listen.ip().is_loopback(), "{name}");
        assert_eq!(config.data_dir, Path::new("/var/lib/vigil"), "{name}");
        assert_eq!(
            config.policy.dir,
            Path::new("/opt/vigil/policies"),
            "{name}"
        );
    }
    assert!(
        kubernetes.backup.store.to_string().starts_with("s3://"),
        "Kubernetes backs up off the pod's volume"
    );
}

#[test]
fn a_broken_configmap_is_reported_with_its_line() {
    let text = configmap_toml("data:\n  vigil.toml: |\n    data_dir = 3\n  other: x\n");
    assert_eq!(text, "data_dir = 3\n");
    let error = Config::parse(&text, Path::new("cm.toml"), Path::new("/")).unwrap_err();
    assert!(error.to_string().contains("cm.toml:1:"), "{error}");
}

#[test]
fn the_kubernetes_fleet_example_runs_three_pods_that_drain_before_they_stop() {
    let yaml = std::fs::read_to_string(repo().join("examples/kubernetes/fleet.yaml")).unwrap();
    let text = configmap_toml(&yaml);
    let config = Config::parse(
        &text,
        Path::new("examples/kubernetes/fleet.yaml"),
        Path::new("/"),
    )
    .unwrap_or_else(|e| panic!("the fleet ConfigMap's vigil.toml: {e}"));
    let fleet = config.fleet.as_ref().expect("a [fleet] table");
    assert!(config.backup.store.to_string().starts_with("s3://"));
    assert!(fleet.lease >= fleet.renew * 3);
    // Three pods, at most one away at a time, each draining first, with a
    // grace period above the drain's bound.
    assert!(yaml.contains("replicas: 3"), "{yaml}");
    assert!(yaml.contains("kind: PodDisruptionBudget"));
    assert!(yaml.contains("maxUnavailable: 1"));
    assert!(yaml.contains(r#"command: ["/usr/local/bin/vigil", "drain""#));
    let grace: u64 = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .and_then(|n| n.parse().ok())
        .expect("a termination grace period");
    assert!(
        grace > config.service.shutdown_timeout.as_secs() + 30,
        "grace {grace} s leaves no room after the drain"
    );
}
