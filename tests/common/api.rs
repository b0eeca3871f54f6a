//! The admin API from the outside: a host with its API (in this process,
//! or `vigil run` as a child), an HTTP caller, and two small checkers: the
//! responses against `docs/openapi.json`, and the `/metrics` text against
//! the Prometheus text format.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vigil::api::{ApiServer, ApiToken, Host, Listener, TokenSource};
use vigil::config::Config;
use vigil::supervisor::Supervisor;
use vigil_fixture::{Fixture, FixtureOptions};

use super::chromium;
use super::plugins::repo_root;

pub const TOKEN: &str = "test-token-0123456789abcdef";
/// The read-only token the in-process host also accepts (GET only).
pub const READ_TOKEN: &str = "test-read-token-0123456789abcdef";

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The `vigil.toml` of a test host: one session `main` on the fixture at
/// `app`, profiles and backups under `root`, no policy files (the
/// built-in defaults decide), quick probes. `extra` is appended.
pub fn config_text(root: &Path, app: &str, extra: &str) -> String {
    let chromium = chromium::settings().executable;
    std::fs::create_dir_all(root.join("policies")).expect("policies folder");
    format!(
        r#"data_dir = "{root}/data"

[backup]
store = "file://{root}/backups"

[policy]
dir = "{root}/policies"

[service]
probe_interval_secs = 0.5
connect_timeout_secs = 20

[browser]
executable = "{chromium}"

{extra}

[[session]]
id = "main"
url = "{app}"
probe = {{ script = "document.body.dataset.state" }}
"#,
        root = root.display(),
        chromium = chromium.display(),
    )
}

/// A host running in this process on the fixture app, with its API on a
/// free port.
pub struct TestHost {
    pub root: tempfile::TempDir,
    pub fixture: Fixture,
    pub supervisor: Supervisor,
    pub api: ApiServer,
    pub base: String,
}

impl TestHost {
    /// `backup` is put in the `[backup]` section (e.g. `mode = "live"`),
    /// `extra` (whole sections) before the sessions.
    pub async fn start(backup: &str, extra: &str) -> Self {
        chromium::init_logging();
        let root = tempfile::Builder::new()
            .prefix("vigil-api-test-")
            .tempdir()
            .expect("temp dir");
        // Login codes that do not rotate while a test reads them.
        let fixture = Fixture::start(FixtureOptions {
            code_rotation: Duration::from_secs(600),
            ..FixtureOptions::default()
        })
        .await
        .expect("fixture starts");
        let text = config_text(root.path(), &fixture.url(), extra)
            .replace("[backup]\n", &format!("[backup]\n{backup}\n"));
        let file = root.path().join("vigil.toml");
        std::fs::write(&file, &text).expect("write the config");
        let config = Config::load(&file).expect("the test config is valid");
        let token = ApiToken::new(TOKEN, TokenSource::Env).expect("a valid token");
        let read = ApiToken::new(READ_TOKEN, TokenSource::ReadEnv).expect("a valid token");
        let listener = Listener::bind_with(SocketAddr::from(([127, 0, 0, 1], 0)), token)
            .await
            .expect("the API binds")
            .with_read_token(Some(read));
        let supervisor = Supervisor::start(&config).await.expect("the host starts");
        let api = listener.serve(Host::of(&supervisor), Vec::new());
        let base = format!("http://{}", api.local_addr());
        Self {
            root,
            fixture,
            supervisor,
            api,
            base,
        }
    }

