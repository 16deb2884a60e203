//! The Prometheus HTTP API client: `query_range` split into chunks, instant `query`, `series`.

use std::collections::BTreeMap;
use std::time::Duration;

use portent_core::{Labels, Sample, Series, Timestamp};
use portent_input::{Format, InputError};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use crate::error::{ClientError, ConfigError};
use crate::http::{ClientConfig, Http, Reply, redacted};

/// Prometheus' limit on points per series in one `query_range` answer (it refuses more than
/// 11,000 steps). VictoriaMetrics allows 30,000 by default (`-search.maxPointsPerTimeseries`).
pub const PROMETHEUS_MAX_POINTS: usize = 11_000;

/// A client of one Prometheus-compatible query API (Prometheus, VictoriaMetrics, Mimir, Thanos).
///
/// Cheap to share behind an `Arc`; requests may run concurrently.
#[derive(Debug)]
pub struct Client {
    http: Http,
    max_points: usize,
    query_range: Url,
    query: Url,
    series: Url,
}

impl Client {
    /// A client for the server at `config.url`, splitting ranges at
    /// [`PROMETHEUS_MAX_POINTS`] points per series.
    pub fn new(config: &ClientConfig) -> Result<Self, ConfigError> {
        let http = Http::new(config)?;
        let mut base = http.url().clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let join = |p: &str| {
            base.join(p).map_err(|e| ConfigError::Url {
                url: config.url.clone(),
                reason: e.to_string(),
            })
        };
        Ok(Self {
            query_range: join("api/v1/query_range")?,
            query: join("api/v1/query")?,
            series: join("api/v1/series")?,
            http,
            max_points: PROMETHEUS_MAX_POINTS,
        })
    }

    /// Splits `query_range` so that no request asks for more than `n` points per series
    /// (30,000 suits VictoriaMetrics' default). At least 2.
    pub fn with_max_points_per_series(mut self, n: usize) -> Result<Self, ConfigError> {
        if n < 2 {
            return Err(ConfigError::Invalid(format!(
                "max_points_per_series {n}: must be at least 2"
            )));
        }
        self.max_points = n;
        Ok(self)
    }

    /// The most points per series one request asks for.
    pub fn max_points_per_series(&self) -> usize {
        self.max_points
    }

