//! The web console's files, embedded in the binary (no build step, no
//! Node), served at `/` with headers that forbid anything but the
//! console's own script and style: a strict Content-Security-Policy, no
//! framing, no sniffing, no referrer.
//!
//! These are the only routes open without the token, and they hold no
//! data: the page asks for the token and sends it as a bearer header on
//! every call to `/v1`. It never renders a server string as HTML (see
//! `console/app.js`).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// What the console's page may load and do: its own files, images from
/// the screencast (data: URLs), calls to its own API; nothing inline,
/// nothing framed, no plugins, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
