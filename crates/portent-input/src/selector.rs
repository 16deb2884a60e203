//! Series selectors such as `http_requests_total{job="api",code="500"}`, as column headers.

use std::borrow::Cow;

use portent_core::Labels;

/// Why a series selector could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {selector:?}: character {at}: {reason}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// Where the problem is: a 1-based character position in `selector`.
    pub at: usize,
    /// What is wrong there and what was expected.
    pub reason: String,
}

/// Parses a selector that names one series: an optional metric name and `name="value"` labels.
///
/// Values may be in double or single quotes with Go's escapes (`\"`, `\\`, `\n`, `\t`,
/// `\uXXXX`, ...) or in backticks without escapes, as in PromQL. Only `=` is allowed: `!=`,
/// `=~` and `!~` select many series and name none. A label with an empty value is absent, as in
/// Prometheus.
///
/// ```
/// use portent_input::parse_selector;
///
/// let labels = parse_selector(r#"http_requests_total{job="api", code="500"}"#).unwrap();
/// assert_eq!(labels.metric_name(), Some("http_requests_total"));
/// assert_eq!(labels.get("code"), Some("500"));
/// assert!(parse_selector(r#"up{job=~"a.*"}"#).is_err());
/// ```
pub fn parse_selector(s: &str) -> Result<Labels, SelectorError> {
    let mut p = Parser { s, i: 0 };
    let mut pairs: Vec<(&str, Cow<'_, str>)> = Vec::new();
    p.skip_ws();
    let name = p.ident(true);
    if !name.is_empty() {
        pairs.push((Labels::METRIC_NAME, Cow::Borrowed(name)));
    }
    p.skip_ws();
    if p.eat(b'{') {
        loop {
            p.skip_ws();
            if p.eat(b'}') {
                break;
            }
            let label = p.ident(false);
            if label.is_empty() {
                return Err(p.error("expected a label name or `}`"));
            }
            p.skip_ws();
            let rest = &s.as_bytes()[p.i..];
            if let Some(op) = ["!=", "=~", "!~"]
                .into_iter()
                .find(|op| rest.starts_with(op.as_bytes()))
            {
                return Err(p.error(&format!(
                    "`{op}` selects many series: only `=` names one (expected {label}=\"value\")"
                )));
            }
            if !p.eat(b'=') {
                return Err(p.error(&format!("expected `=` after label name {label:?}")));
            }
            p.skip_ws();
            let value = p.quoted()?;
            pairs.push((label, value));
            p.skip_ws();
            if p.eat(b',') {
                continue;
            }
            if p.eat(b'}') {
                break;
            }
            return Err(p.error("expected `,` or `}`"));
        }
        p.skip_ws();
    } else if name.is_empty() {
        return Err(p.error("expected a metric name or `{`"));
    }
    if p.i < s.len() {
        return Err(p.error("unexpected text after the selector"));
    }
    Labels::new(pairs).map_err(|e| SelectorError {
        selector: s.to_owned(),
        at: 1,
        reason: e.to_string(),
    })
}

/// The labels a column header names.
///
/// A header that reads as a selector (`name{...}` or `{...}`) must be a valid one; otherwise a
/// valid metric name becomes `__name__`, and any other text the label `series`.
pub(crate) fn header_labels(header: &str) -> Result<Labels, SelectorError> {
    let text = header.trim();
    if text.ends_with('}') {
        match parse_selector(text) {
            Ok(labels) => return Ok(labels),
            // `name{...}` or `{...}` was meant as a selector: say what is wrong with it.
            // `latency {ms}` was not.
            Err(e)
                if text
                    .split_once('{')
                    .is_some_and(|(name, _)| name.is_empty() || is_metric_name(name)) =>
            {
                return Err(e);
            }
            Err(_) => {}
        }
    }
    let labels = if is_metric_name(text) {
        Labels::new([(Labels::METRIC_NAME, text)])
    } else {
        Labels::new([("series", text)])
    };
    // Both names are valid and there is one pair, so this cannot fail; say so if it ever does.
    labels.map_err(|e| SelectorError {
        selector: text.to_owned(),
        at: 1,
        reason: e.to_string(),
    })
}

/// Whether `s` is a valid Prometheus metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

struct Parser<'a> {
    s: &'a str,
    /// Byte offset of the next unread character.
    i: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, reason: &str) -> SelectorError {
        SelectorError {
            selector: self.s.to_owned(),
            at: self.s[..self.i].chars().count() + 1,
            reason: reason.to_owned(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// A metric name (colons allowed) or a label name; empty if there is none here.
    fn ident(&mut self, colons: bool) -> &'a str {
        let start = self.i;
        while let Some(c) = self.peek() {
            let ok = c == b'_'
                || c.is_ascii_alphabetic()
                || (colons && c == b':')
                || (self.i > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A quoted label value, unescaped.
    fn quoted(&mut self) -> Result<Cow<'a, str>, SelectorError> {
        let Some(quote @ (b'"' | b'\'' | b'`')) = self.peek() else {
            return Err(self.error("expected a quoted label value"));
        };
        let open = self.i;
        self.i += 1;
        let start = self.i;
        let mut owned: Option<String> = None;
        loop {
            let rest = &self.s[self.i..];
            let Some(c) = rest.chars().next() else {
                self.i = open;
                return Err(self.error("label value has no closing quote"));
            };
            if c == char::from(quote) {
                let value = match owned {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(&self.s[start..self.i]),
                };
                self.i += 1;
                return Ok(value);
            }
            if c == '\\' && quote != b'`' {
                let buf = owned.get_or_insert_with(|| self.s[start..self.i].to_owned());
                let escape_at = self.i;
                self.i += 1;
                let Some(e) = self.s[self.i..].chars().next() else {
                    self.i = open;
                    return Err(self.error("label value has no closing quote"));
                };
                self.i += e.len_utf8();
                let unescaped = match e {
                    '\\' | '"' | '\'' => Some(e),
                    'n' => Some('\n'),
                    't' => Some('\t'),
                    'r' => Some('\r'),
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'v' => Some('\u{b}'),
                    'u' | 'U' => {
                        let len = if e == 'u' { 4 } else { 8 };
                        let hex = self.s.get(self.i..self.i + len);
                        self.i += len;
                        hex.and_then(|h| u32::from_str_radix(h, 16).ok())
                            .and_then(char::from_u32)
                    }
                    _ => None,
                };
                let Some(u) = unescaped else {
                    self.i = escape_at;
                    return Err(self.error(
                        "invalid escape (expected \\\\, \\\", \\', \\n, \\t, \\r or \\uXXXX)",
                    ));
                };
                buf.push(u);
                continue;
            }
            if let Some(buf) = owned.as_mut() {
                buf.push(c);
            }
            self.i += c.len_utf8();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn name_and_labels() {
        assert_eq!(
            parse_selector(r#"http_requests_total{job="api",code="500"}"#).unwrap(),
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("code", "500")
            ])
        );
        assert_eq!(
            parse_selector(r#" up { job = 'node' , } "#).unwrap(),
            labels(&[("__name__", "up"), ("job", "node")])
        );
        assert_eq!(
            parse_selector(r#"{job="x"}"#).unwrap(),
            labels(&[("job", "x")])
        );
        assert_eq!(
            parse_selector("job:http_errors:rate5m").unwrap(),
            labels(&[("__name__", "job:http_errors:rate5m")])
        );
        assert_eq!(
            parse_selector("up{}").unwrap(),
            labels(&[("__name__", "up")])
        );
        assert_eq!(
            parse_selector(r#"up{a=""}"#).unwrap(),
            labels(&[("__name__", "up")])
        );
    }

    #[test]
    fn escapes() {
        let l = parse_selector(r#"m{p="a\"b\\c\nd\u00e9", q=`raw\n`, r='it\'s'}"#).unwrap();
        assert_eq!(l.get("p"), Some("a\"b\\c\ndé"));
        assert_eq!(l.get("q"), Some("raw\\n"));
        assert_eq!(l.get("r"), Some("it's"));
        // Display escapes again, so a header round-trips.
        let again = parse_selector(&l.to_string()).unwrap();
        assert_eq!(again, l);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = |s: &str| parse_selector(s).unwrap_err().to_string();
        assert_eq!(
            e(r#"up{job=~"a.*"}"#),
            "selector \"up{job=~\\\"a.*\\\"}\": character 7: `=~` selects many series: only `=` \
             names one (expected job=\"value\")"
        );
        assert_eq!(
            e("up{job=api}"),
            "selector \"up{job=api}\": character 8: expected a quoted label value"
        );
        assert_eq!(
            e(r#"up{job="api""#),
            "selector \"up{job=\\\"api\\\"\": character 13: expected `,` or `}`"
        );
        assert_eq!(
            e(r#"up{job="api}"#),
            "selector \"up{job=\\\"api}\": character 8: label value has no closing quote"
        );
        assert_eq!(
            e(r#"up{job="a\qb"}"#),
            "selector \"up{job=\\\"a\\\\qb\\\"}\": character 10: invalid escape (expected \\\\, \
             \\\", \\', \\n, \\t, \\r or \\uXXXX)"
        );
        assert_eq!(
            e(r#"up{job="a",job="b"}"#),
            "selector \"up{job=\\\"a\\\",job=\\\"b\\\"}\": character 1: label name \"job\": given \
             more than once"
        );
        assert_eq!(
            e(r#"up{__name__="x"}"#),
            "selector \"up{__name__=\\\"x\\\"}\": character 1: label name \"__name__\": given \
             more than once"
        );
        assert_eq!(
            e("up job"),
            "selector \"up job\": character 4: unexpected text after the selector"
        );
        assert_eq!(
            e(""),
            "selector \"\": character 1: expected a metric name or `{`"
        );
        assert_eq!(
            e("up{1a=\"x\"}"),
            "selector \"up{1a=\\\"x\\\"}\": character 4: expected a label name or `}`"
        );
    }

    #[test]
    fn headers() {
        let h = |s: &str| header_labels(s).unwrap();
        assert_eq!(
            h("cpu_seconds_total"),
            labels(&[("__name__", "cpu_seconds_total")])
        );
        assert_eq!(h(" cpu "), labels(&[("__name__", "cpu")]));
        assert_eq!(h("cpu usage %"), labels(&[("series", "cpu usage %")]));
        assert_eq!(h("latency {ms}"), labels(&[("series", "latency {ms}")]));
        assert_eq!(h("my.metric"), labels(&[("series", "my.metric")]));
        assert_eq!(
            h(r#"up{job="a"}"#),
            labels(&[("__name__", "up"), ("job", "a")])
        );
        assert!(header_labels(r#"up{job=a}"#).is_err());
        assert!(header_labels(r#"{job!="a"}"#).is_err());
        assert_eq!(
            h(r#"up {job="a"}"#),
            labels(&[("__name__", "up"), ("job", "a")])
        );
    }
}
