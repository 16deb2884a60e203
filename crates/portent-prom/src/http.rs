//! The HTTP side shared by the query client and the remote_write client: configuration, auth,
//! TLS, timeouts, and the retry loop.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::error::{ClientError, ConfigError, TransportKind};

/// How to reach one Prometheus-compatible endpoint.
///
/// For [`Client`](crate::Client) `url` is the server's base URL (`http://prometheus:9090`, or
/// with a path prefix such as `http://mimir/prometheus`); for
/// [`RemoteWriteClient`](crate::RemoteWriteClient) it is the full write URL
/// (`http://victoria-metrics:8428/api/v1/write`), as in Prometheus' own `remote_write` config.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where the server is.
    pub url: String,
    /// Credentials, if the server wants them.
    pub auth: Option<Auth>,
    /// Extra headers on every request, e.g. `("X-Scope-OrgID", "tenant-1")` for Mimir or Cortex.
    pub headers: Vec<(String, String)>,
    /// TLS settings for `https` URLs.
    pub tls: TlsConfig,
    /// The whole-request timeout of one attempt.
    pub timeout: Duration,
    /// When and how often to try again.
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// A configuration for `url` with every other setting at its default: no auth, no extra
    /// headers, TLS verified against the system's roots, a 60 s timeout, [`RetryPolicy`]'s
    /// defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: None,
            headers: Vec::new(),
            tls: TlsConfig::default(),
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// Credentials sent as the `Authorization` header. `Debug` does not print the secrets.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic ...`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(<secret>)"),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<secret>")
                .finish(),
        }
    }
}

/// TLS settings. Certificates are verified unless `insecure_skip_verify` is set.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust *instead of* the system's roots (as Prometheus'
    /// `ca_file` does).
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (chain), for servers that require client authentication.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for testing: it makes TLS pointless.
    pub insecure_skip_verify: bool,
}

/// When to try a request again, and how long to wait in between.
///
/// Connection failures, timeouts, `429 Too Many Requests` and `5xx` are retried; any other
/// `4xx` is the request's own fault and is not. The wait before attempt `n + 1` is
/// `initial_backoff * 2^(n-1)`, capped at `max_backoff`, then scaled by a jitter factor in
/// [0.5, 1) so that many clients do not retry in lockstep. A `Retry-After` header (seconds or
/// an HTTP date) replaces the computed wait, also capped at `max_backoff`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// The wait before the second attempt, before jitter.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Seeds the jitter, so a test (or a replay) sees the same waits every run.
    pub jitter_seed: u64,
}

impl Default for RetryPolicy {
    /// Four attempts, waits from 250 ms up to 10 s.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            jitter_seed: 0x0070_6f72_7465_6e74, // "portent"
        }
    }
}

impl RetryPolicy {
    /// The computed wait after failed attempt `attempt` (1-based), with `jitter` in [0, 1).
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A configured HTTP endpoint: the reqwest client with auth and headers baked in, and the retry
/// loop.
pub(crate) struct Http {
    client: reqwest::Client,
    url: Url,
    retry: RetryPolicy,
    draws: AtomicU64,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("url", &redacted(&self.url))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The answer to a request that got one: the final status, headers and body.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: bytes::Bytes,
    pub(crate) attempts: u32,
}

impl Http {
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, ConfigError> {
        let url_error = |reason: &str| ConfigError::Url {
            url: config.url.clone(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(&config.url).map_err(|e| url_error(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(url_error("expected an http:// or https:// URL"));
        }
        if config.retry.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "retry.max_attempts: must be at least 1".to_owned(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "timeout: must be more than zero".to_owned(),
            ));
        }

        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header_error = |reason: String| ConfigError::Header {
                name: name.clone(),
                reason,
            };
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| header_error("not a valid header name".to_owned()))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| header_error("value has characters HTTP does not allow".to_owned()))?;
            headers.append(n, v);
        }
        if let Some(auth) = &config.auth {
            let raw = match auth {
                Auth::Bearer(token) => format!("Bearer {token}"),
                Auth::Basic { username, password } => {
                    format!(
                        "Basic {}",
                        base64(format!("{username}:{password}").as_bytes())
                    )
                }
            };
            let mut v = HeaderValue::from_str(&raw).map_err(|_| ConfigError::Header {
                name: "Authorization".to_owned(),
                reason: "credentials have characters HTTP does not allow".to_owned(),
            })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }

        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("portent/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)));
        let tls = &config.tls;
        if let Some(path) = &tls.ca_file {
            let pem = read_tls("ca_file", path)?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ConfigError::TlsFile {
                    what: "ca_file",
                    path: path.clone(),
                    reason: innermost(&e),
                })?;
            if certs.is_empty() {
                return Err(ConfigError::TlsFile {
                    what: "ca_file",
                    path: path.clone(),
                    reason: "no PEM certificate in it".to_owned(),
                });
            }
            builder = builder.tls_certs_only(certs);
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read_tls("cert_file", cert)?;
                pem.push(b'\n');
                pem.extend(read_tls("key_file", key)?);
                let identity =
                    reqwest::Identity::from_pem(&pem).map_err(|e| ConfigError::TlsFile {
                        what: "cert_file",
                        path: cert.clone(),
                        reason: innermost(&e),
                    })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err(ConfigError::TlsPair),
        }
        if tls.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| ConfigError::Build(innermost(&e)))?;
        Ok(Self {
            client,
            url,
            retry: config.retry.clone(),
            draws: AtomicU64::new(0),
        })
    }

    /// The configured URL.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// Sends the request `make` builds, retrying as the policy says, and reads the final body.
    ///
    /// `Ok` holds any final status, success or not; `Err` means no answer was ever read.
    pub(crate) async fn send<F>(&self, url: &Url, make: F) -> Result<Reply, ClientError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.retry.max_attempts;
            let error = match make(&self.client).send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    match response.bytes().await {
                        Ok(body) if !retryable || last => {
                            return Ok(Reply {
                                status,
                                body,
                                attempts: attempt,
                            });
                        }
                        Ok(_) => {
                            tokio::time::sleep(self.wait(attempt, retry_after)).await;
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            if last || !retryable_error(&error) {
                return Err(ClientError::Transport {
                    url: redacted(url),
                    kind: kind(&error),
                    message: innermost(&error),
                    attempts: attempt,
                });
            }
            tokio::time::sleep(self.wait(attempt, None)).await;
        }
    }

    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.retry.max_backoff),
            None => {
                let n = self.draws.fetch_add(1, Ordering::Relaxed);
                let u = portent_core::seeded::uniform(self.retry.jitter_seed.wrapping_add(n));
                self.retry.backoff(attempt, u)
            }
        }
    }
}

