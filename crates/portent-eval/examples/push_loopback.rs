//! The whole daemon under remote_write load on loopback (issue 3's benchmark): a real
//! `portent serve` process, a real HTTP client pushing to it, the server's own CPU time and
//! resident memory read from `/proc`.
//!
//! ```sh
//! cargo build --release -p portent
//! cargo run --release -p portent-eval --example push_loopback -- [SERIES] [SECONDS]
//! ```
//!
//! (`bash bench/push_loopback.sh` does both.) What it does:
//!
//! 1. Saves a state of SERIES series (default 100,000; cAdvisor-like labels, those of
//!    `benches/push_path.rs`), each with the default detector fitted on eight days of one-minute
//!    samples, into a fresh `storage.dir`: the daemon resumes it as after a restart, so its
//!    detectors are fitted (seasonal) without fitting 100,000 series first.
//! 2. Starts `target/release/portent serve` (or `$PORTENT_BIN`) on 127.0.0.1 with one push query
//!    at a one-second step, scored every second (refits weekly, so none falls in the run), the
//!    `/metrics` output, the web UI's history and incidents at their defaults: everything a
//!    deployed daemon does per sample. Time runs sixty times faster than in a typical
//!    deployment (a 1 m step, scored every minute, five minutes of remote_write lateness), so
//!    the lateness is 5 s: each tick reads the same six samples a series as there.
//!    `PORTENT_LATENESS=1m` sets another lateness, `PORTENT_LATENESS=default` leaves the key
//!    out (five minutes, and the only choice of builds before it existed);
//!    `PORTENT_MAX_SAMPLES` sets `source.push.max_samples`; `PORTENT_EXTRA_CONFIG` is appended
//!    to the config as it is (`$'incidents:\n  enabled: false\n'` measures without incidents).
//! 3. For SECONDS seconds (default 200: the default push buffer, 16 Mi samples, is full after
//!    168 at 100,000 series) sends one sample per series per second as remote_write 1.0 bodies
//!    of 2,000 series (Prometheus' `max_samples_per_send`), two requests in flight, keep-alive.
//! 4. Prints the server's CPU time (user + system, all threads, from `/proc/PID/stat`) per
//!    accepted sample and as samples per second per core; its VmRSS per series at the start and
//!    the end, and VmHWM; then the cost of three scrapes of its `/metrics` in a row.
//!    `PORTENT_HOLD=S` waits S seconds before the scrapes: time to take a heap profile of the
//!    daemon as it is after the pushes (`PORTENT_BIN` can be a script that runs it under
//!    heaptrack, built without mimalloc).
//!
//! The client runs in this process, on the other core: its work is not counted. Every body must
//! be accepted (2xx), or the run fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portent_core::{Fit, Labels, Sample, Timestamp};
use portent_engine::{Entry, Store};
use portent_models::DetectorConfig;
#[path = "../benches/common/push.rs"]
#[allow(dead_code)]
mod push;
use push::{DAY, METRIC, MIN, T0, bodies, labels, value};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let bin = match std::env::var_os("PORTENT_BIN") {
        Some(b) => PathBuf::from(b),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/portent"),
    };
    if !bin.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release -p portent` first, or set PORTENT_BIN",
            bin.display()
        )
        .into());
    }
    let dir = tempfile::tempdir()?;
    let now_ms = wall_ms();
    let started = Instant::now();
    seed_state(n, &dir.path().join("state"), now_ms)?;
    println!(
        "state of {n} fitted series saved in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = portent_testkit::free_port();
    let config = dir.path().join("portent.yml");
    std::fs::write(&config, config_text(port, &dir.path().join("state")))?;
    let mut server = Server::start(&bin, &config, dir.path())?;
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(&mut server, &base, n, seconds));
    server.stop();
    if outcome.is_err() {
        eprintln!("--- server log ---\n{}", server.log());
    }
    outcome
}

/// Milliseconds since the epoch, whole seconds.
fn wall_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    ms - ms % 1000
}

/// Writes a state of `n` series with one fitted detector each, last seen at `now_ms`.
fn seed_state(n: usize, dir: &Path, now_ms: i64) -> Result<(), Error> {
    let history: Vec<Sample> = (0..8 * 1440)
        .map(|i| {
            let t = T0 - 8 * DAY + i * MIN;
            Sample::new(Timestamp::from_millis(t), value(0, t))
        })
        .collect();
    let detector = DetectorConfig::default().fit(&history)?;
    let mut store = Store::new();
    let g = store.group_id("m", "cpu");
    let now = Timestamp::from_millis(now_ms);
    for i in 0..n {
        let mut e = Entry::new(detector.clone(), now);
        e.last_scored = Some(now);
        store.group_mut(g).insert(labels(i), e);
    }
    portent_engine::save(&store, dir)?;
    Ok(())
}

/// `source.push`'s lines: `lateness: 5s`, or `$PORTENT_LATENESS` (`default` leaves the key out,
/// for a build that predates it).
fn push_section() -> String {
    let mut out = match std::env::var("PORTENT_LATENESS").as_deref() {
        Ok("default") => "  push:\n".to_owned(),
        Ok(l) => format!("  push:\n    lateness: {l}\n"),
        Err(_) => "  push:\n    lateness: 5s\n".to_owned(),
    };
    if let Ok(m) = std::env::var("PORTENT_MAX_SAMPLES") {
        out.push_str(&format!("    max_samples: {m}\n"));
    }
    out
}

fn config_text(port: u16, state: &Path) -> String {
    format!(
        "source:
{}queries:
  cpu:
    source: push
    expr: {METRIC}
    step: 1s
schedules:
  s:
    fit_every: 7d
    fit_window: 1h
    score_every: 1s
models:
  m:
    type: auto
    queries: [cpu]
    schedules: [s]
outputs:
  metrics:
    type: metrics
server:
  listen: 127.0.0.1:{port}
storage:
  dir: {}
{}",
        push_section(),
        state.display(),
        std::env::var("PORTENT_EXTRA_CONFIG").unwrap_or_default()
    )
}

/// The `portent serve` child.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(bin: &Path, config: &Path, dir: &Path) -> Result<Self, Error> {
        let log = dir.join("serve.log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The server's CPU time so far (user + system, all its threads), in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (in parentheses, which may hold spaces): state is 3rd,
    // utime the 14th and stime the 15th of the whole line.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, Error> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)`, from `getconf` (100 on Linux when that is missing).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `VmRSS`-style field of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<usize, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))?
        .parse::<usize>()?;
    Ok(kb * 1024)
}

