//! portent's Prometheus wire layer.
//!
//! * [`Client`]: the HTTP query API (`query_range`, `query`, `series`) of Prometheus,
//!   VictoriaMetrics, Mimir or Thanos, with auth, custom headers, TLS, timeouts and retries.
//!   `query_range` splits long ranges into chunks under the server's points-per-series limit
//!   and stitches them back without duplicates;
//! * [`encode_write_request`], [`decode_write_request`]: remote_write 1.0 bodies (protobuf in
//!   snappy block format), with size limits checked before decompressing; [`decode_write`]
//!   decodes into a [`DecodedWrite`] whose label sets borrow the body, for lookups without
//!   allocating;
//! * [`RemoteWriteClient`]: sends series to a remote_write endpoint;
//! * [`remote_write_router`]: an axum router that receives remote_write and hands the decoded
//!   body to a [`Sink`].
//!
//! All series are [`portent_core::Series`]: a validated, sorted label set and its samples.
//!
//! ```
//! use portent_core::{Labels, Sample, Series, Timestamp};
//! use portent_prom::{decode_write_request, encode_write_request};
//!
//! let up = Series {
//!     labels: Labels::new([("__name__", "up"), ("job", "node")])?,
//!     samples: vec![Sample::new(Timestamp::from_secs(1_700_000_000), 1.0)],
//! };
//! let body = encode_write_request(std::slice::from_ref(&up));
//! assert_eq!(decode_write_request(&body, 1 << 20)?, vec![up]);
//!
//! let err = decode_write_request(b"not snappy", 1 << 20).unwrap_err();
//! assert!(err.to_string().starts_with("body is not snappy block-compressed data"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Querying, inside a tokio runtime:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use portent_core::Timestamp;
//! use portent_prom::{Auth, Client, ClientConfig};
//!
//! let mut config = ClientConfig::new("https://mimir.example/prometheus");
//! config.auth = Some(Auth::Bearer(std::env::var("TOKEN")?));
//! config.headers.push(("X-Scope-OrgID".into(), "team-a".into()));
//! let client = Client::new(&config)?;
//! let week = client
//!     .query_range(
//!         "rate(http_requests_total[5m])",
//!         Timestamp::from_secs(1_700_000_000 - 7 * 86_400),
//!         Timestamp::from_secs(1_700_000_000),
//!         Duration::from_secs(30), // 20,160 points: fetched in two chunks
//!     )
//!     .await?;
//! # Ok(()) }
//! ```

mod client;
mod decode;
mod error;
mod http;
mod receiver;
mod remote_write;

pub use client::{Client, PROMETHEUS_MAX_POINTS};
pub use decode::DecodedWrite;
pub use error::{ClientError, ConfigError, RemoteWriteError, TransportKind};
pub use http::{Auth, ClientConfig, RetryPolicy, TlsConfig};
pub use receiver::{ReceiverLimits, Sink, SinkClosed, remote_write_router};
pub use remote_write::{
    CONTENT_TYPE_PROTOBUF, REMOTE_WRITE_VERSION, RemoteWriteClient, decode_write,
    decode_write_request, encode_write_request, proto,
};