    pub async fn stop(self) {
        self.supervisor.shutdown(Duration::from_secs(30)).await;
        self.api.shutdown().await;
        self.fixture.shutdown().await;
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error.code` of an error answer.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.text()))
            .to_owned()
    }
}

/// Sends `method path` to `base` with `token` as bearer (if any).
pub async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = http
        .request(method.clone(), format!("{base}{path}"))
        .timeout(Duration::from_secs(300));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.expect("a body").to_vec();
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

/// Width and height of a PNG, after checking its signature and that its
/// first chunk is the header.
pub fn png_size(bytes: &[u8]) -> Result<(u32, u32), String> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    if bytes.len() < 24 || bytes[..8] != SIGNATURE {
        return Err(format!(
            "not a PNG: starts with {:?}",
            &bytes[..bytes.len().min(8)]
        ));
    }
    if &bytes[12..16] != b"IHDR" {
        return Err("a PNG whose first chunk is not IHDR".into());
    }
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    Ok((be(16), be(20)))
}

// ---------------------------------------------------------------- OpenAPI

/// `docs/openapi.json`, and a checker of answers against it.
pub struct OpenApi {
    doc: Value,
}

/// One documented operation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    pub method: String,
    pub path: String,
    pub needs_token: bool,
}

impl OpenApi {
    pub fn load() -> Self {
        let path = repo_root().join("docs/openapi.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "not an OpenAPI 3 document"
        );
        Self { doc }
    }

    pub fn operations(&self) -> Vec<Operation> {
        let default_secured = !self.doc["security"].as_array().is_none_or(|s| s.is_empty());
        let mut ops = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                if !["get", "post", "put", "patch", "delete", "head", "options"]
                    .contains(&method.as_str())
                {
                    continue;
                }
                let needs_token = match op.get("security") {
                    Some(s) => !s.as_array().is_none_or(|s| s.is_empty()),
                    None => default_secured,
                };
                ops.push(Operation {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    needs_token,
                });
            }
        }
        ops.sort();
        ops
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        op
    }

    /// Whether `answer` to `method path` is documented: its status, its
    /// content type, and (for JSON) its body against the schema.
    pub fn check(&self, method: &str, path: &str, answer: &Answer) -> Result<(), String> {
        let op = self.operation(method, path);
        let status = answer.status.to_string();
        let Some(documented) = op["responses"].get(&status) else {
            let body = if answer.content_type.starts_with("image/") {
                format!("{} bytes of {}", answer.body.len(), answer.content_type)
            } else {
                answer.text()
            };
            return Err(format!(
                "{method} {path} answered {status}, not documented (body: {body})"
            ));
        };
        let media = answer
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let Some(content) = documented["content"].get(media) else {
            return Err(format!(
                "{method} {path} {status}: content type {media:?} is not documented"
            ));
        };
        if media == "application/json" {
            let body: Value = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("{method} {path} {status}: not JSON: {e}"))?;
            self.validate(&content["schema"], &body, "body")
                .map_err(|e| format!("{method} {path} {status}: {e}"))?;
        }
        Ok(())
    }

    /// A small JSON Schema subset: $ref, anyOf, type (one or a list),
    /// enum, required, properties, additionalProperties, items, minimum.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r
                .strip_prefix("#/components/schemas/")
                .ok_or_else(|| format!("{at}: unsupported $ref {r}"))?;
            let target = &self.doc["components"]["schemas"][name];
            if target.is_null() {
                return Err(format!("{at}: $ref to a missing schema {name}"));
            }
            return self.validate(target, value, at);
        }
        if let Some(any) = schema["anyOf"].as_array() {
            let errors: Vec<String> = any
                .iter()
                .filter_map(|s| self.validate(s, value, at).err())
                .collect();
            if errors.len() == any.len() {
                return Err(format!(
                    "{at}: matches none of anyOf: {}",
                    errors.join("; ")
                ));
            }
            return Ok(());
        }
        if let Some(kinds) = types(&schema["type"])
            && !kinds.iter().any(|k| is_type(value, k))
        {
            return Err(format!("{at}: expected {kinds:?}, got {value}"));
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
            && n < min
        {
            return Err(format!("{at}: {n} is below the minimum {min}"));
        }
        if let Some(items) = schema.get("items")
            && let Some(array) = value.as_array()
        {
            for (i, item) in array.iter().enumerate() {
                self.validate(items, item, &format!("{at}[{i}]"))?;
            }
        }
        if let Some(object) = value.as_object() {
            for field in schema["required"].as_array().into_iter().flatten() {
                let field = field.as_str().expect("required names are strings");
                if !object.contains_key(field) {
                    return Err(format!("{at}: the required field {field:?} is missing"));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, v) in object {
                let at = format!("{at}.{key}");
                match (
                    properties.and_then(|p| p.get(key)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => self.validate(s, v, &at)?,
                    (None, Some(Value::Bool(false))) => {
                        return Err(format!("{at}: not a documented field"));
                    }
                    (None, Some(s)) if s.is_object() => self.validate(s, v, &at)?,
                    (None, _) => {}
                }
            }
        }
        Ok(())
    }

    /// Every error code the document lists.
    pub fn error_codes(&self) -> BTreeSet<String> {
        self.doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
            ["enum"]
            .as_array()
            .expect("the Error schema lists its codes")
            .iter()
            .map(|c| c.as_str().expect("a code").to_owned())
            .collect()
    }
}

fn types(t: &Value) -> Option<Vec<String>> {
    match t {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

fn is_type(v: &Value, kind: &str) -> bool {
    match kind {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

// ------------------------------------------------------------- Prometheus

/// A parsed scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Family name -> (type, help).
    pub families: BTreeMap<String, (String, String)>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Scrape {
    /// The value of the one sample `name` with (at least) `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples.iter().filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        });
        let first = found.next()?;
        assert!(
            found.next().is_none(),
            "more than one sample {name} with {labels:?}"
        );
        Some(first.value)
    }
}

