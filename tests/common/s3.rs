//! A real S3 server (moto) on 127.0.0.1 for the object-storage tests.
//!
//! `make test` starts one server for the whole run and exports its address
//! in `VIGIL_TEST_S3_ENDPOINT`. Without it (plain `cargo test`), the first
//! test that needs S3 starts `moto_server` for this test process; the
//! server dies with the process. A missing `moto_server` fails the test
//! with a message saying how to install it: S3 tests never pass silently.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ENDPOINT_VAR: &str = "VIGIL_TEST_S3_ENDPOINT";

/// Credentials moto accepts (it checks none); object_store needs some.
pub const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "vigil-test"),
    ("AWS_SECRET_ACCESS_KEY", "vigil-test"),
    ("AWS_REGION", "us-east-1"),
];

/// The server's `http://127.0.0.1:PORT`.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();
    match ENDPOINT.get_or_init(|| match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => start_moto(),
    }) {
        Ok(url) => url,
        Err(why) => panic!("no S3 server for the tests: {why}"),
    }
}

/// A new empty bucket, its name unique to this test.
pub fn bucket(hint: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    let name = format!("t-{hint}-{}-{n}", std::process::id());
    let status = http(endpoint(), "PUT", &format!("/{name}"))
        .unwrap_or_else(|e| panic!("creating bucket {name} on {}: {e}", endpoint()));
    assert!(
        status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200"),
        "creating bucket {name}: {status}"
    );
    name
}

/// One request, answered with its status line.
fn http(endpoint: &str, method: &str, path: &str) -> std::io::Result<String> {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = TcpStream::connect(host)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply.lines().next().unwrap_or_default().to_string())
}

/// `moto_server` on PATH, else where scripts/install-deps.sh puts it.
fn moto_binary() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        let tools = std::env::var_os("VIGIL_TOOLS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/vigil")
            });
        tools.join("moto/bin/moto_server")
    })
}

fn start_moto() -> Result<String, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let (tx, rx) = std::sync::mpsc::channel();
    // The parent-death signal follows the thread that forked, not the
    // process: fork from a thread that lives as long as the test process.
    std::thread::spawn(move || {
        let mut cmd = Command::new(moto_binary());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let spawned = cmd.spawn().map(|_child| ()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "moto_server is not installed: run `make test`, or `scripts/install-deps.sh test` \
                 (pip install 'moto[server]')"
                    .to_string()
            } else {
                format!("cannot start moto_server: {e}")
            }
        });
        let _ = tx.send(spawned);
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http(&endpoint, "GET", "/") {
            Ok(status) if status.contains(" 200") => return Ok(endpoint),
            _ if Instant::now() > deadline => {
                return Err(format!(
                    "moto_server did not answer on {endpoint} within 60 s"
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
