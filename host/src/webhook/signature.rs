//! The `X-Vigil-Signature` header: `sha256=<hex HMAC-SHA256 of the exact
//! body bytes>`. Signing for Vigil, checking for receivers written in Rust
//! (and for the tests). Never logs or keeps a secret.

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Vigil-Signature";
/// The event's name (`session.state_changed`), also in the body.
pub const EVENT_HEADER: &str = "X-Vigil-Event";
/// The delivery id, also in the body; the same on every retry.
pub const DELIVERY_HEADER: &str = "X-Vigil-Delivery";

const PREFIX: &str = "sha256=";

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
