#![doc = include_str!("../README.md")]

mod config;
pub mod defaults;
mod error;
#[cfg(test)]
mod keys;
mod promql;
mod raw;
mod secret;
mod units;
mod validate;

use std::path::Path;

pub use config::{
    ActionWebhook, Actions, AlertmanagerNotify, Alias, Auth, AutoModel, ClientCert, Config,
    Endpoint, Explain, Incidents, JointMethod, JointModel, Llm, LlmProvider, Loki, Model,
    ModelKind, Output, Pull, Push, Query, QuerySource, Retries, Schedule, Server, SlackNotify,
    Source, Storage, Tls, TopologyLabels, WebhookNotify,
};
pub use error::{ConfigError, Location};
pub use secret::Secret;
pub use units::{format_duration, parse_duration, parse_size};

impl Config {
    /// Reads, parses and validates the config file at `path`; `*_env` keys read the process
    /// environment.
    ///
    /// Pure apart from reading the file and the secret files it names: no network, no global
    /// state, nothing written. A daemon reloading on SIGHUP calls this and keeps its running
    /// config when it fails.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |var| std::env::var(var).ok())
    }

    /// [`Config::load`], with `env` standing in for the process environment.
    pub fn load_with_env(
        path: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Self::from_yaml_with_env(&text, base, env).map_err(|e| e.in_file(path.to_owned()))
    }

    /// Parses and validates YAML text. Relative paths in it resolve against `base_dir`;
    /// `*_env` keys read the process environment.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::from_yaml_with_env(text, base_dir, |var| std::env::var(var).ok())
    }

    /// [`Config::from_yaml`], with `env` standing in for the process environment.
    pub fn from_yaml_with_env(
        text: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = parse(text)?;
        validate::validate(raw, base_dir, &env)
    }
}

/// YAML into [`raw::RawConfig`], with the key path and position of the first error.
fn parse(text: &str) -> Result<raw::RawConfig, ConfigError> {
    // Snippets are multi-line; portent's errors are one line each.
    let options = serde_saphyr::options! { with_snippet: false };
    let mut path = None;
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    parsed.map_err(|e| {
        let location = e.location().filter(|l| l.line() > 0).map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        let mut message = e.to_string();
        if let Some(l) = location
            && let Some(m) =
                message.strip_suffix(&format!(" at line {}, column {}", l.line, l.column))
        {
            message = m.to_owned();
        }
        // serde_path_to_error writes `?` for a map key it never got to and `.` for the root.
        let mut segments: Vec<&str> = path
            .as_deref()
            .unwrap_or("")
            .split('.')
            .filter(|s| !s.is_empty() && *s != "?")
            .collect();
        if message.starts_with("unknown field") {
            // The path ends with the unknown key, which the message names already.
            segments.pop();
        }
        if segments.is_empty() && message == "expected mapping start" {
            message = "expected a mapping of sections (source, queries, models, schedules, \
                       outputs, server, storage)"
                .to_owned();
        }
        if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
            let key = rest
                .split(", set DuplicateKeyPolicy")
                .next()
                .unwrap_or(rest);
            message = format!("duplicate key {key:?}");
        }
        ConfigError::Invalid {
            file: None,
            location,
            key: segments.join("."),
            message,
        }
    })
}
