//! A client of a running host's admin API, for the CLI (`vigil status`,
//! `vigil screenshot`, `vigil login`, `vigil events`, `vigil backup` while
//! the host runs) and the tests. Answers are kept as JSON values: the
//! caller picks what it shows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use super::auth::{ApiToken, TokenSource};
use crate::config::Config;
use crate::id::SessionId;

/// How long to wait for a connection: the host is local or near.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longer than the server's own bound on backups and restores, so the
/// server's 504 (with its explanation) arrives first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(16 * 60);
/// An event stream has no end; silence this long (three of the server's
/// keep-alives) means the host is gone.
const STREAM_SILENCE: Duration = Duration::from_secs(45);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no Vigil host answers at {addr}: {reason} (is `vigil run` running with this config?)")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("{message}")]
    Api {
        status: u16,
        /// The stable error code (`state_conflict`, `session_not_found`, ...).
        code: String,
        message: String,
    },
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    /// The token could not be read where `vigil run` keeps it.
    #[error("{0}")]
    Token(String),
}

impl ClientError {
    /// The API's error code, when the host answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Talks to one host.
pub struct ApiClient {
    addr: SocketAddr,
    base: String,
    token: Option<ApiToken>,
    /// Where `vigil run` writes the token it generates at each start, when
    /// that is where this client's token comes from: a host that started
    /// just now may replace it after this client read it, so a `401` makes
    /// the client read it again, once.
    regenerated: Option<std::path::PathBuf>,
    http: reqwest::Client,
    /// For event streams: no bound on the whole request, one on silence.
    streaming: reqwest::Client,
}

/// The QR code a session's page shows (`GET /v1/sessions/{id}/qr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginQr {
    /// What the code says. Text from a web page: escape it before printing.
    pub text: String,
    /// The code cut out of a screenshot, as PNG.
    pub png: Vec<u8>,
}

/// One message of the event stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// An event: its number on the host and its body (the webhook body).
    Event { id: Option<u64>, body: Value },
    /// The client fell behind and `missed` events were lost.
    Lagged { missed: u64 },
}

