//! The wire layer against real Prometheus and VictoriaMetrics (Debian's packages) on loopback.
//!
//! Each test starts its own servers on free ports with temporary data, so they run in parallel.
//! Without the binaries they skip loudly, unless `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    EMPTY_PROMETHEUS, assert_same_samples, now_aligned, prometheus, require, series,
    start_prometheus, victoria_metrics, vm_flush,
};
use portent_core::{Labels, Sample, Series, Timestamp};
use portent_prom::{
    Auth, Client, ClientConfig, ClientError, ReceiverLimits, RemoteWriteClient, RetryPolicy,
    TransportKind, remote_write_router,
};
use tokio::sync::mpsc;

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        jitter_seed: 7,
    }
}

fn config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url);
    c.timeout = Duration::from_secs(20);
    c.retry = fast_retry();
    c
}

/// Ten minutes of samples every 15 s, ending a minute ago: inside any head block.
fn recent_series(values_a: &[f64], values_b: &[f64]) -> (Vec<Series>, Timestamp) {
    let start = now_aligned(15).add_millis(-10 * 60 * 1000);
    let a = series(
        "portent_rt",
        &[("case", "a"), ("job", "t")],
        start,
        15,
        values_a,
    );
    let b = series(
        "portent_rt",
        &[("case", "b"), ("job", "t")],
        start,
        15,
        values_b,
    );
    (vec![a, b], start)
}

fn values(n: usize, f: impl Fn(usize) -> f64) -> Vec<f64> {
    (0..n).map(f).collect()
}

#[tokio::test]
async fn remote_write_to_prometheus_then_query_range_reads_exact_values() {
    let Some(prom) = prometheus(EMPTY_PROMETHEUS, None).await else {
        return;
    };
    let mut a = values(37, |k| k as f64 * 0.25 - 3.0);
    a[3] = f64::NAN;
    a[4] = f64::INFINITY;
    a[5] = f64::NEG_INFINITY;
    a[6] = 1e-300;
    a[7] = 123_456_789.123_456_78;
    let b = values(37, |k| (k as f64).sqrt());
    let (input, start) = recent_series(&a, &b);

    let writer = RemoteWriteClient::new(&config(&format!("{}/api/v1/write", prom.url))).unwrap();
    writer.write(&input).await.unwrap();

    let client = Client::new(&config(&prom.url)).unwrap();
    let end = start.add_millis(36 * 15_000);
    let got = client
        .query_range("portent_rt", start, end, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}\n{}", prom.log_tail());
    for (g, w) in got.iter().zip(&input) {
        assert_eq!(g.labels, w.labels);
        assert_same_samples(&g.samples, &w.samples, &g.labels.to_string());
    }

    // The same data through the instant query and the series endpoint.
    let at = client.query("portent_rt", end).await.unwrap();
    assert_eq!(at.len(), 2);
    assert_eq!(at[1].samples, [Sample::new(end, 36f64.sqrt())]);
    let labels = client.series(&["portent_rt"], start, end).await.unwrap();
    assert_eq!(
        labels,
        vec![input[0].labels.clone(), input[1].labels.clone()]
    );
}

#[tokio::test]
async fn remote_write_to_victoria_metrics_then_query_range_reads_exact_values() {
    let Some(vm) = victoria_metrics().await else {
        return;
    };
    // VictoriaMetrics stores values as decimals with 12 significant digits or more: these
    // round-trip exactly.
    let a = values(37, |k| k as f64 * 0.25 - 3.0);
    let b = values(37, |k| 1000.0 + k as f64 * 1.5);
    let (input, start) = recent_series(&a, &b);
    let writer = RemoteWriteClient::new(&config(&format!("{}/api/v1/write", vm.url))).unwrap();
    writer.write(&input).await.unwrap();
    vm_flush(&vm).await;

    let client = Client::new(&config(&vm.url))
        .unwrap()
        .with_max_points_per_series(10)
        .unwrap();
    let end = start.add_millis(36 * 15_000);
    // Chunks of 10 points: 4 requests, stitched.
    let got = client
        .query_range("portent_rt", start, end, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}\n{}", vm.log_tail());
    for (g, w) in got.iter().zip(&input) {
        assert_eq!(g.labels, w.labels);
        assert_same_samples(&g.samples, &w.samples, &g.labels.to_string());
    }
}

