//! The web UI in a real headless Chromium, driven through chromedriver's WebDriver protocol
//! (plain HTTP and JSON, so no client crate is needed): `portent serve` takes a gauge this test
//! remote_writes into it, a spike opens an incident, and then the overview lists the series
//! and the incident, the series page's chart draws the pushed values, the incident page loads,
//! and its "false positive" button is refused without the token and recorded on the server
//! with it. Screenshots of each page are kept in `$CARGO_TARGET_DIR/ui-screenshots` (or
//! `target/ui-screenshots`). 127.0.0.1 only; every wait has a deadline.
//!
//! Skipped (with a loud message) when `chromium` or `chromedriver` (Debian's `chromium` and
//! `chromium-driver`) is not installed, unless `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{Proc, free_port, get, require, start_portent, until};
use portent_core::{Labels, Sample, Series, Timestamp};
use serde_json::{Value, json};

const TOKEN: &str = "ui-token";

/// The key of a WebDriver element reference (W3C WebDriver, "web element identifier").
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn write_config(dir: &Path, listen: u16) -> PathBuf {
    let path = dir.join("portent.yml");
    std::fs::write(
        &path,
        format!(
            "source:
  push:
queries:
  gauge:
    expr: ui_gauge
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
  bearer_token: {TOKEN}
storage:
  dir: state
# The incident fires at once and stays open while the browser looks at it.
incidents:
  hold: 0s
  gap: 5s
  resolve_after: 10m
"
        ),
    )
    .unwrap();
    path
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Around 100 with a deterministic wobble of ±5.
fn calm(i: i64) -> f64 {
    100.0 + 5.0 * ((i as f64) * 0.7).sin()
}

/// remote_writes `samples` of `ui_gauge{kind="demo"}` to portent: the status.
fn push(port: u16, samples: Vec<Sample>) -> Option<u16> {
    let series = Series {
        labels: Labels::new([("__name__", "ui_gauge"), ("kind", "demo")]).unwrap(),
        samples,
    };
    let body = portent_prom::encode_write_request(&[series]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n\
         X-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(&body).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn api(port: u16, path: &str) -> Option<Value> {
    get(port, path)
        .filter(|(s, _)| *s == 200)
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
}

/// A chromedriver with one headless Chromium session; both end on drop.
struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path, dir: &Path) -> Self {
        let port = free_port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn(cmd, &dir.join("chromedriver.log"));
        until(
            Duration::from_secs(30),
            "chromedriver ready",
            &|| driver.log(),
            || {
                // Not listening yet: try again.
                TcpStream::connect(("127.0.0.1", port)).ok()?;
                let (_, v) = wd(port, "GET", "/status", None);
                v["value"]["ready"].as_bool().filter(|r| *r)
            },
        );
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // Root in a container: no sandbox; no GPU; /dev/shm may be tiny. No traffic
                // beyond the page's own (127.0.0.1).
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800",
                         "--disable-background-networking", "--disable-component-update",
                         "--no-first-run", "--disable-sync"],
            },
        }}});
        let (status, v) = wd(port, "POST", "/session", Some(&caps));
        assert_eq!(status, 200, "new session: {v}\n{}", driver.log());
        let session = v["value"]["sessionId"].as_str().unwrap().to_owned();
        Self {
            port,
            session,
            _driver: driver,
        }
    }

    /// A WebDriver command on this session; panics with chromedriver's answer on an error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let (status, v) = wd(self.port, method, &full, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page: its return value.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Polls `script` until it returns something other than null or false, for at most
    /// `limit`.
    fn wait(&self, limit: Duration, what: &str, script: &str) -> Value {
        let page = || {
            self.eval("return document.body ? document.body.innerText : ''")
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        until(limit, what, &page, || {
            let v = self.eval(script);
            (!v.is_null() && v != Value::Bool(false)).then_some(v)
        })
    }

    /// Waits until the page's script has drawn it.
    fn wait_ready(&self, page: &str) {
        self.wait(
            Duration::from_secs(20),
            &format!("the {page} page drawn"),
            "const m = document.getElementById('app'); \
             return m && m.dataset.ready === '1' && m.dataset.page",
        );
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    /// Drags the mouse across `css` horizontally, from `from` to `to` pixels off its centre.
    fn drag(&self, css: &str, from: i64, to: i64) {
        let id = self.element(css);
        let origin = json!({ ELEMENT: id });
        let actions = json!({"actions": [{
            "type": "pointer",
            "id": "mouse",
            "parameters": { "pointerType": "mouse" },
            "actions": [
                { "type": "pointerMove", "duration": 0, "origin": origin, "x": from, "y": 0 },
                { "type": "pointerDown", "button": 0 },
                { "type": "pointerMove", "duration": 300, "origin": origin, "x": to, "y": 0 },
                { "type": "pointerUp", "button": 0 },
            ],
        }]});
        self.call("POST", "/actions", Some(&actions));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({ "text": text })),
        );
    }

    fn screenshot(&self, name: &str) {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; chromedriver itself is killed by its Proc.
        let _ = wd(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("ui-screenshots")
}

/// One WebDriver request to chromedriver on 127.0.0.1:`port`: (status, JSON answer).
///
/// The body is read by its Content-Length: chromedriver may keep the connection open whatever
/// the request asks, so reading to the end would wait for its idle timeout.
fn wd(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Page loads and screenshots are the slow commands; a minute bounds them.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let (head, len) = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "{method} {path}: connection closed before the headers"
        );
        got.extend_from_slice(&chunk[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            got.drain(..end + 4);
            break (head, len);
        }
    };
    while got.len() < len {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "{method} {path}: connection closed in the body");
        got.extend_from_slice(&chunk[..n]);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        serde_json::from_slice(&got[..len]).unwrap_or(Value::Null),
    )
}

