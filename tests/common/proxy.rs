//! An HTTP proxy for tests, written here with tokio rather than taken from
//! Vigil: plain HTTP forwarding (absolute-form requests) and `CONNECT`
//! tunnels, one request per client connection, each only with a
//! `Proxy-Authorization: Basic` header carrying the expected user and
//! password; anything else gets `407` with a `Proxy-Authenticate`
//! challenge. It records every request it saw and counts what it
//! forwarded, so a test can tell the page's traffic really went through it,
//! with which credentials.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// `http://host:port/path` or, for CONNECT, `host:port`.
    pub target: String,
    /// The decoded `user:password` of its `Proxy-Authorization`, if any.
    pub credentials: Option<String>,
    /// Forwarded (the credentials were right) or answered 407.
    pub forwarded: bool,
}

pub struct TestProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl TestProxy {
    /// A proxy on 127.0.0.1 that lets through only `user:password`.
    pub async fn start(credentials: &str) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let expected = Arc::new(credentials.to_owned());
        let server = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let (seen, expected) = (seen.clone(), expected.clone());
                    tokio::spawn(async move {
                        let _ = serve(client, &expected, &seen).await;
                    });
                }
            })
        };
        TestProxy { addr, seen, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests forwarded to `host_port` (`127.0.0.1:PORT`).
    pub fn forwarded_to(&self, host_port: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.forwarded && s.target.contains(host_port))
            .collect()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads up to the end of the head (`\r\n\r\n`); returns the head and
/// whatever came after it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn basic_credentials(value: &str) -> Option<String> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

async fn serve(
    mut client: TcpStream,
    expected: &str,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let (head, early_body) = read_head(&mut client).await?;
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let credentials = header(&head, "proxy-authorization").and_then(basic_credentials);
    let forwarded = credentials.as_deref() == Some(expected);
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        credentials,
        forwarded,
    });
    if !forwarded {
        client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"vigil-test\"\r\n\
                  Content-Type: text/plain\r\nContent-Length: 19\r\nConnection: close\r\n\r\n\
                  proxy login needed\n",
            )
            .await?;
        return client.shutdown().await;
    }
    if method == "CONNECT" {
        let mut upstream = TcpStream::connect(&target).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        upstream.write_all(&early_body).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    // Plain HTTP: `GET http://host:port/path HTTP/1.1`.
    let rest = target
        .strip_prefix("http://")
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut upstream = TcpStream::connect(host_port).await?;
    let mut out = format!(
        "{method} {path} {}\r\n",
        head.lines()
            .next()
            .unwrap_or_default()
            .rsplit(' ')
            .next()
            .unwrap_or("HTTP/1.1")
    );
    for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if [
            "proxy-authorization",
            "proxy-connection",
            "connection",
            "keep-alive",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    upstream.write_all(&early_body).await?;
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if length > early_body.len() {
        let mut body = vec![0u8; length - early_body.len()];
        client.read_exact(&mut body).await?;
        upstream.write_all(&body).await?;
    }
    // The answer goes back with `Connection: close`: one request per
    // connection keeps this proxy simple and the count exact.
    let (answer_head, answer_body) = read_head(&mut upstream).await?;
    let mut answer = String::new();
    for line in answer_head.lines().filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if ["connection", "keep-alive"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        answer.push_str(line);
        answer.push_str("\r\n");
    }
    answer.push_str("Connection: close\r\n\r\n");
    client.write_all(answer.as_bytes()).await?;
    client.write_all(&answer_body).await?;
    tokio::io::copy(&mut upstream, &mut client).await?;
    client.shutdown().await
}