impl ApiClient {
    /// A client for the host at `addr` (an unspecified address such as
    /// `0.0.0.0` means this machine).
    pub fn new(addr: SocketAddr, token: Option<ApiToken>) -> Self {
        let addr = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
            }
            _ => addr,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds");
        let streaming = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(STREAM_SILENCE)
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds");
        Self {
            addr,
            base: format!("http://{addr}"),
            token,
            regenerated: None,
            http,
            streaming,
        }
    }

    /// A client for the host `config` describes, with the token from
    /// `VIGIL_API_TOKEN`, `[api] token_file` or the one `vigil run`
    /// generated (see `ApiToken::for_client`).
    pub fn for_config(config: &Config) -> Result<Self, ClientError> {
        let token = ApiToken::for_client(config, std::env::var("VIGIL_API_TOKEN").ok()).map_err(
            |reason| ClientError::Protocol {
                url: config.file.display().to_string(),
                reason,
            },
        )?;
        let mut client = Self::new(config.api.listen, token);
        let from_env = std::env::var("VIGIL_API_TOKEN").is_ok_and(|t| !t.trim().is_empty());
        if !from_env && config.api.token_file.is_none() {
            client.regenerated = Some(super::auth::generated_token_path(config));
        }
        Ok(client)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a token was found to send.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a Vigil host answers `/healthz` here (within a second or two).
    pub async fn is_running(&self) -> bool {
        let request = self
            .http
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(2));
        match request.send().await {
            Ok(response) => {
                response.status().is_success()
                    && response
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["status"] == "ok")
            }
            Err(_) => false,
        }
    }

    pub async fn sessions(&self) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, "/v1/sessions", None)
            .await?
            .json()
            .await
    }

    /// Adds a session (`body` is its `[[session]]` as JSON); the new
    /// session as the host sees it.
    pub async fn add_session(&self, body: Value) -> Result<Value, ClientError> {
        self.send(reqwest::Method::POST, "/v1/sessions", Some(body))
            .await?
            .json()
            .await
    }

    /// Hands every session of the host over to the fleet (`POST
    /// /v1/host/drain`); what was handed over.
    pub async fn drain(&self) -> Result<Value, ClientError> {
        self.send(reqwest::Method::POST, "/v1/host/drain", None)
            .await?
            .json()
            .await
    }

    /// Removes a session (and its backups with `forget`).
    pub async fn remove_session(&self, id: &SessionId, forget: bool) -> Result<Value, ClientError> {
        let path = format!("/v1/sessions/{id}?forget={forget}");
        self.send(reqwest::Method::DELETE, &path, None)
            .await?
            .json()
            .await
    }

    pub async fn session(&self, id: &SessionId) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None)
            .await?
            .json()
            .await
    }

    pub async fn backups(&self, id: &SessionId) -> Result<Value, ClientError> {
        let path = format!("/v1/sessions/{id}/backups");
        self.send(reqwest::Method::GET, &path, None)
            .await?
            .json()
            .await
    }

    /// Backs the session up now; the new backup.
    pub async fn backup_now(&self, id: &SessionId) -> Result<Value, ClientError> {
        let path = format!("/v1/sessions/{id}/backups");
        self.send(reqwest::Method::POST, &path, None)
            .await?
            .json()
            .await
    }

    /// Restores `backup` (or the newest good one); the restore report.
    pub async fn restore(
        &self,
        id: &SessionId,
        backup: Option<&str>,
        force: bool,
    ) -> Result<Value, ClientError> {
        let path = format!("/v1/sessions/{id}/restore");
        let body = Some(serde_json::json!({ "backup": backup, "force": force }));
        self.send(reqwest::Method::POST, &path, body)
            .await?
            .json()
            .await
    }

    pub async fn restart(&self, id: &SessionId) -> Result<Value, ClientError> {
        let path = format!("/v1/sessions/{id}/restart");
        self.send(reqwest::Method::POST, &path, None)
            .await?
            .json()
            .await
    }

    /// A PNG of the session's page.
    pub async fn screenshot(&self, id: &SessionId) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/sessions/{id}/screenshot");
        self.send(reqwest::Method::GET, &path, None)
            .await?
            .bytes()
            .await
    }

    /// The QR code the session's page shows now; `None` when it shows
    /// none (the API's `no_qr_code`).
    pub async fn login_qr(&self, id: &SessionId) -> Result<Option<LoginQr>, ClientError> {
        let path = format!("/v1/sessions/{id}/qr");
        let answer = match self.send(reqwest::Method::GET, &path, None).await {
            Ok(answer) => answer.json().await?,
            Err(e) if e.code() == Some("no_qr_code") => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |reason: &str| ClientError::Protocol {
            url: format!("{}{path}", self.base),
            reason: reason.to_owned(),
        };
        let text = answer["text"].as_str().ok_or_else(|| bad("no text"))?;
        let png = answer["png"]
            .as_str()
            .and_then(|b| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b).ok()
            })
            .ok_or_else(|| bad("png is not base64"))?;
        Ok(Some(LoginQr {
            text: text.to_owned(),
            png,
        }))
    }

    /// The events the host keeps (`GET /v1/events/recent`).
    pub async fn recent_events(&self) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, "/v1/events/recent", None)
            .await?
            .json()
            .await
    }

    /// The host's event stream (`GET /v1/events`), after event `after` when
    /// given (the kept ones are replayed first).
    pub async fn events(&self, after: Option<u64>) -> Result<EventStream, ClientError> {
        let path = match after {
            Some(n) => format!("/v1/events?after={n}"),
            None => "/v1/events".to_owned(),
        };
        let answer = self
            .send_via(&self.streaming, reqwest::Method::GET, &path, None)
            .await?;
        Ok(EventStream {
            url: answer.url,
            response: answer.response,
            buffer: Vec::new(),
        })
    }

    pub async fn policies(&self) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, "/v1/policies", None)
            .await?
            .json()
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, ClientError> {
        self.send_via(&self.http, method, path, body).await
    }

    /// Sends with `http`; a `401` with a generated token reads the token
    /// file again and retries once.
    async fn send_via(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, ClientError> {
        let first = self
            .send_with(
                http,
                method.clone(),
                path,
                body.clone(),
                self.token.as_ref(),
            )
            .await;
        let Err(ClientError::Api { status: 401, .. }) = &first else {
            return first;
        };
        let Some(file) = &self.regenerated else {
            return first;
        };
        // A host that started just now writes its new token a moment after
        // it may already answer; read it again and retry once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fresh = std::fs::read_to_string(file)
            .ok()
            .and_then(|secret| ApiToken::new(&secret, TokenSource::Generated(file.clone())).ok());
        match fresh {
            Some(fresh)
                if self
                    .token
                    .as_ref()
                    .is_none_or(|t| t.secret() != fresh.secret()) =>
            {
                self.send_with(http, method, path, body, Some(&fresh)).await
            }
            _ => first,
        }
    }

    async fn send_with(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&ApiToken>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = http.request(method, &url);
        if let Some(token) = token {
            request = request.bearer_auth(token.secret());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                ClientError::Unreachable {
                    addr: self.addr,
                    reason: root_cause(&e),
                }
            } else {
                ClientError::Protocol {
                    url: url.clone(),
                    reason: root_cause(&e),
                }
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(Answer { url, response });
        }
        let text = response.text().await.unwrap_or_default();
        let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = error["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let mut message = error["error"]["message"]
            .as_str()
            .map_or_else(|| format!("{url}: HTTP {status}: {text}"), str::to_owned);
        if code == "unauthorized" {
            match token {
                Some(t) => message.push_str(&format!(" (token from {})", t.source())),
                None => {
                    message.push_str(" (no token found: set VIGIL_API_TOKEN or [api] token_file)")
                }
            }
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }
}

struct Answer {
    url: String,
    response: reqwest::Response,
}

impl Answer {
    async fn json(self) -> Result<Value, ClientError> {
        let url = self.url;
        self.response
            .json()
            .await
            .map_err(|e| ClientError::Protocol {
                url,
                reason: root_cause(&e),
            })
    }

    async fn bytes(self) -> Result<Vec<u8>, ClientError> {
        let url = self.url;
        self.response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Protocol {
                url,
                reason: root_cause(&e),
            })
    }
}

/// The host's event stream, read one message at a time.
pub struct EventStream {
    url: String,
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event or lag notice; `None` when the host ended the stream
    /// (it is shutting down). Keep-alive comments are skipped.
    pub async fn next(&mut self) -> Result<Option<StreamItem>, ClientError> {
        loop {
            while let Some(block) = take_block(&mut self.buffer) {
                if let Some(item) = parse_block(&block).map_err(|reason| ClientError::Protocol {
                    url: self.url.clone(),
                    reason,
                })? {
                    return Ok(Some(item));
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|e| ClientError::Protocol {
                    url: self.url.clone(),
                    reason: root_cause(&e),
                })?;
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}

/// Cuts the first complete message (up to a blank line) off `buffer`.
fn take_block(buffer: &mut Vec<u8>) -> Option<String> {
    let end = buffer.windows(2).position(|w| w == b"\n\n")?;
    let block: Vec<u8> = buffer.drain(..end + 2).collect();
    Some(String::from_utf8_lossy(&block).into_owned())
}

/// One server-sent message; `None` for a comment-only block.
fn parse_block(block: &str) -> Result<Option<StreamItem>, String> {
    let (mut id, mut name, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = value.parse::<u64>().ok(),
            "event" => name = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let data = data.join("\n");
    let value: Value =
        serde_json::from_str(&data).map_err(|e| format!("event {name}: data is not JSON: {e}"))?;
    if name == "lagged" {
        return Ok(Some(StreamItem::Lagged {
            missed: value["missed"].as_u64().unwrap_or(0),
        }));
    }
    Ok(Some(StreamItem::Event { id, body: value }))
}

/// reqwest's own message is "error sending request"; the cause says why.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_messages_are_cut_at_blank_lines_and_comments_skipped() {
        let mut buffer =
            b": keep-alive\n\nid: 7\nevent: backup.saved\ndata: {\"event\":\"backup.saved\"}\n\nevent: lag"
                .to_vec();
        let first = take_block(&mut buffer).unwrap();
        assert_eq!(parse_block(&first), Ok(None));
        let second = take_block(&mut buffer).unwrap();
        assert_eq!(
            parse_block(&second),
            Ok(Some(StreamItem::Event {
                id: Some(7),
                body: serde_json::json!({ "event": "backup.saved" }),
            }))
        );
        assert_eq!(take_block(&mut buffer), None, "an unfinished message waits");
        buffer.extend_from_slice(b"ged\ndata: {\"missed\": 3}\n\n");
        let third = take_block(&mut buffer).unwrap();
        assert_eq!(
            parse_block(&third),
            Ok(Some(StreamItem::Lagged { missed: 3 }))
        );
        assert!(parse_block("event: x\ndata: {nope\n\n").is_err());
    }
}
