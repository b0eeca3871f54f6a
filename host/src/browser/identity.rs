//! Who a session's browser says it is to its web app: the user agent, the
//! language, the time zone, and the proxy its traffic leaves through. Each
//! value is checked when `vigil.toml` is read (its `Deserialize` refuses a
//! bad one, so the error carries the value's line and column); the command
//! line and environment they become are built here as plain data, tested
//! without a browser. Proxy credentials are only named here: they are read
//! at launch ([`ProxyCredentials::read`]) and never logged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::{SecretError, SecretSource};

/// What headless Chromium calls itself; servers flag it.
pub const HEADLESS_PRODUCT: &str = "HeadlessChrome";

/// A session's browser identity. Every part is optional: what is not set
/// is Chromium's own, except that the user agent never says
/// [`HEADLESS_PRODUCT`] (see [`unheadless`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub user_agent: Option<UserAgent>,
    pub locale: Option<Locale>,
    pub timezone: Option<TimeZone>,
    pub proxy: Option<Proxy>,
}

impl Identity {
    /// Command-line flags for this identity (the user agent only when it
    /// is set here; the default one is the launch's business).
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(ua) = &self.user_agent {
            flags.push(format!("--user-agent={ua}"));
        }
        if let Some(locale) = &self.locale {
            // Sets navigator.language(s) in pages and their workers, and
            // the Accept-Language header; `--lang` does neither headless.
            flags.push(format!("--accept-lang={locale}"));
        }
        if let Some(proxy) = &self.proxy {
            flags.push(format!("--proxy-server={}", proxy.url.for_chromium()));
        }
        flags
    }

    /// Environment variables for the Chromium process: `TZ`, which every
    /// renderer and worker inherits (a DevTools override would reach the
    /// page only).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.timezone
            .iter()
            .map(|tz| ("TZ", tz.as_str().to_owned()))
            .collect()
    }
}

/// The user agent Chromium reports, with "HeadlessChrome" made "Chrome";
/// `None` when it does not say "HeadlessChrome" (nothing to hide).
pub fn unheadless(user_agent: &str) -> Option<String> {
    user_agent
        .contains(HEADLESS_PRODUCT)
        .then(|| user_agent.replace(HEADLESS_PRODUCT, "Chrome"))
}

/// A `User-Agent` string: one line of printable text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserAgent(String);

impl UserAgent {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UserAgent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(
                "user_agent is empty; leave it out for Chromium's own (without \"HeadlessChrome\")"
                    .into(),
            );
        }
        if s.len() > 1024 {
            return Err(format!(
                "user_agent is {} bytes long; keep it under 1024",
                s.len()
            ));
        }
        if !s.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            return Err(format!(
                "user_agent {s:?} may only hold printable ASCII (it travels in an HTTP header)"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// A BCP 47 language tag (`de-DE`, `pt-BR`, `en`, `zh-Hant-TW`), in its
/// usual case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Locale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "locale {s:?} is not a language tag like \"de-DE\", \"pt-BR\" or \"en\": {why}"
            ))
        };
        if s.contains('_') {
            return bad(&format!("use '-', as in {:?}", s.replace('_', "-")));
        }
        let alpha = |t: &str| t.bytes().all(|b| b.is_ascii_alphabetic());
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        let alnum = |t: &str| t.bytes().all(|b| b.is_ascii_alphanumeric());
        let mut parts = s.split('-').peekable();
        let language = parts.next().unwrap_or_default();
        if !(alpha(language) && matches!(language.len(), 2 | 3)) {
            return bad("it must start with a language (2 or 3 letters)");
        }
        let mut out = vec![language.to_ascii_lowercase()];
        if let Some(script) = parts.next_if(|t| t.len() == 4 && alpha(t)) {
            let mut script = script.to_ascii_lowercase();
            script[..1].make_ascii_uppercase();
            out.push(script);
        }
        if let Some(region) =
            parts.next_if(|t| (t.len() == 2 && alpha(t)) || (t.len() == 3 && digits(t)))
        {
            out.push(region.to_ascii_uppercase());
        }
        for variant in parts {
            let ok = alnum(variant)
                && (matches!(variant.len(), 5..=8)
                    || (variant.len() == 4 && variant.as_bytes()[0].is_ascii_digit()));
            if !ok {
                return bad(&format!(
                    "{variant:?} is neither a script, a region nor a variant"
                ));
            }
            out.push(variant.to_ascii_lowercase());
        }
        Ok(Self(out.join("-")))
    }
}