/// Parses the Prometheus text format (0.0.4) strictly: every family has
/// one HELP and one TYPE before its samples, every sample belongs to the
/// family declared just before it (with `_bucket` / `_sum` / `_count` for
/// histograms and summaries), no series repeats, histogram buckets are
/// cumulative and end at `+Inf` = `_count`, counters end in `_total`.
pub fn parse_prometheus(text: &str) -> Result<Scrape, String> {
    if !text.ends_with('\n') {
        return Err("the scrape does not end with a newline".into());
    }
    let mut scrape = Scrape::default();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            check_name(name).map_err(at)?;
            if helps.insert(name.to_owned(), help.to_owned()).is_some() {
                return Err(at(format!("a second HELP for {name}")));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without a type".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if scrape.families.contains_key(name) {
                return Err(at(format!("a second TYPE for {name}")));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(at(format!("counter {name} does not end in _total")));
            }
            let help = helps
                .get(name)
                .cloned()
                .ok_or_else(|| at(format!("TYPE of {name} without a HELP before it")))?;
            if let Some((previous, _)) = current.replace((name.to_owned(), kind.to_owned())) {
                closed.insert(previous);
            }
            scrape
                .families
                .insert(name.to_owned(), (kind.to_owned(), help));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(at("neither a sample nor HELP/TYPE".into()));
        }
        let sample = parse_sample(line).map_err(at)?;
        let Some((family, kind)) = &current else {
            return Err(at("a sample before any TYPE".into()));
        };
        let suffixes: &[&str] = match kind.as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["_sum", "_count", ""],
            _ => &[""],
        };
        let belongs = suffixes
            .iter()
            .any(|s| sample.name == format!("{family}{s}"));
        if !belongs {
            let other = if closed.iter().any(|f| sample.name.starts_with(f.as_str())) {
                " (its family was written earlier: samples must be grouped)"
            } else {
                ""
            };
            return Err(at(format!(
                "sample does not belong to family {family}{other}"
            )));
        }
        if kind == "histogram"
            && sample.name.ends_with("_bucket")
            && !sample.labels.contains_key("le")
        {
            return Err(at("a bucket without le".into()));
        }
        let key = format!("{}{:?}", sample.name, sample.labels);
        if !series.insert(key) {
            return Err(at("the same series twice".into()));
        }
        scrape.samples.push(sample);
    }
    for name in helps.keys() {
        if !scrape.families.contains_key(name) {
            return Err(format!("HELP for {name} without a TYPE"));
        }
    }
    check_histograms(&scrape)?;
    Ok(scrape)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid metric name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, used) = parse_labels(inner)?;
        labels = parsed;
        rest = &inner[used..];
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` -> the labels and the bytes used, the `}` included.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, usize), String> {
    let mut labels = BTreeMap::new();
    let mut i = 0;
    loop {
        if s[i..].starts_with('}') {
            return Ok((labels, i + 1));
        }
        let eq = s[i..].find('=').ok_or("a label without '='")? + i;
        let key = &s[i..eq];
        check_name(key)?;
        if !s[eq + 1..].starts_with('"') {
            return Err(format!("label {key} is not quoted"));
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut close = None;
        for (j, c) in s[eq + 2..].char_indices() {
            if escaped {
                match c {
                    'n' => value.push('\n'),
                    '\\' | '"' => value.push(c),
                    other => return Err(format!("bad escape \\{other}")),
                }
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                close = Some(eq + 2 + j);
                break;
            } else {
                value.push(c);
            }
        }
        let close = close.ok_or("an unterminated label value")?;
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        i = close + 1;
        if s[i..].starts_with(',') {
            i += 1;
        } else if !s[i..].starts_with('}') {
            return Err("labels must be separated by ','".into());
        }
    }
}

fn check_histograms(scrape: &Scrape) -> Result<(), String> {
    for (family, (kind, _)) in &scrape.families {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let count = format!("{family}_count");
        let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in scrape.samples.iter().filter(|s| s.name == bucket) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").expect("checked above");
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|e| format!("{bucket} le={le:?}: {e}"))?
            };
            by_series
                .entry(format!("{labels:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, mut buckets) in by_series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{bucket}{labels}: buckets are not cumulative"));
            }
            let last = buckets.last().expect("at least one bucket");
            if last.0 != f64::INFINITY {
                return Err(format!("{bucket}{labels}: no +Inf bucket"));
            }
            let total = scrape
                .samples
                .iter()
                .find(|s| s.name == count && format!("{:?}", s.labels) == labels)
                .ok_or_else(|| format!("{count}{labels} is missing"))?;
            if total.value != last.1 {
                return Err(format!(
                    "{bucket}{labels}: +Inf bucket differs from {count}"
                ));
            }
        }
    }
    Ok(())
}

/// A config file for a `vigil run` child, and where its things live.
pub struct ChildSetup {
    pub root: tempfile::TempDir,
    pub config: PathBuf,
    pub api: SocketAddr,
    /// The fixture app's URL.
    pub app: String,
}

impl ChildSetup {
    /// `vigil run` serving its own fixture app (which pairs a login code by
    /// itself after a second), with its API on a free port of `api_ip`.
    pub fn new(api_ip: [u8; 4]) -> Self {
        Self::with_fixture(api_ip, "auto_pair_after_secs = 1\n")
    }

    /// `vigil run` serving its own fixture app, configured with
    /// `fixture` (lines of its `[fixture]` section; nothing pairs by
    /// itself unless they say so).
    pub fn with_fixture(api_ip: [u8; 4], fixture: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix("vigil-api-child-")
            .tempdir()
            .expect("temp dir");
        let app_port = free_port();
        let api = SocketAddr::from((api_ip, free_port()));
        let extra = format!(
            "[api]\nlisten = \"{api}\"\n\n[fixture]\nlisten = \"127.0.0.1:{app_port}\"\n{fixture}"
        );
        let text = config_text(
            root.path(),
            &format!("http://127.0.0.1:{app_port}/"),
            &extra,
        );
        let config = root.path().join("vigil.toml");
        std::fs::write(&config, text).expect("write the config");
        Self {
            root,
            config,
            api,
            app: format!("http://127.0.0.1:{app_port}/"),
        }
    }

    /// The token `vigil run` generated (it runs on loopback with none set).
    pub fn generated_token(&self) -> String {
        let path = self.root.path().join("data/api-token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// `vigil <args> --config <this config>`, without a token in the
    /// environment (unless the caller adds one).
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("VIGIL_API_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info,chromiumoxide=error");
        cmd
    }
}

// ---------------------------------------------------------- event stream

/// One server-sent message as it arrived.
#[derive(Debug, Clone)]
pub struct Arrived {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
    /// When this test read it off the socket.
    pub at: std::time::SystemTime,
}

impl Arrived {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("{} data is not JSON ({e}): {}", self.event, self.data))
    }
}

/// `GET /v1/events` read by a task of its own, which stamps each message
/// with the time it arrived: what a dashboard would see, read with no
/// help from Vigil's own client.
pub struct StreamRecorder {
    pub content_type: String,
    arrived: std::sync::Arc<std::sync::Mutex<Vec<Arrived>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl StreamRecorder {
    /// Opens the stream at `base` with `path_and_query` (e.g.
    /// `/v1/events?after=0`).
    pub async fn open(base: &str, path_and_query: &str) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let mut response = http
            .get(format!("{base}{path_and_query}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET the event stream");
        assert_eq!(response.status(), 200, "GET {path_and_query}");
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let arrived = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = arrived.clone();
        let reader = tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let field = |name: &str| {
                        block
                            .lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim_start().to_owned())
                    };
                    // Keep-alive comments carry no event name.
                    let Some(event) = field("event:") else {
                        continue;
                    };
                    sink.lock().unwrap().push(Arrived {
                        id: field("id:").and_then(|v| v.parse().ok()),
                        event,
                        data: field("data:").unwrap_or_default(),
                        at: std::time::SystemTime::now(),
                    });
                }
            }
        });
        Self {
            content_type,
            arrived,
            reader,
        }
    }

    pub fn arrived(&self) -> Vec<Arrived> {
        self.arrived.lock().unwrap().clone()
    }

    /// The first message `pick` accepts, waiting up to `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&Arrived) -> bool,
    ) -> Arrived {
        super::fixture::wait_until(timeout, what, || async {
            self.arrived().into_iter().find(|a| pick(a))
        })
        .await
    }

    /// Whether the host ended the stream.
    pub fn ended(&self) -> bool {
        self.reader.is_finished()
    }
}