    /// Evaluates `expr` at every `step` from `start` to `end` (both inclusive), as Prometheus'
    /// `/api/v1/query_range` does, and returns the series sorted by labels.
    ///
    /// A range longer than the point limit is fetched in consecutive chunks on the same step
    /// grid, one after another, and stitched: each series' samples come out in time order, each
    /// timestamp once even if a server answers chunk edges twice. Values may be NaN or infinite.
    pub async fn query_range(
        &self,
        expr: &str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<Vec<Series>, ClientError> {
        let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
        if step_ms < 1 {
            return Err(ClientError::InvalidRequest(format!(
                "query_range: step {step:?}: must be at least 1ms"
            )));
        }
        if end < start {
            return Err(ClientError::InvalidRequest(format!(
                "query_range: end {end} is before start {start}"
            )));
        }
        let mut merged: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        for (from, to) in chunks(start.millis(), end.millis(), step_ms, self.max_points) {
            let form = form(&[
                ("query", expr),
                ("start", &seconds(from)),
                ("end", &seconds(to)),
                ("step", &seconds(step_ms)),
            ]);
            let body = self.post(&self.query_range, form).await?;
            for series in parse_matrix(&self.query_range, &body)? {
                let samples = merged.entry(series.labels).or_default();
                let last = samples.last().map(|s| s.t);
                samples.extend(
                    series
                        .samples
                        .into_iter()
                        .filter(|s| last.is_none_or(|l| s.t > l)),
                );
            }
        }
        Ok(merged
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect())
    }

    /// Evaluates `expr` at `time` (`/api/v1/query`): one sample per series, sorted by labels.
    pub async fn query(&self, expr: &str, time: Timestamp) -> Result<Vec<Series>, ClientError> {
        let form = form(&[("query", expr), ("time", &seconds(time.millis()))]);
        let body = self.post(&self.query, form).await?;
        let mut series = parse_matrix(&self.query, &body)?;
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(series)
    }

    /// The label sets of the series matching any of `matchers` (selectors such as
    /// `up{job="node"}`) with samples between `start` and `end` (`/api/v1/series`), sorted.
    pub async fn series(
        &self,
        matchers: &[&str],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<Labels>, ClientError> {
        if matchers.is_empty() {
            return Err(ClientError::InvalidRequest(
                "series: at least one matcher is needed".to_owned(),
            ));
        }
        let (start, end) = (seconds(start.millis()), seconds(end.millis()));
        let mut pairs: Vec<(&str, &str)> = matchers.iter().map(|m| ("match[]", *m)).collect();
        pairs.extend([("start", start.as_str()), ("end", end.as_str())]);
        let body = self.post(&self.series, form(&pairs)).await?;
        #[derive(Deserialize)]
        struct SeriesResponse {
            data: Vec<BTreeMap<String, String>>,
        }
        let decode = |message: String| ClientError::Decode {
            url: redacted(&self.series),
            message,
        };
        let response: SeriesResponse =
            serde_json::from_slice(&body).map_err(|e| decode(e.to_string()))?;
        let mut out = response
            .data
            .into_iter()
            .enumerate()
            .map(|(i, m)| Labels::new(m).map_err(|e| decode(format!("data[{i}]: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort();
        Ok(out)
    }

    /// POSTs a form and returns the body of a successful answer; maps every other outcome.
    async fn post(&self, url: &Url, form: String) -> Result<bytes::Bytes, ClientError> {
        let form = bytes::Bytes::from(form);
        let reply = self
            .http
            .send(url, |c| {
                c.post(url.clone())
                    .header(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    )
                    .body(form.clone())
            })
            .await?;
        check(url, reply)
    }
}

/// A `query_range` or `query` answer from `url` into series, through portent-input's parser of
/// the same JSON (so NaN, `+Inf` and error bodies read exactly as they do from a file).
fn parse_matrix(url: &Url, body: &[u8]) -> Result<Vec<Series>, ClientError> {
    portent_input::parse(body, Format::PromJson).map_err(|e| match e {
        InputError::Prometheus {
            error_type,
            message,
        } => ClientError::Api {
            url: redacted(url),
            status: 200,
            error_type,
            message,
        },
        other => ClientError::Decode {
            url: redacted(url),
            message: other.to_string(),
        },
    })
}

/// The body of a success; Prometheus' error JSON as [`ClientError::Api`]; anything else as
/// [`ClientError::Status`].
pub(crate) fn check(url: &Url, reply: Reply) -> Result<bytes::Bytes, ClientError> {
    if reply.status.is_success() {
        return Ok(reply.body);
    }
    #[derive(Deserialize)]
    struct ErrorJson {
        status: String,
        #[serde(rename = "errorType", default)]
        error_type: String,
        #[serde(default)]
        error: String,
    }
    if let Ok(e) = serde_json::from_slice::<ErrorJson>(&reply.body)
        && e.status == "error"
    {
        return Err(ClientError::Api {
            url: redacted(url),
            status: reply.status.as_u16(),
            error_type: e.error_type,
            message: e.error,
        });
    }
    let text = String::from_utf8_lossy(&reply.body);
    let text = text.trim();
    let body = match text.char_indices().nth(512) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    };
    Err(ClientError::Status {
        url: redacted(url),
        status: reply.status.as_u16(),
        body,
        attempts: reply.attempts,
    })
}

/// `[from, to]` ranges (milliseconds, inclusive) covering `start..=end` on the grid
/// `start + k * step`, each with at most `max_points` grid points, disjoint and in order.
pub(crate) fn chunks(start: i64, end: i64, step: i64, max_points: usize) -> Vec<(i64, i64)> {
    let per_chunk = i64::try_from(max_points.max(1)).unwrap_or(i64::MAX);
    let span = step.saturating_mul(per_chunk - 1);
    let advance = step.saturating_mul(per_chunk);
    let mut out = Vec::new();
    let mut from = start;
    while from <= end {
        out.push((from, from.saturating_add(span).min(end)));
        match from.checked_add(advance) {
            Some(next) => from = next,
            None => break,
        }
    }
    out
}

/// Milliseconds as the decimal seconds Prometheus' API takes (`1700000000.5`).
fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    let (s, frac) = (abs / 1000, abs % 1000);
    if frac == 0 {
        format!("{sign}{s}")
    } else {
        format!("{sign}{s}.{frac:03}")
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chunks_tile_the_grid_without_overlap() {
        // 25 points at step 10 with at most 10 per chunk: 10 + 10 + 5.
        assert_eq!(
            chunks(0, 240, 10, 10),
            vec![(0, 90), (100, 190), (200, 240)]
        );
        // The end need not be on the grid; the last grid point before it is the last asked.
        assert_eq!(chunks(5, 100, 10, 5), vec![(5, 45), (55, 95)]);
        assert_eq!(chunks(0, 0, 10, 11_000), vec![(0, 0)]);
        assert!(chunks(10, 0, 10, 5).is_empty());
        // Exactly the limit: one chunk.
        assert_eq!(chunks(0, 10_999 * 15, 15, 11_000).len(), 1);
        assert_eq!(chunks(0, 11_000 * 15, 15, 11_000).len(), 2);
        // Every grid point lands in exactly one chunk, none over the limit.
        let (start, end, step, max) = (1_000_007, 1_000_007 + 123_457 * 15, 15, 1000);
        let c = chunks(start, end, step, max);
        let mut points = Vec::new();
        for (from, to) in &c {
            let n = (to - from) / step + 1;
            assert!(n as usize <= max);
            assert_eq!((from - start) % step, 0);
            points.extend((0..n).map(|k| from + k * step));
        }
        let want: Vec<i64> = (0..=(end - start) / step)
            .map(|k| start + k * step)
            .collect();
        assert_eq!(points, want);
    }

    #[test]
    fn chunks_near_the_end_of_time_stop() {
        let c = chunks(i64::MAX - 25, i64::MAX, 10, 2);
        assert_eq!(
            c,
            vec![(i64::MAX - 25, i64::MAX - 15), (i64::MAX - 5, i64::MAX)]
        );
    }

    #[test]
    fn seconds_are_decimal() {
        assert_eq!(seconds(1_700_000_000_000), "1700000000");
        assert_eq!(seconds(1_700_000_000_500), "1700000000.500");
        assert_eq!(seconds(15), "0.015");
        assert_eq!(seconds(-1_500), "-1.500");
    }

    #[test]
    fn form_encodes_promql() {
        assert_eq!(
            form(&[
                ("query", r#"sum(rate(x{a="b c"}[5m])) > 0"#),
                ("step", "15")
            ]),
            "query=sum%28rate%28x%7Ba%3D%22b+c%22%7D%5B5m%5D%29%29+%3E+0&step=15"
        );
    }

    #[test]
    fn base_url_prefix_is_kept() {
        let c = Client::new(&ClientConfig::new("http://mimir:8080/prometheus")).unwrap();
        assert_eq!(
            c.query_range.as_str(),
            "http://mimir:8080/prometheus/api/v1/query_range"
        );
        let c = Client::new(&ClientConfig::new("http://prom:9090/")).unwrap();
        assert_eq!(c.series.as_str(), "http://prom:9090/api/v1/series");
        assert!(
            Client::new(&ClientConfig::new("http://p"))
                .unwrap()
                .with_max_points_per_series(1)
                .is_err()
        );
    }
}