/// An IANA time zone name (`Europe/Berlin`, `America/Sao_Paulo`, `UTC`),
/// checked against the tz database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeZone(String);

impl TimeZone {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TimeZone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<chrono_tz::Tz>() {
            Ok(tz) => Ok(Self(tz.name().to_owned())),
            Err(_) => Err(format!(
                "timezone {s:?} is not an IANA time zone name like \"Europe/Berlin\", \"America/Sao_Paulo\" or \"UTC\""
            )),
        }
    }
}

/// A proxy for a session's traffic, and where its credentials are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    pub url: ProxyUrl,
    /// `user:password`, answered to the proxy's `407` through DevTools.
    pub credentials: Option<SecretSource>,
}

/// `http://`, `https://` or `socks5://` host and port, without
/// credentials (Chromium would ignore them: they belong in
/// `proxy_credentials_file` or `proxy_credentials_env`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyUrl(url::Url);

impl ProxyUrl {
    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    pub fn is_socks(&self) -> bool {
        self.scheme() == "socks5"
    }

    /// `scheme://host[:port]`, the form `--proxy-server` takes.
    pub fn for_chromium(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => format!("{}://{host}:{port}", self.scheme()),
            None => format!("{}://{host}", self.scheme()),
        }
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.for_chromium())
    }
}

