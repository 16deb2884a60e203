//! Real servers for the integration tests: Prometheus and VictoriaMetrics from Debian's
//! packages, each started on a free loopback port with its data in a temporary directory, and
//! killed when dropped.
//!
//! A missing binary skips the test with a loud message, unless `PORTENT_REQUIRE_SERVERS` is
//! set (as `scripts/test.sh` does after installing them): then it fails.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::print_stderr)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portent_core::{Labels, Sample, Series, Timestamp};
pub use portent_testkit::free_port;

/// How long any server gets to become ready; they take well under a second here.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The path of `binary`, or `None` (with a loud message) if it is not installed and the
/// servers are not required.
pub fn require(binary: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let install = "apt-get install -y prometheus victoria-metrics prometheus-node-exporter (or run scripts/test.sh)";
        if std::env::var_os("PORTENT_REQUIRE_SERVERS").is_some() {
            panic!("{binary} is not installed and PORTENT_REQUIRE_SERVERS is set: {install}");
        }
        // Straight to the process' stderr: libtest captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\n\n********************************************************************\n\
             SKIPPED: {binary} is not installed, so this test did not run.\n\
             Install it with {install};\n\
             set PORTENT_REQUIRE_SERVERS=1 to make a missing server a failure.\n\
             ********************************************************************\n"
        );
    }
    found
}

/// A running server process; killed (and waited for) on drop.
pub struct Server {
    child: Child,
    name: &'static str,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Where its data and log live.
    pub dir: tempfile::TempDir,
}

impl Server {
    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("log")) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("--- {} log (end) ---\n{}", self.name, &text[start..])
    }

    fn spawn(name: &'static str, mut cmd: Command, port: u16, dir: tempfile::TempDir) -> Self {
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let err = log.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
        Self {
            child,
            name,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// Waits until `path` answers 200, or panics with the server's log.
    pub async fn wait_ready(&mut self, path: &str) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + READY_DEADLINE;
        let url = format!("{}{}", self.url, path);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}\n{}", self.name, self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready at {url} after {READY_DEADLINE:?}\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus with `config` (YAML; `{{PORT}}` is replaced by its own port), the remote_write
/// receiver on, and data in `data` (a fresh directory if `None`), ready to answer. `None` if
/// not installed.
pub async fn prometheus(config: &str, data: Option<&Path>) -> Option<Server> {
    let mut server = start_prometheus(config, data, &[])?;
    server.wait_ready("/-/ready").await;
    Some(server)
}

/// Prometheus as [`prometheus`] does, with extra arguments (`--web.config.file` for TLS), not
/// waited for: the caller knows how to reach it.
pub fn start_prometheus(config: &str, data: Option<&Path>, args: &[String]) -> Option<Server> {
    let bin = require("prometheus")?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config.replace("{{PORT}}", &port.to_string())).unwrap();
    let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--storage.tsdb.retention.time=100y")
        .arg("--log.level=warn")
        .args(args);
    Some(Server::spawn("prometheus", cmd, port, dir))
}

/// A Prometheus config with no scrapes.
pub const EMPTY_PROMETHEUS: &str = "global:\n  scrape_interval: 1m\n";

/// VictoriaMetrics with its query cache off and a 1 s latency offset (the default hides the
/// last 30 s). `None` if not installed.
pub async fn victoria_metrics() -> Option<Server> {
    let bin = require("victoria-metrics")?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!(
            "-storageDataPath={}",
            dir.path().join("vm").display()
        ))
        .arg("-retentionPeriod=100y")
        .arg("-search.latencyOffset=1s")
        .arg("-search.disableCache")
        .arg("-loggerLevel=WARN");
    let mut server = Server::spawn("victoria-metrics", cmd, port, dir);
    server.wait_ready("/health").await;
    Some(server)
}

/// Makes everything VictoriaMetrics has ingested searchable now rather than within a second.
pub async fn vm_flush(vm: &Server) {
    let r = reqwest::get(format!("{}/internal/force_flush", vm.url))
        .await
        .unwrap();
    assert!(r.status().is_success(), "force_flush: {}", r.status());
}

/// Now, rounded down to a whole multiple of `step_secs`.
pub fn now_aligned(step_secs: i64) -> Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Timestamp::from_secs(now - now.rem_euclid(step_secs))
}

/// A series named `name` with `labels`, samples at `start + k * step_secs` with `values`.
pub fn series(
    name: &str,
    labels: &[(&str, &str)],
    start: Timestamp,
    step_secs: i64,
    values: &[f64],
) -> Series {
    Series {
        labels: Labels::new(labels.iter().copied().chain([("__name__", name)])).unwrap(),
        samples: values
            .iter()
            .enumerate()
            .map(|(k, &v)| Sample::new(start.add_millis(k as i64 * step_secs * 1000), v))
            .collect(),
    }
}

/// Asserts two sample lists are the same, NaN equal to NaN.
pub fn assert_same_samples(got: &[Sample], want: &[Sample], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: sample count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = g.t == w.t && (g.v == w.v || (g.v.is_nan() && w.v.is_nan()));
        assert!(same, "{what}: sample {i}: got {g:?}, want {w:?}");
    }
}
