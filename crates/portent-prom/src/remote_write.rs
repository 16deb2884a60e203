//! Prometheus remote_write 1.0: protobuf `WriteRequest` in snappy block format, both ways.

use portent_core::{Labels, Sample, Series};
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};

use crate::client::check;
use crate::decode::DecodedWrite;
use crate::error::{ClientError, ConfigError, RemoteWriteError};
use crate::http::{ClientConfig, Http};

/// The remote_write 1.0 messages (`prometheus/prompb/{remote,types}.proto`), derived by hand so
/// that no `protoc` is needed. Fields portent does not use (metadata, exemplars, native
/// histograms) are left out; prost skips them when decoding.
pub mod proto {
    /// The body of one remote_write request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series, each with its samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// One series and some of its samples.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// The labels, sorted by name.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// The samples, in time order.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// One label pair.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// The label name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// The label value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// One float sample.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// The value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// The headers a remote_write 1.0 request carries.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
/// The `X-Prometheus-Remote-Write-Version` of remote_write 1.0.
pub const REMOTE_WRITE_VERSION: &str = "0.1.0";

/// Encodes series as a remote_write 1.0 request body: a protobuf `WriteRequest`,
/// snappy-compressed (block format).
pub fn encode_write_request(series: &[Series]) -> Vec<u8> {
    let request = proto::WriteRequest {
        timeseries: series
            .iter()
            .map(|s| to_proto(&s.labels, &s.samples))
            .collect(),
    };
    compress(&request)
}

fn to_proto(labels: &Labels, samples: &[Sample]) -> proto::TimeSeries {
    proto::TimeSeries {
        labels: labels
            .iter()
            .map(|l| proto::Label {
                name: l.name.to_string(),
                value: l.value.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|s| proto::Sample {
                value: s.v,
                timestamp: s.t.millis(),
            })
            .collect(),
    }
}

fn compress(request: &proto::WriteRequest) -> Vec<u8> {
    let raw = request.encode_to_vec();
    // Snappy fails only on inputs over ~4 GiB (u32 length), which a batch never reaches; an
    // empty body then decodes as an error at the receiver, which is the honest outcome.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// Decodes a remote_write 1.0 request body into series, refusing the whole body on any error.
///
/// `max_decompressed` bounds the decompressed size, checked against the size the snappy header
/// announces *before* anything is decompressed. Labels are validated and sorted (senders must
/// sort them, but an unsorted set is unambiguous, so it is accepted); an invalid or duplicate
/// name, or a series with no labels, refuses the body. A missing `__name__` is accepted, as
/// VictoriaMetrics does. Sample values may be NaN (including the staleness marker) or infinite.
/// Series are returned in request order, samples as sent; series without float samples (only
/// native histograms, say) are dropped.
///
/// This builds a [`Labels`] per series; [`decode_write`] decodes the same way without, for a
/// receiver that looks series up.
pub fn decode_write_request(
    body: &[u8],
    max_decompressed: usize,
) -> Result<Vec<Series>, RemoteWriteError> {
    decode_write(body, max_decompressed).map(|w| w.to_series())
}

/// Decodes a remote_write 1.0 request body as [`decode_write_request`] does (same rules, same
/// errors), keeping label sets as borrowed pairs: see [`DecodedWrite`] (whose
/// [`DecodedWrite::decode`] reuses its buffers from one body to the next).
pub fn decode_write(
    body: &[u8],
    max_decompressed: usize,
) -> Result<DecodedWrite, RemoteWriteError> {
    let mut write = DecodedWrite::default();
    write.decode(body, max_decompressed)?;
    Ok(write)
}

/// Sends series to a remote_write 1.0 endpoint (Prometheus with
/// `--web.enable-remote-write-receiver`, VictoriaMetrics, Mimir...), retrying 5xx and 429 as its
/// [`RetryPolicy`](crate::RetryPolicy) says and never a 4xx (the receiver will not change its
/// mind, and Prometheus' own sender drops such batches too).
#[derive(Debug)]
pub struct RemoteWriteClient {
    http: Http,
    max_samples: usize,
}

impl RemoteWriteClient {
    /// The default cap on samples per request: what Prometheus 3 sends at most.
    pub const DEFAULT_MAX_SAMPLES_PER_REQUEST: usize = 2_000;

    /// A client for the write URL `config.url` (e.g. `http://vm:8428/api/v1/write`).
    pub fn new(config: &ClientConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            http: Http::new(config)?,
            max_samples: Self::DEFAULT_MAX_SAMPLES_PER_REQUEST,
        })
    }

    /// Caps the samples in one request (at least 1); larger writes are split.
    pub fn with_max_samples_per_request(mut self, n: usize) -> Result<Self, ConfigError> {
        if n == 0 {
            return Err(ConfigError::Invalid(
                "max_samples_per_request: must be at least 1".to_owned(),
            ));
        }
        self.max_samples = n;
        Ok(self)
    }

    /// Writes `series`, in as many requests as the sample cap needs, one after another.
    ///
    /// On error the requests before the failing one have been accepted and the rest not sent.
    pub async fn write(&self, series: &[Series]) -> Result<(), ClientError> {
        for request in batches(series, self.max_samples) {
            self.send(&compress(&request)).await?;
        }
        Ok(())
    }

    /// Sends one already-encoded body (from [`encode_write_request`]).
    pub async fn send(&self, body: &[u8]) -> Result<(), ClientError> {
        let body = bytes::Bytes::copy_from_slice(body);
        let url = self.http.url();
        let reply = self
            .http
            .send(url, |c| {
                c.post(url.clone())
                    .header(CONTENT_ENCODING, HeaderValue::from_static("snappy"))
                    .header(
                        CONTENT_TYPE,
                        HeaderValue::from_static(CONTENT_TYPE_PROTOBUF),
                    )
                    .header(
                        HeaderName::from_static("x-prometheus-remote-write-version"),
                        HeaderValue::from_static(REMOTE_WRITE_VERSION),
                    )
                    .body(body.clone())
            })
            .await?;
        check(url, reply).map(drop)
    }
}

/// Groups series into requests of at most `max` samples, splitting a long series if need be.
fn batches(series: &[Series], max: usize) -> Vec<proto::WriteRequest> {
    let mut out = Vec::new();
    let mut current = proto::WriteRequest::default();
    let mut count = 0;
    for s in series {
        for part in s.samples.chunks(max.max(1)) {
            if count > 0 && count + part.len() > max {
                out.push(std::mem::take(&mut current));
                count = 0;
            }
            current.timeseries.push(to_proto(&s.labels, part));
            count += part.len();
        }
    }
    if !current.timeseries.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use portent_core::{LabelsError, STALE_NAN_BITS, Timestamp};

    fn series(name: &str, points: &[(i64, f64)]) -> Series {
        Series {
            labels: Labels::new([("__name__", name), ("job", "test")]).unwrap(),
            samples: points
                .iter()
                .map(|&(t, v)| Sample::new(Timestamp::from_millis(t), v))
                .collect(),
        }
    }

    fn raw(request: &proto::WriteRequest) -> Vec<u8> {
        compress(request)
    }

    /// A `TimeSeries` message of `labels` (as given) and `samples`.
    pub(crate) fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> proto::TimeSeries {
        proto::TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| proto::Label {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| proto::Sample { value, timestamp })
                .collect(),
        }
    }

