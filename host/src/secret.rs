//! Secrets that `vigil.toml` names but never holds: a file's content or an
//! environment variable's value (webhook keys, proxy credentials). Owns
//! reading them and keeping them out of logs: a [`Secret`] prints as
//! `Secret(..)`, and no error here carries one. It never writes a secret,
//! and never reads one at config load: the caller reads it when it starts
//! the part that needs it, so a missing file is reported with that part's
//! name.

use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from; never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The file's content, without its trailing newline.
    File(PathBuf),
    /// An environment variable's value.
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// Why a secret cannot be read. Names where it looked, never the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("cannot read {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the environment variable {var} is not set")]
    EnvUnset { var: String },
    #[error("{origin} is empty")]
    Empty { origin: SecretSource },
}

/// A secret's bytes. Its `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl SecretSource {
    /// Reads the secret now. A trailing newline (`echo secret > file`) is
    /// not part of it; an empty secret is refused.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let mut bytes = match self {
            SecretSource::File(path) => {
                std::fs::read(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
            }
            SecretSource::Env(var) => std::env::var_os(var)
                .map(std::os::unix::ffi::OsStringExt::into_vec)
                .ok_or_else(|| SecretError::EnvUnset { var: var.clone() })?,
        };
        while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(SecretError::Empty {
                origin: self.clone(),
            });
        }
        Ok(Secret(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_secret_loses_its_newline_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        let secret = SecretSource::File(file).read().unwrap();
        assert_eq!(secret.expose(), b"s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn errors_say_where_they_looked() {
        let e = SecretSource::File("/nonexistent/s".into())
            .read()
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/s"), "{e}");
        let var = "VIGIL_TEST_SECRET_THAT_IS_NEVER_SET";
        let e = SecretSource::Env(var.into()).read().unwrap_err();
        assert!(e.to_string().contains(var), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = SecretSource::File(empty.clone()).read().unwrap_err();
        assert_eq!(e.to_string(), format!("file {} is empty", empty.display()));
    }
}
