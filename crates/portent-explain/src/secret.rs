//! API keys and signing secrets: read from the environment or a file, never shown.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// A secret string. Its `Debug` and `Display` print `<redacted>`, so a config or client that
/// holds one can be logged whole without leaking it; only [`Secret::expose`] gives the value,
/// and the crate calls it only to set a request header or compute an HMAC.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from a value already in memory (tests, config loaders).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret in environment variable `var`. The error names the variable, never a value.
    pub fn from_env(var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Self(v.trim().to_owned())),
            Ok(_) => Err(Error::Secret(format!(
                "environment variable {var} is empty"
            ))),
            Err(_) => Err(Error::Secret(format!(
                "environment variable {var} is not set"
            ))),
        }
    }

    /// The secret in file `path`, without surrounding whitespace (Kubernetes secrets mounted
    /// as files often end in a newline).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Secret(format!("{}: {e}", path.display())))?;
        let v = text.trim();
        if v.is_empty() {
            return Err(Error::Secret(format!("{} is empty", path.display())));
        }
        Ok(Self(v.to_owned()))
    }

    /// The value, for a header or a MAC; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("sk-ant-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "sk-ant-very-secret");
    }

    #[test]
    fn from_file_trims_and_errors_name_the_path() {
        let dir = std::env::temp_dir().join(format!("portent-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let p = dir.join("key");
        std::fs::write(&p, "abc123\n").ok();
        assert_eq!(
            Secret::from_file(&p).map(|s| s.0).ok(),
            Some("abc123".into())
        );
        let missing = dir.join("missing");
        let e = Secret::from_file(&missing).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("missing")));
        let e = Secret::from_env("PORTENT_EXPLAIN_TEST_SURELY_UNSET")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("secret: environment variable PORTENT_EXPLAIN_TEST_SURELY_UNSET is not set")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