impl Drop for StreamRecorder {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

// ---------------------------------------------------------------- terminal

/// The QR codes drawn in `output` (a terminal's text: ANSI colours and
/// upper half blocks, two rows of modules per line), each read back by
/// rqrr as a phone would: the text of each, in order. A drawing that does
/// not read panics, naming it.
pub fn read_terminal_qr_codes(output: &str) -> Vec<String> {
    let mut drawings: Vec<Vec<&str>> = Vec::new();
    let mut in_drawing = false;
    for line in output.lines() {
        if line.contains('\u{2580}') {
            if !in_drawing {
                drawings.push(Vec::new());
            }
            drawings.last_mut().unwrap().push(line);
            in_drawing = true;
        } else {
            in_drawing = false;
        }
    }
    drawings
        .iter()
        .map(|lines| {
            let rows = modules_of(lines);
            read_modules(&rows).unwrap_or_else(|e| panic!("{e}:\n{}", lines.join("\n")))
        })
        .collect()
}

/// Dark (true) or light modules, row by row, from half-block lines: the
/// foreground colour is the upper module, the background the lower.
fn modules_of(lines: &[&str]) -> Vec<Vec<bool>> {
    const DARK: u32 = 16;
    let mut rows = Vec::new();
    for line in lines {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        let (mut fg, mut bg) = (None, None);
        let mut rest = *line;
        while let Some(c) = rest.chars().next() {
            if let Some(seq) = rest.strip_prefix("\u{1b}[") {
                let end = seq.find('m').expect("an SGR sequence");
                let params: Vec<u32> = seq[..end]
                    .split(';')
                    .map(|p| p.parse().expect("a number"))
                    .collect();
                let mut i = 0;
                while i < params.len() {
                    match params[i] {
                        0 => (fg, bg) = (None, None),
                        38 if params.get(i + 1) == Some(&5) => {
                            fg = params.get(i + 2).copied();
                            i += 2;
                        }
                        48 if params.get(i + 1) == Some(&5) => {
                            bg = params.get(i + 2).copied();
                            i += 2;
                        }
                        other => panic!("unexpected SGR parameter {other}"),
                    }
                    i += 1;
                }
                rest = &seq[end + 1..];
                continue;
            }
            assert_eq!(c, '\u{2580}', "only half blocks are drawn: {line:?}");
            let (Some(f), Some(b)) = (fg, bg) else {
                panic!("a block drawn without explicit colours: {line:?}")
            };
            top.push(f == DARK);
            bottom.push(b == DARK);
            rest = &rest[c.len_utf8()..];
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

/// Decodes a module matrix with its quiet zone around it.
fn read_modules(rows: &[Vec<bool>]) -> Result<String, String> {
    let dark_at = |x: usize, y: usize| rows.get(y).and_then(|r| r.get(x)).copied() == Some(true);
    let cells = rows.iter().enumerate().flat_map(|(y, r)| {
        r.iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(move |(x, _)| (x, y))
    });
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (x, y) in cells {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    if x0 == usize::MAX {
        return Err("no dark module".into());
    }
    let side = (x1 - x0 + 1).max(y1 - y0 + 1);
    let (width, height) = (rows[0].len(), rows.len());
    if x0 < 4 || y0 < 4 || width - 1 - x1 < 4 || height - 1 - y1 < 4 {
        return Err(format!(
            "no quiet zone of 4 modules: the code spans ({x0}, {y0})..({x1}, {y1}) of {width}x{height}"
        ));
    }
    let grid = rqrr::SimpleGrid::from_func(side, |x, y| dark_at(x0 + x, y0 + y));
    rqrr::Grid::new(grid)
        .decode()
        .map(|(_, text)| text)
        .map_err(|e| format!("the drawing does not read: {e:?}"))
}