    /// A cheap, seeded stand-in for a fuzz target: whatever a network peer sends, decoding
    /// returns an error or series, never panics, and never allocates past the limit. Bodies
    /// are random bytes, valid bodies with bits flipped or cut short, and valid snappy around
    /// random protobuf.
    #[test]
    fn arbitrary_bodies_never_panic() {
        use portent_core::seeded::uniform;
        let valid = encode_write_request(&[
            series("a", &[(1, 1.5), (2, f64::NAN), (3, 7.0)]),
            series("b", &[(10, -2.0)]),
        ]);
        let byte = |k: u64| (uniform(k) * 256.0) as u8;
        let mut accepted = 0;
        for case in 0..3_000u64 {
            let seed = case * 1_000;
            let body: Vec<u8> = match case % 4 {
                0 => (0..(byte(seed) as u64))
                    .map(|k| byte(seed + k + 1))
                    .collect(),
                1 => {
                    let mut b = valid.clone();
                    let at = (uniform(seed) * b.len() as f64) as usize % b.len();
                    b[at] ^= 1 << (byte(seed + 1) % 8);
                    b
                }
                2 => valid[..(uniform(seed) * valid.len() as f64) as usize].to_vec(),
                _ => {
                    let junk: Vec<u8> = (0..(byte(seed) as u64))
                        .map(|k| byte(seed + k + 1))
                        .collect();
                    snap::raw::Encoder::new()
                        .compress_vec(&junk)
                        .unwrap_or_default()
                }
            };
            if decode_write_request(&body, 1 << 16).is_ok() {
                accepted += 1;
            }
        }
        // Some mutations stay valid (a flipped bit in a sample value); most must not.
        assert!(accepted < 3_000, "{accepted}");
    }

