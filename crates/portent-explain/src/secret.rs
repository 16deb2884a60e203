//! API keys and signing secrets: read from the environment or a file, never shown.
//!
//! The type is the config crate's [`Secret`] (its `Debug` and `Display` print `<redacted>`),
//! so secrets the daemon's config resolves pass straight in; the loaders here serve callers
//! that read a key on their own (`portent ask` without a config, tests).

use std::path::Path;

pub use portent_config::Secret;

use crate::error::{Error, Result};

/// The secret in environment variable `var`, without surrounding whitespace. The error names
/// the variable, never a value.
pub fn from_env(var: &str) -> Result<Secret> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
        Ok(_) => Err(Error::Secret(format!(
            "environment variable {var} is empty"
        ))),
        Err(_) => Err(Error::Secret(format!(
            "environment variable {var} is not set"
        ))),
    }
}

/// The secret in file `path`, without surrounding whitespace (Kubernetes secrets mounted as
/// files often end in a newline).
pub fn from_file(path: impl AsRef<Path>) -> Result<Secret> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Secret(format!("{}: {e}", path.display())))?;
    let v = text.trim();
    if v.is_empty() {
        return Err(Error::Secret(format!("{} is empty", path.display())));
    }
    Ok(Secret::new(v))
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
            from_file(&p).ok().map(|s| s.expose().to_owned()),
            Some("abc123".into())
        );
        let missing = dir.join("missing");
        let e = from_file(&missing).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("missing")));
        let e = from_env("PORTENT_EXPLAIN_TEST_SURELY_UNSET")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("secret: environment variable PORTENT_EXPLAIN_TEST_SURELY_UNSET is not set")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