/// The value of the first exposed sample whose line starts with `prefix`.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

async fn run(server: &mut Server, base: &str, n: usize, seconds: u64) -> Result<(), Error> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // Ready: the state is loaded and the first step ran.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("portent serve exited: {status}").into());
        }
        let ready = client.get(format!("{base}/-/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if Instant::now() > deadline {
            return Err("portent serve not ready after 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = server.pid();
    let names: Vec<Labels> = (0..n).map(labels).collect();
    let scrape = |client: reqwest::Client| async move {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok::<_, Error>(text)
    };
    let before = scrape(client.clone()).await?;
    let ingested0 =
        metric(&before, "portent_samples_ingested_total{source=\"push\"}").unwrap_or(0.0);
    let rss0 = status_bytes(pid, "VmRSS:")?;
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let first_ms = wall_ms() + 1000;
    let mut late = Duration::ZERO;
    for k in 0..seconds {
        let t = first_ms + i64::try_from(k)? * 1000;
        let due = t0 + Duration::from_millis(1000 + k * 1000);
        let now = Instant::now();
        if now < due {
            tokio::time::sleep(due - now).await;
        } else {
            late = late.max(now - due);
        }
        let bodies: Vec<Vec<u8>> = bodies(&names, t).collect();
        // Two requests in flight, as two remote_write shards.
        let (even, odd): (Vec<_>, Vec<_>) = bodies
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        let send = |part: Vec<(usize, Vec<u8>)>, client: reqwest::Client| async move {
            for (_, body) in part {
                let r = client
                    .post(format!("{base}/api/v1/write"))
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "snappy")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    let status = r.status();
                    return Err::<(), Error>(
                        format!(
                            "remote_write: {status}: {}",
                            r.text().await.unwrap_or_default()
                        )
                        .into(),
                    );
                }
            }
            Ok(())
        };
        let (a, b) = tokio::join!(send(even, client.clone()), send(odd, client.clone()));
        a?;
        b?;
    }
    // The last second's score tick, and one more.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let cpu1 = cpu_seconds(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    let rss1 = status_bytes(pid, "VmRSS:")?;
    let hwm = status_bytes(pid, "VmHWM:")?;
    if let Some(s) = std::env::var("PORTENT_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!("holding {s} s before the scrapes");
        tokio::time::sleep(Duration::from_secs(s)).await;
    }
    // Three scrapes in a row: the first is a daemon's first, the others its usual one.
    let mut scrapes = Vec::new();
    let mut after = String::new();
    for _ in 0..3 {
        let cpu = cpu_seconds(pid)?;
        let started = Instant::now();
        after = scrape(client.clone()).await?;
        scrapes.push((started.elapsed().as_secs_f64(), cpu_seconds(pid)? - cpu));
    }
    let ingested = metric(&after, "portent_samples_ingested_total{source=\"push\"}").unwrap_or(0.0)
        - ingested0;
    let tracked = metric(&after, "portent_series_tracked").unwrap_or(0.0);
    let buffered = metric(&after, "portent_push_samples ").unwrap_or(0.0);
    let anomalies = metric(&after, "portent_incident_anomalies_total ").unwrap_or(0.0);
    let state = metric(&after, "portent_state_size_bytes ").unwrap_or(0.0);
    let cpu = cpu1 - cpu0;
    println!(
        "{n} series, {seconds} s of one sample per series per second; the client fell behind by \
         at most {:.2} s",
        late.as_secs_f64()
    );
    println!(
        "server: {ingested:.0} samples accepted, {tracked:.0} series tracked, {buffered:.0} \
         samples in the push buffer ({:.0} a series)",
        buffered / n as f64
    );
    println!("server: {anomalies:.0} verdicts at or above their threshold went to the incidents");
    if state > 0.0 {
        // Set when the state is saved (every five minutes): absent from shorter runs.
        println!(
            "server: model state {:.0} B a series (portent_state_size_bytes)",
            state / n as f64
        );
    }
    println!(
        "server CPU: {cpu:.2} s in {wall:.1} s wall ({:.0}% of one core): {:.0} ns per sample, \
         {:.0} samples/s per core",
        100.0 * cpu / wall,
        1e9 * cpu / ingested.max(1.0),
        ingested / cpu.max(1e-9)
    );
    println!(
        "server VmRSS: {} MiB with the state loaded ({} B a series), {} MiB at the end ({} B a \
         series), VmHWM {} MiB",
        rss0 >> 20,
        rss0 / n.max(1),
        rss1 >> 20,
        rss1 / n.max(1),
        hwm >> 20
    );
    let each: Vec<String> = scrapes
        .iter()
        .map(|(wall, cpu)| format!("{wall:.2} s wall, {cpu:.2} s CPU"))
        .collect();
    println!(
        "/metrics scrapes ({} MiB, {} lines each), one after another: {}",
        after.len() >> 20,
        after.lines().count(),
        each.join("; ")
    );
    if tracked < n as f64 {
        return Err(format!("only {tracked} of {n} series tracked").into());
    }
    Ok(())
}