#[test]
fn the_ui_shows_series_and_incidents_and_feedback_reaches_the_server() {
    let (Some(chromium), Some(chromedriver)) = (require("chromium"), require("chromedriver"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let portent = start_portent(&config, &dir.path().join("portent.log"));
    let log = || portent.log();
    until(Duration::from_secs(30), "/-/healthy", &log, || {
        get(port, "/-/healthy").filter(|(s, _)| *s == 200)
    });

    // Ten minutes of calm history at once, so the model fits at its first tick instead of
    // warming up for minutes; then one sample a second, spiking while `spiking` is set.
    let start = now_ms();
    let history: Vec<Sample> = (0..600)
        .map(|i| Sample::new(Timestamp::from_millis(start - (600 - i) * 1000), calm(i)))
        .collect();
    assert_eq!(push(port, history), Some(204), "{}", log());
    let spiking = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (spiking, stop) = (Arc::clone(&spiking), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 600;
            while !stop.load(Ordering::SeqCst) {
                let v = if spiking.load(Ordering::SeqCst) {
                    10_000.0
                } else {
                    calm(i)
                };
                let _ = push(port, vec![Sample::new(Timestamp::from_millis(now_ms()), v)]);
                i += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    until(Duration::from_secs(90), "an expected value", &log, || {
        let v = api(port, "/api/v1/series")?;
        v["series"][0]["yhat"].as_f64()
    });
    std::thread::sleep(Duration::from_secs(3));
    spiking.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(3500));
    spiking.store(false, Ordering::SeqCst);
    let incident = until(Duration::from_secs(60), "an open incident", &log, || {
        let v = api(port, "/api/v1/incidents?state=open")?;
        v["incidents"][0]["id"].as_str().map(str::to_owned)
    });
    // A few calm points after the spike, so the chart shows it between normal values.
    std::thread::sleep(Duration::from_secs(3));
    let series_id = api(port, "/api/v1/series").unwrap()["series"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let browser = Browser::start(&chromium, &chromedriver, dir.path());
    let base = format!("http://127.0.0.1:{port}");

    // Overview: the series, ranked, and the open incident.
    browser.goto(&format!("{base}/"));
    browser.wait_ready("overview");
    let listed = browser.eval(
        "return [document.getElementById('app').dataset.series, \
         document.querySelectorAll('tr[data-series-id]').length, \
         document.querySelectorAll('#series svg.spark path').length, \
         document.body.innerText]",
    );
    assert!(listed[1].as_u64().unwrap() >= 1, "{listed}");
    assert!(listed[2].as_u64().unwrap() >= 1, "no sparkline: {listed}");
    assert!(listed[3].as_str().unwrap().contains("ui_gauge"), "{listed}");
    let row = browser.eval(&format!(
        "return !!document.querySelector('tr[data-incident-id=\"{incident}\"]')"
    ));
    assert_eq!(row, Value::Bool(true), "the incident is not listed");
    browser.screenshot("overview.png");

    // Series page: uPlot drew the pushed values, with the spike marked.
    browser.goto(&format!("{base}/ui/series/{series_id}"));
    browser.wait_ready("series");
    let chart = browser.wait(
        Duration::from_secs(10),
        "the chart",
        "const c = document.getElementById('chart'); \
         return c && c.querySelector('canvas') && \
           [Number(c.dataset.points), c.querySelector('canvas').width]",
    );
    assert!(chart[0].as_u64().unwrap() > 10, "points drawn: {chart}");
    assert!(chart[1].as_u64().unwrap() > 100, "canvas width: {chart}");
    // Dragging across the chart zooms into the dragged span.
    let span = |v: &Value| v[1].as_f64().unwrap() - v[0].as_f64().unwrap();
    let range = "const c = document.getElementById('chart'); \
                 return c.dataset.xMin && [Number(c.dataset.xMin), Number(c.dataset.xMax)]";
    let before = span(&browser.wait(Duration::from_secs(5), "the x range", range));
    browser.drag("#chart .u-over", -200, 100);
    browser.wait(
        Duration::from_secs(5),
        "a narrower x range after the drag",
        &format!(
            "const c = document.getElementById('chart'); \
             return Number(c.dataset.xMax) - Number(c.dataset.xMin) < {before} * 0.9"
        ),
    );
    let anomalies = browser.eval("return document.querySelectorAll('#anomalies tbody tr').length");
    assert!(anomalies.as_u64().unwrap() >= 1, "no anomaly listed");
    browser.screenshot("series.png");

    // Incident page: explanation, candidates, evidence.
    browser.goto(&format!("{base}/ui/incidents/{incident}"));
    browser.wait_ready("incident");
    let shown = browser.eval(
        "return [document.querySelector('pre.explanation').innerText, \
         document.querySelectorAll('#candidates tbody tr').length, \
         document.querySelectorAll('#evidence tbody tr').length, \
         document.getElementById('feedback-state').dataset.verdict]",
    );
    assert!(
        shown[0].as_str().unwrap().contains(&incident),
        "explanation: {shown}"
    );
    assert!(shown[1].as_u64().unwrap() >= 1, "{shown}");
    assert!(shown[2].as_u64().unwrap() >= 1, "{shown}");
    assert_eq!(shown[3], "", "feedback before any click: {shown}");

    // Without the token the server refuses, and says so on the page.
    browser.click("#false-positive");
    browser.wait(
        Duration::from_secs(10),
        "the refusal",
        "const m = document.getElementById('feedback-message'); \
         return m.className === 'error' && m.innerText",
    );
    let feedback = |port| api(port, &format!("/api/v1/incidents/{incident}")).unwrap();
    assert_eq!(feedback(port)["feedback"], json!([]));

    // With the token (typed into the header's field, kept in local storage) it is recorded,
    // and the page shows the server's state.
    browser.type_into("#token", TOKEN);
    browser.click("#false-positive");
    browser.wait(
        Duration::from_secs(10),
        "the verdict shown",
        "return document.getElementById('feedback-state').dataset.verdict === 'false_positive'",
    );
    let v = feedback(port);
    assert_eq!(v["feedback"][0]["verdict"], "false_positive", "{v}");
    assert_eq!(v["feedback"][0]["by"], "web-ui", "{v}");
    browser.screenshot("incident.png");

    stop.store(true, Ordering::SeqCst);
    pusher.join().unwrap();
}