fn read_tls(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::TlsFile {
        what,
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// A request error that another attempt might not have: anything but a malformed request or a
/// redirect loop.
fn retryable_error(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect())
}

fn kind(e: &reqwest::Error) -> TransportKind {
    if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    }
}

/// The innermost cause of an error, which says what happened (`Connection refused (os error
/// 111)`) where the outer ones only say where ("error sending request for url").
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if e.is::<reqwest::Error>() {
        let outer = e.downcast_ref::<reqwest::Error>();
        if outer.is_some_and(reqwest::Error::is_timeout) && !text.contains("timed out") {
            return format!("timed out ({text})");
        }
        if outer.is_some_and(reqwest::Error::is_connect) && !text.contains("onnect") {
            return format!("connect: {text}");
        }
    }
    text
}

/// `url` without user name or password, for messages.
pub(crate) fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    // Both fail only for URLs that cannot have credentials, which then have none to hide.
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// `Retry-After` as delay-seconds or an HTTP date; `None` if it is neither.
pub(crate) fn parse_retry_after(v: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Standard base64 with padding, for basic auth (not worth a dependency).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("admin:s3cret", "YWRtaW46czNjcmV0"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter_seed: 1,
        };
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        let top = p.backoff(1, 0.999_999);
        assert!(top < Duration::from_millis(100) && top > Duration::from_micros(99_990));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 0.0), Duration::from_millis(200));
        assert_eq!(p.backoff(5, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(40, 0.0), Duration::from_millis(500));
        assert!(p.backoff(40, 0.9) < Duration::from_secs(1));
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let v = |s: &str| parse_retry_after(&HeaderValue::from_str(s).unwrap(), now);
        assert_eq!(v("3"), Some(Duration::from_secs(3)));
        assert_eq!(v(" 0 "), Some(Duration::ZERO));
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
        assert_eq!(
            v("Wed, 21 Oct 2015 07:28:07 GMT"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(v("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO));
        assert_eq!(v("soon"), None);
        assert_eq!(v("-1"), None);
    }

    #[test]
    fn config_errors_name_the_setting() {
        let bad = |f: fn(&mut ClientConfig)| {
            let mut c = ClientConfig::new("http://127.0.0.1:9090");
            f(&mut c);
            Http::new(&c).unwrap_err().to_string()
        };
        assert_eq!(
            bad(|c| c.url = "ftp://x".into()),
            r#"url "ftp://x": expected an http:// or https:// URL"#
        );
        assert!(bad(|c| c.url = "not a url".into()).starts_with(r#"url "not a url": "#));
        assert_eq!(
            bad(|c| c.headers.push(("X Bad".into(), "1".into()))),
            r#"header "X Bad": not a valid header name"#
        );
        assert_eq!(
            bad(|c| c.retry.max_attempts = 0),
            "retry.max_attempts: must be at least 1"
        );
        assert_eq!(
            bad(|c| c.tls.cert_file = Some("/x.pem".into())),
            "tls: cert_file and key_file must be given together"
        );
        assert!(
            bad(|c| c.tls.ca_file = Some("/nonexistent/ca.pem".into()))
                .starts_with(r#"tls ca_file "/nonexistent/ca.pem": "#)
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let a = Auth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        let b = Auth::Bearer("tok3n".into());
        let s = format!("{a:?} {b:?}");
        assert!(!s.contains("hunter2") && !s.contains("tok3n"), "{s}");
        let url = Url::parse("http://user:pw@host:9090/x").unwrap();
        assert_eq!(redacted(&url), "http://host:9090/x");
    }
}
