//! What can go wrong talking to a Prometheus-compatible server, or building a client for one.
//!
//! Each message is complete on its own (no `source()`), so printing a chain never repeats, and
//! every network error names the endpoint (credentials removed) so a log line says which server.

use std::path::PathBuf;

/// A client could not be built from its configuration; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse, or is not http(s).
    #[error("url {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header name or value that HTTP does not allow.
    #[error("header {name:?}: {reason}")]
    Header {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file that cannot be read or parsed.
    #[error("tls {what} {path:?}: {reason}")]
    TlsFile {
        /// Which setting: `ca_file`, `cert_file` or `key_file`.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("tls: cert_file and key_file must be given together")]
    TlsPair,
    /// A setting outside its range (zero attempts, zero points per series...).
    #[error("{0}")]
    Invalid(String),
    /// The HTTP client itself refused the configuration.
    #[error("http client: {0}")]
    Build(String),
}

/// What kind of transport failure ended a request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// The connection could not be made (refused, unreachable, DNS, TLS handshake).
    Connect,
    /// The server did not answer within the timeout.
    Timeout,
    /// The connection broke while sending or receiving.
    Other,
}

/// A request to a Prometheus-compatible server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No usable answer: the server could not be reached, timed out, or dropped the connection,
    /// on every one of `attempts` attempts.
    #[error("{url}: {message} (after {attempts} attempt{})", if *attempts == 1 { "" } else { "s" })]
    Transport {
        /// The endpoint, without credentials.
        url: String,
        /// What kind of failure the last attempt had.
        kind: TransportKind,
        /// The innermost cause, e.g. `connection refused`.
        message: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The server answered with Prometheus' error JSON
    /// (`{"status":"error","errorType":..,"error":..}`): a bad expression, an execution error, a
    /// limit. `message` is the server's own text.
    #[error("{url}: {error_type}: {message}")]
    Api {
        /// The endpoint, without credentials.
        url: String,
        /// The HTTP status (400 bad data, 422 execution error, 503 timeout...).
        status: u16,
        /// Prometheus' `errorType`, e.g. `bad_data`.
        error_type: String,
        /// Prometheus' `error`, e.g. `1:5: parse error: unexpected end of input`.
        message: String,
    },
    /// A non-success status without Prometheus' error JSON (a proxy, a remote_write receiver).
    #[error("{url}: http status {status}: {body}")]
    Status {
        /// The endpoint, without credentials.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body, for the log.
        body: String,
        /// How many attempts were made (statuses 429 and 5xx are retried).
        attempts: u32,
    },
    /// A success status whose body is not the expected response.
    #[error("{url}: unreadable response: {message}")]
    Decode {
        /// The endpoint, without credentials.
        url: String,
        /// What is wrong with the body.
        message: String,
    },
    /// The caller asked for something no server can answer (an empty range, a zero step).
    #[error("{0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// Whether the server was reached and refused the request itself (a 4xx other than 429,
    /// or an error JSON): asking again unchanged will fail again.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Api { status, .. } | ClientError::Status { status, .. } => {
                (400..500).contains(status) && *status != 429
            }
            ClientError::Decode { .. } | ClientError::InvalidRequest(_) => true,
            ClientError::Transport { .. } => false,
        }
    }
}

/// Why a remote_write request body was refused. The message is meant for the 400 (or 413) body
/// the sender logs, so it says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteWriteError {
    /// Not snappy block format (remote_write uses `snappy` block, not the framed format).
    #[error("body is not snappy block-compressed data: {0}")]
    Snappy(String),
    /// The body would decompress to more than the receiver allows.
    #[error("body decompresses to {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The decompressed size the snappy header announces.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Decompressed, but not a remote_write 1.0 `WriteRequest`.
    #[error("body is not a remote_write 1.0 WriteRequest: {0}")]
    Protobuf(String),
    /// A series whose labels are not a valid label set.
    #[error("timeseries[{index}]: {error}")]
    Labels {
        /// 0-based position of the series in the request.
        index: usize,
        /// What is wrong with its labels.
        error: portent_core::LabelsError,
    },
    /// A series with no labels (or only empty values), which cannot be identified.
    #[error("timeseries[{index}]: no labels (a series needs at least one non-empty label)")]
    NoLabels {
        /// 0-based position of the series in the request.
        index: usize,
    },
}
