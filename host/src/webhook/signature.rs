//! How a delivery proves it came from Vigil, two ways at once:
//!
//! - Vigil's own `X-Vigil-Signature: sha256=<hex HMAC-SHA256 of the exact
//!   body bytes>`, keyed with the secret's bytes (kept for receivers
//!   written before the second);
//! - [Standard Webhooks](https://www.standardwebhooks.com/): `webhook-id`
//!   (the delivery id, the same on every retry), `webhook-timestamp` (Unix
//!   seconds of this attempt) and `webhook-signature: v1,<base64 of
//!   HMAC-SHA256 over "{id}.{timestamp}.{body}">`, so the spec's libraries
//!   can check it. Its key is [`standard_key`]: the bytes a `whsec_<base64>`
//!   secret decodes to, or else the secret's own bytes.
//!
//! Signing for Vigil, checking for receivers written in Rust. Never logs or
//! keeps a secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Vigil-Signature";
/// The event's name (`session.state_changed`), also in the body.
pub const EVENT_HEADER: &str = "X-Vigil-Event";
/// The delivery id, also in the body; the same on every retry.
pub const DELIVERY_HEADER: &str = "X-Vigil-Delivery";

/// Standard Webhooks: the delivery id.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: Unix seconds when this attempt was signed.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: `v1,<base64>` (space-separated if several).
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

const PREFIX: &str = "sha256=";
/// How Standard Webhooks writes a secret: this, then the key in base64.
const WHSEC: &str = "whsec_";
const V1: &str = "v1,";

/// The Standard Webhooks key of `secret`: a `whsec_<base64>` secret is the
/// key its base64 decodes to (as the spec's libraries read it); any other
/// secret is used as it is, byte for byte, as for `X-Vigil-Signature`.
/// A `whsec_` secret whose rest is not base64 is refused rather than
/// silently used as raw bytes a receiver would not use.
pub fn standard_key(secret: &[u8]) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.strip_prefix(WHSEC.as_bytes()) else {
        return Ok(secret.to_vec());
    };
    match BASE64.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("it starts with whsec_ but holds no key after it".into()),
        Err(e) => Err(format!(
            "it starts with whsec_ but the rest is not base64 ({e}); a whsec_ secret is the key in base64"
        )),
    }
}

fn standard_mac(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for one attempt.
pub fn sign_standard(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let tag = standard_mac(key, id, timestamp, body)
        .finalize()
        .into_bytes();
    format!("{V1}{}", BASE64.encode(tag))
}

/// Whether one of the `v1,` signatures in `header` is `body` with this id
/// and timestamp, signed with `key` (compared in constant time). The
/// timestamp's age is the receiver's to judge.
pub fn verify_standard(key: &[u8], id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
    header
        .split_whitespace()
        .filter_map(|s| s.strip_prefix(V1))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .any(|tag| {
            standard_mac(key, id, timestamp, body)
                .verify_slice(&tag)
                .is_ok()
        })
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac
}

/// The header value for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let tag = mac(secret, body).finalize().into_bytes();
    let mut out = String::with_capacity(PREFIX.len() + 64);
    out.push_str(PREFIX);
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `header` (the `X-Vigil-Signature` value) is `body` signed with
/// `secret`. The tags are compared in constant time, so a forger learns
/// nothing from how long a refusal takes.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(tag) = header.trim().strip_prefix(PREFIX).and_then(decode_hex) else {
        return false;
    };
    mac(secret, body).verify_slice(&tag).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn matches_the_standard_webhooks_reference_example() {
        // The example of the Standard Webhooks reference libraries.
        let key = standard_key(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign_standard(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify_standard(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bm9wZQ== {signature}")
        ));
        assert!(!verify_standard(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265331,
            body,
            &signature
        ));
    }

    #[test]
    fn other_secrets_are_keys_as_they_are_and_bad_whsec_is_refused() {
        assert_eq!(standard_key(b"plain secret").unwrap(), b"plain secret");
        assert!(standard_key(b"whsec_not base64!").is_err());
        assert!(standard_key(b"whsec_").is_err());
    }

    #[test]
    fn verifies_only_the_same_body_with_the_same_secret() {
        let body = br#"{"event":"backup.failed"}"#;
        let header = sign(b"s3cret", body);
        assert!(verify(b"s3cret", body, &header));
        assert!(!verify(b"other", body, &header));
        assert!(!verify(b"s3cret", br#"{"event":"backup.saved"}"#, &header));
        // Truncated, unprefixed or garbled headers are refusals, not panics.
        assert!(!verify(b"s3cret", body, &header[..header.len() - 2]));
        assert!(!verify(
            b"s3cret",
            body,
            header.trim_start_matches("sha256=")
        ));
        assert!(!verify(b"s3cret", body, "sha256="));
        assert!(!verify(b"s3cret", body, "sha256=zz"));
        assert!(!verify(b"s3cret", body, "sha256=é"));
    }
}
