//! A headless Chromium driven through chromedriver's WebDriver protocol (W3C WebDriver over
//! plain HTTP and JSON on 127.0.0.1, so no client crate is needed), for the UI's tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Proc, free_port, until};

/// The key of a WebDriver element reference (W3C WebDriver, "web element identifier").
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver with one headless Chromium session; both end on drop.
pub struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
}

impl Browser {
    pub fn start(chromium: &Path, chromedriver: &Path, dir: &Path) -> Self {
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
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let (status, v) = wd(self.port, method, &full, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page: its return value.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Polls `script` until it returns something other than null or false, for at most
    /// `limit`.
    pub fn wait(&self, limit: Duration, what: &str, script: &str) -> Value {
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
    pub fn wait_ready(&self, page: &str) {
        self.wait(
            Duration::from_secs(20),
            &format!("the {page} page drawn"),
            "const m = document.getElementById('app'); \
             return m && m.dataset.ready === '1' && m.dataset.page",
        );
    }

    pub fn element(&self, css: &str) -> String {
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

    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    /// Drags the mouse across `css` horizontally, from `from` to `to` pixels off its centre.
    pub fn drag(&self, css: &str, from: i64, to: i64) {
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

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({ "text": text })),
        );
    }

    pub fn screenshot(&self, name: &str) {
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

pub fn screenshots_dir() -> PathBuf {
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