    #[test]
    fn round_trip_keeps_values_bit_for_bit() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let input = vec![
            series(
                "a",
                &[(1, 1.5), (2, f64::NAN), (3, f64::INFINITY), (4, stale)],
            ),
            series("b", &[(-5, -1e-300), (i64::MAX, f64::MIN_POSITIVE)]),
        ];
        let body = encode_write_request(&input);
        let back = decode_write_request(&body, 1 << 20).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in input.iter().zip(&back) {
            assert_eq!(a.labels, b.labels);
            let bits = |s: &Series| -> Vec<(i64, u64)> {
                s.samples
                    .iter()
                    .map(|x| (x.t.millis(), x.v.to_bits()))
                    .collect()
            };
            assert_eq!(bits(a), bits(b));
        }
        // Negative zero comes back as zero: proto3 leaves out a field equal to its default, and
        // prost compares with ==. Harmless, but pinned so nobody is surprised.
        let zero = encode_write_request(&[series("z", &[(1, -0.0)])]);
        assert_eq!(
            decode_write_request(&zero, 1 << 20).unwrap()[0].samples[0]
                .v
                .to_bits(),
            0
        );
    }

    #[test]
    fn wire_bytes_match_prompb() {
        // Hand-assembled from remote.proto/types.proto: WriteRequest{timeseries: [TimeSeries{
        // labels: [{__name__, up}], samples: [{value: 1.0, timestamp: 1000}]}]}.
        let want: Vec<u8> = vec![
            0x0a, 0x1e, // field 1 (timeseries), 30 bytes
            0x0a, 0x0e, 0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', 0x12, 0x02,
            b'u', b'p', // label
            0x12, 0x0c, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0xe8, 0x07, // sample
        ];
        let input = Series {
            labels: Labels::new([("__name__", "up")]).unwrap(),
            samples: vec![Sample::new(Timestamp::from_millis(1000), 1.0)],
        };
        let body = encode_write_request(&[input]);
        let plain = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(plain, want);
    }

    #[test]
    fn size_is_checked_before_decompressing() {
        // A snappy header announcing 1 GiB, followed by nothing: refused without allocating.
        let mut body = Vec::new();
        let mut n: u64 = 1 << 30;
        while n >= 0x80 {
            body.push((n as u8) | 0x80);
            n >>= 7;
        }
        body.push(n as u8);
        assert_eq!(
            decode_write_request(&body, 1 << 20).unwrap_err(),
            RemoteWriteError::TooLarge {
                size: 1 << 30,
                limit: 1 << 20
            }
        );
        assert_eq!(
            decode_write_request(&body, 1 << 20)
                .unwrap_err()
                .to_string(),
            "body decompresses to 1073741824 bytes, over the limit of 1048576"
        );
    }

    #[test]
    fn malformed_bodies_say_why() {
        let err = |b: &[u8]| decode_write_request(b, 1 << 20).unwrap_err().to_string();
        assert!(err(b"").starts_with("body is not snappy block-compressed data: "));
        // Framed snappy (the stream format) is not what remote_write uses.
        let framed = b"\xff\x06\x00\x00sNaPpY";
        assert!(
            err(framed).starts_with("body is not snappy block-compressed data: "),
            "{}",
            err(framed)
        );
        // Valid snappy around bytes that are not a WriteRequest.
        let junk = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\xff\xff\xff")
            .unwrap();
        assert!(
            err(&junk).starts_with("body is not a remote_write 1.0 WriteRequest: "),
            "{}",
            err(&junk)
        );
        // Not UTF-8 in a label value.
        let bad_utf8 = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\x08\x0a\x06\x0a\x01a\x12\x01\xff")
            .unwrap();
        assert!(err(&bad_utf8).starts_with("body is not a remote_write 1.0 WriteRequest: "));
    }

    #[test]
    fn label_rules() {
        let one = |labels: &[(&str, &str)]| {
            decode_write_request(
                &raw(&proto::WriteRequest {
                    timeseries: vec![
                        ts(&[("__name__", "ok")], &[(1, 1.0)]),
                        ts(labels, &[(1, 1.0)]),
                    ],
                }),
                1 << 20,
            )
        };
        assert_eq!(
            one(&[("__name__", "x"), ("a-b", "1")]).unwrap_err(),
            RemoteWriteError::Labels {
                index: 1,
                error: LabelsError::InvalidName("a-b".into())
            }
        );
        assert_eq!(
            one(&[("__name__", "x"), ("a", "1"), ("a", "2")])
                .unwrap_err()
                .to_string(),
            "timeseries[1]: label name \"a\": given more than once"
        );
        assert_eq!(
            one(&[]).unwrap_err().to_string(),
            "timeseries[1]: no labels (a series needs at least one non-empty label)"
        );
        assert_eq!(
            one(&[("a", "")]).unwrap_err(),
            RemoteWriteError::NoLabels { index: 1 }
        );
        // Unsorted labels are sorted; a series without __name__ is kept.
        let got = one(&[("z", "1"), ("a", "2")]).unwrap();
        assert_eq!(
            got[1].labels,
            Labels::new([("a", "2"), ("z", "1")]).unwrap()
        );
    }

    #[test]
    fn series_without_samples_are_dropped() {
        let body = raw(&proto::WriteRequest {
            timeseries: vec![
                ts(&[("__name__", "h")], &[]),
                ts(&[("__name__", "f")], &[(5, 2.0)]),
            ],
        });
        let got = decode_write_request(&body, 1 << 20).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels.metric_name(), Some("f"));
        assert!(
            decode_write_request(&raw(&proto::WriteRequest::default()), 10)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn batches_respect_the_sample_cap() {
        let long: Vec<(i64, f64)> = (0..7).map(|t| (t, 1.0)).collect();
        let input = vec![
            series("a", &long),
            series("b", &[(0, 1.0), (1, 1.0)]),
            series("c", &[(0, 1.0)]),
        ];
        let b = batches(&input, 3);
        let sizes: Vec<Vec<usize>> = b
            .iter()
            .map(|r| r.timeseries.iter().map(|t| t.samples.len()).collect())
            .collect();
        assert_eq!(sizes, vec![vec![3], vec![3], vec![1, 2], vec![1]]);
        let total: usize = sizes.iter().flatten().sum();
        assert_eq!(total, 10);
        assert!(batches(&[], 3).is_empty());
    }
}