impl FromStr for ProxyUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("proxy {s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https" | "socks5") {
            return Err(format!(
                "proxy {s:?}: the scheme must be http://, https:// or socks5://, not {}://",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Never echo the URL: it holds a password.
            return Err(format!(
                "proxy {}://...: credentials do not go in the URL (Chromium ignores them there, and vigil.toml is no place for a password); put `user:password` in a file named by proxy_credentials_file, or in a variable named by proxy_credentials_env",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("proxy {s:?} names no host"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "proxy {s:?}: a proxy is a host and a port, with no path or query"
            ));
        }
        Ok(Self(url))
    }
}

/// Proxy credentials, read at launch: `user:password`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why proxy credentials cannot be used. Never holds the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    #[error(transparent)]
    Read(#[from] SecretError),
    #[error("{origin} must hold `user:password` (UTF-8, the user not empty)")]
    Format { origin: SecretSource },
}

impl ProxyCredentials {
    /// Reads and splits the credentials at `source` (at the first `:`: a
    /// user name cannot hold one in HTTP Basic authentication).
    pub fn read(source: &SecretSource) -> Result<Self, CredentialsError> {
        let secret = source.read()?;
        let bad = || CredentialsError::Format {
            origin: source.clone(),
        };
        let text = std::str::from_utf8(secret.expose()).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        if username.is_empty() || text.contains(['\n', '\r']) {
            return Err(bad());
        }
        Ok(Self {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(UserAgent, Locale, TimeZone, ProxyUrl);

// Written back as the text they were read from, so that a session stored
// in the fleet's catalog reads the same again.
macro_rules! serialize_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_text!(UserAgent, Locale, TimeZone, ProxyUrl);

/// `window = { width = 1280, height = 800 }`: a session's page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "WindowFields")]
pub struct WindowSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFields {
    width: u32,
    height: u32,
}

/// Smaller pages break layouts; larger ones cost memory for nothing.
const WINDOW_SIDE: std::ops::RangeInclusive<u32> = 100..=8192;

impl TryFrom<WindowFields> for WindowSize {
    type Error = String;
    fn try_from(w: WindowFields) -> Result<Self, String> {
        for (name, v) in [("width", w.width), ("height", w.height)] {
            if !WINDOW_SIDE.contains(&v) {
                return Err(format!(
                    "window {name} {v} is out of range ({} to {} pixels)",
                    WINDOW_SIDE.start(),
                    WINDOW_SIDE.end()
                ));
            }
        }
        Ok(Self {
            width: w.width,
            height: w.height,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headless_product_name_becomes_chrome() {
        let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";
        assert_eq!(
            unheadless(ua).unwrap(),
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
        );
        assert_eq!(unheadless("Mozilla/5.0 Chrome/156.0.0.0"), None);
    }

    #[test]
    fn locales_are_language_tags_in_their_usual_case() {
        let ok = |s: &str| s.parse::<Locale>().unwrap().to_string();
        assert_eq!(ok("de-DE"), "de-DE");
        assert_eq!(ok("de-de"), "de-DE");
        assert_eq!(ok("en"), "en");
        assert_eq!(ok("zh-hant-tw"), "zh-Hant-TW");
        assert_eq!(ok("es-419"), "es-419");
        assert_eq!(ok("sl-rozaj-1994"), "sl-rozaj-1994");
        let e = "de_DE".parse::<Locale>().unwrap_err();
        assert!(e.contains("\"de-DE\""), "{e}");
        for bad in ["", "german", "d", "de-", "de-DE-x", "de DE", "1234"] {
            assert!(bad.parse::<Locale>().is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zones_come_from_the_tz_database() {
        assert_eq!(
            "Asia/Tokyo".parse::<TimeZone>().unwrap().as_str(),
            "Asia/Tokyo"
        );
        assert!("UTC".parse::<TimeZone>().is_ok());
        let e = "Mars/Olympus_Mons".parse::<TimeZone>().unwrap_err();
        assert!(e.contains("Mars/Olympus_Mons") && e.contains("IANA"), "{e}");
        assert!("+02:00".parse::<TimeZone>().is_err());
    }

    #[test]
    fn proxies_are_http_https_or_socks5_without_credentials() {
        let ok = |s: &str| s.parse::<ProxyUrl>().unwrap().for_chromium();
        assert_eq!(
            ok("http://proxy.internal:3128"),
            "http://proxy.internal:3128"
        );
        assert_eq!(ok("https://proxy.internal/"), "https://proxy.internal");
        assert_eq!(ok("socks5://127.0.0.1:1080"), "socks5://127.0.0.1:1080");
        assert_eq!(ok("http://[::1]:8080"), "http://[::1]:8080");
        let e = "ftp://proxy:21".parse::<ProxyUrl>().unwrap_err();
        assert!(e.contains("http://, https:// or socks5://"), "{e}");
        let e = "socks4://proxy:1080".parse::<ProxyUrl>().unwrap_err();
        assert!(e.contains("socks4://"), "{e}");
        let e = "http://alice:s3cret@proxy:3128"
            .parse::<ProxyUrl>()
            .unwrap_err();
        assert!(e.contains("proxy_credentials_file"), "{e}");
        assert!(!e.contains("s3cret"), "the password is echoed: {e}");
        assert!("http://proxy:3128/path".parse::<ProxyUrl>().is_err());
        assert!("proxy:3128".parse::<ProxyUrl>().is_err());
    }

    #[test]
    fn flags_and_environment_follow_the_identity() {
        let identity = Identity {
            user_agent: Some("Test/1.0 (X)".parse().unwrap()),
            locale: Some("fr-CA".parse().unwrap()),
            timezone: Some("America/Toronto".parse().unwrap()),
            proxy: Some(Proxy {
                url: "socks5://10.0.0.1:1080".parse().unwrap(),
                credentials: None,
            }),
        };
        assert_eq!(
            identity.flags(),
            [
                "--user-agent=Test/1.0 (X)",
                "--accept-lang=fr-CA",
                "--proxy-server=socks5://10.0.0.1:1080"
            ]
        );
        assert_eq!(identity.env(), [("TZ", "America/Toronto".to_owned())]);
        assert!(Identity::default().flags().is_empty());
        assert!(Identity::default().env().is_empty());
    }

    #[test]
    fn credentials_are_user_colon_password_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy");
        std::fs::write(&file, "alice:pa:ss\n").unwrap();
        let c = ProxyCredentials::read(&SecretSource::File(file.clone())).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "pa:ss")
        );
        assert!(!format!("{c:?}").contains("pa:ss"));
        std::fs::write(&file, "just-a-token\n").unwrap();
        let e = ProxyCredentials::read(&SecretSource::File(file.clone())).unwrap_err();
        assert!(e.to_string().contains("user:password"), "{e}");
        assert!(!e.to_string().contains("just-a-token"), "{e}");
        let e = ProxyCredentials::read(&SecretSource::Env(
            "VIGIL_TEST_PROXY_CREDENTIALS_NEVER_SET".into(),
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("VIGIL_TEST_PROXY_CREDENTIALS_NEVER_SET"),
            "{e}"
        );
    }
}
