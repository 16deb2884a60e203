//! Helpers the CLI's end-to-end tests share: finding server binaries, child processes with
//! logs, HTTP on 127.0.0.1, polling with deadlines.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::print_stderr)] // not every test uses every helper

pub mod browser;

pub use portent_testkit::free_port;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn require(binary: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("PORTENT_REQUIRE_SERVERS").is_none(),
            "{binary} is not installed and PORTENT_REQUIRE_SERVERS is set"
        );
        eprintln!("\n\nSKIPPED: {binary} is not installed, so this test did not run.\n");
    }
    found
}

/// A child process killed on drop, its output in `log`.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after {limit:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:port: (status, body), or `None` if nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// `POST path` with a JSON `body` and a bearer `token` on 127.0.0.1:port: (status, body).
pub fn post(port: u16, path: &str, body: &str, token: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// Polls `f` every 200 ms until it gives `Some`, for at most `limit`.
pub fn until<T>(
    limit: Duration,
    what: &str,
    log: &dyn Fn() -> String,
    f: impl Fn() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n--- log ---\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Prometheus on 127.0.0.1:`port` with `config` (YAML) and its data in `dir/data`, plus `extra`
/// flags; returns once it is ready.
pub fn start_prometheus(bin: &Path, port: u16, dir: &Path, config: &str, extra: &[&str]) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .args(extra);
    let p = Proc::spawn(cmd, &dir.join("log"));
    until(
        Duration::from_secs(30),
        "prometheus ready",
        &|| p.log(),
        || get(port, "/-/ready").filter(|(s, _)| *s == 200),
    );
    p
}

/// The gauge `test_gauge` this test serves on `/metrics`: around 100 with noise, or `jump`
/// once set.
pub struct Target {
    pub port: u16,
    jump: Arc<AtomicU64>,
    jumping: Arc<AtomicBool>,
}

pub fn serve_target() -> Target {
    serve_target_with("")
}

/// [`serve_target`], with `extra` (exposition lines, each ending in a newline) after the gauge.
pub fn serve_target_with(extra: &'static str) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let jump = Arc::new(AtomicU64::new(0));
    let jumping = Arc::new(AtomicBool::new(false));
    let (j, on) = (Arc::clone(&jump), Arc::clone(&jumping));
    std::thread::spawn(move || {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            // xorshift: noise in [-5, 5).
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x >> 11) as f64 / (1u64 << 53) as f64 * 10.0 - 5.0;
            let value = if on.load(Ordering::SeqCst) {
                f64::from_bits(j.load(Ordering::SeqCst))
            } else {
                100.0 + noise
            };
            let body =
                format!("# TYPE test_gauge gauge\ntest_gauge{{kind=\"demo\"}} {value}\n{extra}");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Target {
        port,
        jump,
        jumping,
    }
}

impl Target {
    pub fn jump_to(&self, v: f64) {
        self.jump.store(v.to_bits(), Ordering::SeqCst);
        self.jumping.store(true, Ordering::SeqCst);
    }
}

impl Target {
    /// Back to the normal noisy level.
    pub fn calm(&self) {
        self.jumping.store(false, Ordering::SeqCst);
    }
}

/// A `portent serve` config pulling `test_gauge` from the Prometheus on `prom` at a 1 s step,
/// refitting every 10 s, listening on `listen`; written to `dir/portent.yml`.
pub fn pull_config(dir: &Path, prom: u16, listen: u16) -> PathBuf {
    let path = dir.join("portent.yml");
    std::fs::write(
        &path,
        format!(
            "source:
  pull:
    url: http://127.0.0.1:{prom}
    timeout: 5s
    retries:
      max: 0
queries:
  gauge:
    expr: test_gauge
    step: 1s
schedules:
  fast:
    fit_every: 10s
    fit_window: 10m
    score_every: 1s
models:
  m:
    type: auto
    queries: [gauge]
    schedules: [fast]
server:
  listen: 127.0.0.1:{listen}
storage:
  dir: state
"
        ),
    )
    .unwrap();
    path
}

/// `portent serve CONFIG` as a child process, its output in `log`.
pub fn start_portent(config: &Path, log: &Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portent"));
    cmd.arg("serve").arg(config);
    Proc::spawn(cmd, log)
}

/// Reads one HTTP request from `stream`: its request line and headers (lowercased) and its
/// body (Content-Length bytes); `None` if the peer closes or times out first.
pub fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Some((head, buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// remote_writes `samples` of `{__name__="<metric>", kind="demo"}` to portent on
/// 127.0.0.1:`port`: the status.
pub fn push_gauge(port: u16, metric: &str, samples: Vec<portent_core::Sample>) -> Option<u16> {
    let series = portent_core::Series {
        labels: portent_core::Labels::new([("__name__", metric), ("kind", "demo")]).unwrap(),
        samples,
    };
    let body = portent_prom::encode_write_request(&[series]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(&body).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The `portent_yhat` of query `query` on portent's `/metrics` at 127.0.0.1:`port`, once it
/// is finite (the model has learnt enough to expect something).
pub fn finite_yhat(port: u16, query: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics")?;
    let tag = format!("query=\"{query}\"");
    body.lines()
        .find(|l| l.starts_with("portent_yhat{") && l.contains(&tag))
        .and_then(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .filter(|y| y.is_finite())
}

/// A webhook receiver: every POST body it gets, in order.
pub fn webhook() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let body = read_request(&mut stream).map(|(_, body)| body);
            if let Some(json) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                sink.lock().unwrap().push(json);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

pub fn start_alertmanager(bin: &Path, port: u16, hook: u16, dir: &Path) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:
  receiver: test
  group_by: [alertname, query, model, incident]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: http://127.0.0.1:{hook}/hook
        send_resolved: true
"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // No gossip: a lone instance, and nothing listening beyond loopback.
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn");
    let p = Proc::spawn(cmd, &dir.join("log"));
    until(
        Duration::from_secs(30),
        "alertmanager ready",
        &|| p.log(),
        || get(port, "/-/ready").filter(|(s, _)| *s == 200),
    );
    p
}

/// The alerts of the webhook posts so far whose status is `status`, as (alertname, labels).
pub fn alerts(got: &Mutex<Vec<serde_json::Value>>, status: &str) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|post| post["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["status"] == status)
        .collect()
}
