//! End to end against the real Alertmanager (Debian's `prometheus-alertmanager`) on
//! 127.0.0.1: an incident becomes an alert with its labels and annotations, Alertmanager
//! delivers it to a webhook receiver inside this test, and the incident's resolution resolves
//! it. Every wait has a deadline.
//!
//! Skipped, loudly, when the binary is missing, unless `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portent_core::Timestamp;
use portent_incidents::notify::{AlertmanagerConfig, Notifier, NotifierConfig, Sink};
use portent_incidents::{Correlator, CorrelatorConfig, EvidencePack, PackConfig, State};
use portent_testkit::free_port;

fn require(binary: &str) -> Option<PathBuf> {
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

/// Alertmanager, killed on drop.
struct Proc(Child, PathBuf);

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:port: the status, or `None` if nothing answers.
fn status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// A webhook receiver: every POST body it gets, in order.
fn webhook() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let body = loop {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
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
                    break Some(buf[end + 4..end + 4 + len].to_vec());
                }
            };
            if let Some(json) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                sink.lock().unwrap().push(json);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

fn start_alertmanager(bin: &Path, port: u16, hook: u16, dir: &Path) -> Proc {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:
  receiver: test
  group_by: [alertname, incident]
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
    let log = dir.join("alertmanager.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // No gossip: a lone instance, nothing listening beyond loopback.
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let p = Proc(child, log);
    wait(
        Duration::from_secs(30),
        "alertmanager ready",
        &|| p.log(),
        || status(port, "/-/ready").filter(|&s| s == 200),
    );
    p
}

fn wait<T>(limit: Duration, what: &str, log: &dyn Fn() -> String, f: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp::from_millis(i64::try_from(ms).unwrap())
}

fn alerts(got: &Mutex<Vec<serde_json::Value>>, status: &str) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|post| post["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["status"] == status)
        .collect()
}

#[test]
fn an_incident_pages_through_alertmanager_and_resolves() {
    let Some(bin) = require("prometheus-alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (hook, got) = webhook();
    let port = free_port();
    let am = start_alertmanager(&bin, port, hook, dir.path());
    let logs = || {
        format!(
            "--- alertmanager ---\n{}\n--- webhook ---\n{:?}",
            am.log(),
            got.lock().unwrap()
        )
    };

    // The seeded scenario, moved so that its last anomaly was 8 minutes ago.
    let shift = now().add_millis(-20 * 60_000).millis() - common::at(0).millis();
    let mut c = Correlator::new(CorrelatorConfig {
        resolve_after: Duration::from_secs(300),
        ..CorrelatorConfig::default()
    });
    for mut a in common::scenario() {
        a.scored.t = a.scored.t.add_millis(shift);
        c.observe(&a);
    }
    let inc = c.incidents()[0].clone();
    assert_eq!(inc.state, State::Firing);
    let id = inc.id.to_string();

    let mut config = AlertmanagerConfig::new(format!("http://127.0.0.1:{port}"));
    config.runbook_url = Some("https://runbooks.example/portent#{incident}".into());
    let mut notifier =
        Notifier::new(vec![Sink::Alertmanager(config)], NotifierConfig::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pack = |c: &Correlator| {
        vec![EvidencePack::build(
            &c.incidents()[0],
            &c.config().topology,
            &PackConfig::default(),
        )]
    };
    let report = rt.block_on(notifier.tick(&pack(&c), now()));
    assert_eq!(report.delivered.len(), 1, "{report:?}\n{}", logs());

    let firing = wait(
        Duration::from_secs(30),
        "the firing alert at the webhook",
        &logs,
        || alerts(&got, "firing").into_iter().next(),
    );
    assert_eq!(firing["labels"]["alertname"], "PortentIncident", "{firing}");
    assert_eq!(firing["labels"]["incident"], id.as_str());
    assert_eq!(firing["labels"]["node"], "n1");
    assert_eq!(firing["labels"]["severity"], "warning");
    assert_eq!(
        firing["annotations"]["runbook_url"],
        format!("https://runbooks.example/portent#{id}")
    );
    let summary = firing["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("4 series anomalous, most likely cause node_cpu_utilisation"),
        "{summary}"
    );
    let description = firing["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("Most likely cause: [e1]"),
        "{description}"
    );

    // A refresh a minute later is not a new page.
    let later = now().add_millis(61_000);
    let report = rt.block_on(notifier.tick(&pack(&c), later));
    assert_eq!(report.refreshed.len(), 1, "{report:?}");

    // Quiet for resolve_after: resolved, and Alertmanager says so.
    c.advance(now());
    assert_eq!(c.incidents()[0].state, State::Resolved);
    let report = rt.block_on(notifier.tick(&pack(&c), now()));
    assert_eq!(report.delivered, [(0, id.clone(), State::Resolved)]);
    let resolved = wait(
        Duration::from_secs(30),
        "the resolved alert at the webhook",
        &logs,
        || alerts(&got, "resolved").into_iter().next(),
    );
    assert_eq!(resolved["labels"]["incident"], id.as_str());
    assert_eq!(
        alerts(&got, "firing").len(),
        1,
        "one page, not one per post\n{}",
        logs()
    );
}
