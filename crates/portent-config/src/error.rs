//! What went wrong with a config, and where.

use std::fmt;
use std::path::PathBuf;

/// A position in the YAML text, 1-based.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

/// A config that cannot be used, with a message that says where and what to change.
///
/// Every message is complete on its own (no `source()` chain to follow), one line, and starts
/// with the file (and line and column when the YAML parser knows them) followed by the key
/// path, e.g. `portent.yml: models.latency.queries[1]: unknown query alias "p99" (defined:
/// cpu, mem)` or `portent.yml:7:5: queries.cpu: unknown field `stepp`, expected one of expr,
/// step`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Not YAML, YAML that does not fit the schema, or a value that fails validation.
    #[error("{}", Rendered { file: file.as_ref(), location: *location, key, message })]
    Invalid {
        /// The config file, when the config came from one.
        file: Option<PathBuf>,
        /// Where in the file, when the YAML parser knows.
        location: Option<Location>,
        /// The key path, e.g. `models.latency.queries[1]`; empty for the document itself.
        key: String,
        /// What is wrong and, where it helps, what to write instead.
        message: String,
    },
}

impl ConfigError {
    /// An error at `key` with no file and no line yet.
    pub(crate) fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: None,
            location: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error, said of `path`.
    pub(crate) fn in_file(mut self, path: PathBuf) -> Self {
        if let ConfigError::Invalid { file, .. } = &mut self {
            *file = Some(path);
        }
        self
    }

    /// The key path the error is about (empty for the whole document or a read error).
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "",
            ConfigError::Invalid { key, .. } => key,
        }
    }

    /// Where in the YAML text, when known.
    pub fn location(&self) -> Option<Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { location, .. } => *location,
        }
    }
}

struct Rendered<'a> {
    file: Option<&'a PathBuf>,
    location: Option<Location>,
    key: &'a str,
    message: &'a str,
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file, self.location) {
            (Some(file), Some(l)) => write!(f, "{}:{}:{}: ", file.display(), l.line, l.column)?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(l)) => write!(f, "line {}, column {}: ", l.line, l.column)?,
            (None, None) => {}
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(self.message)
    }
}