/// Writes `series` as OpenMetrics, backfills them with promtool into `dir`.
fn backfill(series: &[Series], dir: &std::path::Path) {
    let promtool = require("promtool").unwrap();
    let om = dir.join("backfill.om");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&om).unwrap());
    writeln!(f, "# TYPE portent_backfill gauge").unwrap();
    for s in series {
        let case = s.labels.get("case").unwrap();
        for x in &s.samples {
            writeln!(
                f,
                "portent_backfill{{case=\"{case}\"}} {} {}",
                x.v,
                x.t.millis() / 1000
            )
            .unwrap();
        }
    }
    writeln!(f, "# EOF").unwrap();
    f.into_inner().unwrap().sync_all().unwrap();
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn query_range_over_the_11000_point_limit_returns_every_point_once() {
    if require("prometheus").is_none() || require("promtool").is_none() {
        return;
    }
    // 25,000 points at 15 s (4.3 days), a week ago: Prometheus answers at most 11,000 per
    // series, so this takes three chunks.
    const N: usize = 25_000;
    let start = now_aligned(3600).add_millis(-7 * 86_400_000);
    let input = vec![
        series(
            "portent_backfill",
            &[("case", "a")],
            start,
            15,
            &values(N, |k| k as f64),
        ),
        series(
            "portent_backfill",
            &[("case", "b")],
            start,
            15,
            &values(N, |k| (k % 97) as f64 * 0.5),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    backfill(&input, dir.path());
    eprintln!("backfill of {} points took {:?}", 2 * N, t.elapsed());
    let Some(prom) = prometheus(EMPTY_PROMETHEUS, Some(&dir.path().join("data"))).await else {
        return;
    };

    let client = Client::new(&config(&prom.url)).unwrap();
    let end = start.add_millis((N as i64 - 1) * 15_000);
    let t = Instant::now();
    let got = client
        .query_range("portent_backfill", start, end, Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!("query_range of {} points took {:?}", 2 * N, t.elapsed());
    assert_eq!(got.len(), 2, "{}", prom.log_tail());
    for (g, w) in got.iter().zip(&input) {
        assert_eq!(
            g.labels,
            w.labels.with("__name__", "portent_backfill").unwrap()
        );
        assert_same_samples(&g.samples, &w.samples, &g.labels.to_string());
    }

    // Without chunking Prometheus refuses, and says why.
    let unchunked = Client::new(&config(&prom.url))
        .unwrap()
        .with_max_points_per_series(100_000)
        .unwrap();
    let err = unchunked
        .query_range("portent_backfill", start, end, Duration::from_secs(15))
        .await
        .unwrap_err();
    match &err {
        ClientError::Api {
            status,
            error_type,
            message,
            ..
        } => {
            assert_eq!((*status, error_type.as_str()), (400, "bad_data"));
            assert!(
                message.contains("exceeded maximum resolution of 11,000 points"),
                "{message}"
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn prometheus_error_json_maps_to_the_typed_error() {
    let Some(prom) = prometheus(EMPTY_PROMETHEUS, None).await else {
        return;
    };
    let client = Client::new(&config(&prom.url)).unwrap();
    let now = now_aligned(1);
    let err = client
        .query_range(
            "sum(rate(x[5m])",
            now.add_millis(-60_000),
            now,
            Duration::from_secs(15),
        )
        .await
        .unwrap_err();
    let ClientError::Api {
        status,
        error_type,
        message,
        url,
    } = &err
    else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(*status, 400);
    assert_eq!(error_type, "bad_data");
    assert!(message.contains("parse error"), "{message}");
    assert!(url.ends_with("/api/v1/query_range"), "{url}");
    assert!(err.is_permanent());
    assert_eq!(err.to_string(), format!("{url}: bad_data: {message}"));

    // VictoriaMetrics speaks the same error JSON.
    let Some(vm) = victoria_metrics().await else {
        return;
    };
    let err = Client::new(&config(&vm.url))
        .unwrap()
        .query("sum(rate(x[5m])", now)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 422 | 400, message, .. } if !message.is_empty()),
        "{err:?}"
    );
}

#[tokio::test]
async fn unreachable_server_fails_clearly_after_bounded_retries() {
    let port = common::free_port();
    let client = Client::new(&config(&format!("http://127.0.0.1:{port}"))).unwrap();
    let t = Instant::now();
    let err = client.query("up", now_aligned(1)).await.unwrap_err();
    let elapsed = t.elapsed();
    let ClientError::Transport {
        kind,
        attempts,
        message,
        ..
    } = &err
    else {
        panic!("expected a transport error, got {err:?}");
    };
    assert_eq!((*kind, *attempts), (TransportKind::Connect, 3));
    assert!(message.to_lowercase().contains("refused"), "{message}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("http://127.0.0.1:{port}/api/v1/query: "))
            && text.ends_with("(after 3 attempts)"),
        "{text}"
    );
    // Two waits of 25-50 ms and 50-100 ms.
    assert!(
        elapsed >= Duration::from_millis(75) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert!(!err.is_permanent());
}

#[tokio::test]
async fn prometheus_remote_writes_into_our_receiver() {
    let (tx, mut rx) = mpsc::channel::<Vec<Series>>(64);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = remote_write_router(tx, ReceiverLimits::default());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{{{{PORT}}}}']\n\
         remote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n    queue_config:\n      \
         batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n"
    );
    let Some(prom) = prometheus(&config, None).await else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = Labels::new([
        ("__name__", "up"),
        ("job", "self"),
        ("instance", prom.url.trim_start_matches("http://")),
    ])
    .unwrap();
    let (mut batches, mut series_seen) = (0, 0);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(batch)) => batch,
            Ok(None) => panic!("receiver stopped"),
            Err(_) => panic!(
                "no up sample from Prometheus within 60 s ({batches} batches, {series_seen} \
                 series)\n{}",
                prom.log_tail()
            ),
        };
        batches += 1;
        series_seen += batch.len();
        if let Some(up) = batch.iter().find(|s| s.labels == want) {
            assert!(up.samples.iter().all(|s| s.v == 1.0), "{up:?}");
            break;
        }
    }
    // Prometheus sent only well-formed batches: nothing was refused.
    assert!(
        !prom.log_tail().contains("non-recoverable error"),
        "{}",
        prom.log_tail()
    );
    server.abort();
}

#[tokio::test]
async fn tls_with_client_certificate_and_basic_auth_against_prometheus() {
    let Some(openssl) = require("openssl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=portent test ca",
    ]);
    // Extensions make them X.509 v3, which rustls requires.
    std::fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(p("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for name in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        let (csr, out, ext) = (
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &out,
            "-extfile",
            &ext,
        ]);
    }
    // bcrypt of "s3cret" at cost 4 (cheap to check on every request).
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  \
         client_auth_type: RequireAndVerifyClientCert\n\
         basic_auth_users:\n  portent: $2b$04$4AyYQKc5aUJiCaxzeAsEGubPI6CYwHpuBRDxAru67kPt8D73eJ3Z.\n",
        p("server.pem").display(),
        p("server.key").display(),
        p("ca.pem").display()
    );
    std::fs::write(p("web.yml"), web).unwrap();
    let Some(prom) = start_prometheus(
        EMPTY_PROMETHEUS,
        None,
        &[format!("--web.config.file={}", p("web.yml").display())],
    ) else {
        return;
    };
    let https = prom.url.replace("http://", "https://");

    let mut good = config(&https);
    good.tls.ca_file = Some(p("ca.pem"));
    good.tls.cert_file = Some(p("client.pem"));
    good.tls.key_file = Some(p("client.key"));
    good.auth = Some(Auth::Basic {
        username: "portent".into(),
        password: "s3cret".into(),
    });
    let client = Client::new(&good).unwrap();
    // Wait for it to listen: the first attempts may be refused.
    let deadline = Instant::now() + common::READY_DEADLINE;
    let answer = loop {
        match client.query("vector(42)", now_aligned(1)).await {
            Ok(a) => break a,
            Err(ClientError::Transport { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}\n{}", prom.log_tail()),
        }
    };
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].samples[0].v, 42.0);

    // Wrong password: 401, not retried.
    let mut bad_password = good.clone();
    bad_password.auth = Some(Auth::Basic {
        username: "portent".into(),
        password: "wrong".into(),
    });
    let err = Client::new(&bad_password)
        .unwrap()
        .query("up", now_aligned(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Status {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );

    // No client certificate: the handshake fails.
    let mut no_cert = good.clone();
    no_cert.tls.cert_file = None;
    no_cert.tls.key_file = None;
    let err = Client::new(&no_cert)
        .unwrap()
        .query("up", now_aligned(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");

    // The system roots do not know our CA: verification is on by default.
    let mut system_roots = good.clone();
    system_roots.tls.ca_file = None;
    let err = Client::new(&system_roots)
        .unwrap()
        .query("up", now_aligned(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // ...unless explicitly switched off.
    let mut insecure = good;
    insecure.tls.ca_file = None;
    insecure.tls.insecure_skip_verify = true;
    let a = Client::new(&insecure)
        .unwrap()
        .query("vector(1)", now_aligned(1))
        .await
        .unwrap();
    assert_eq!(a[0].samples[0].v, 1.0);
}
