//! PromQL checks: every `expr` must parse and give something a range query can return.
//!
//! promql-parser (0.11) reports a message without a position. Where the message allows it,
//! the position is recovered here: an unclosed bracket or quote is located by scanning, and
//! a lexer error by finding the shortest prefix of the expression that fails the same way.
//! Grammar errors ("invalid promql query") carry no position.

use promql_parser::parser::{self, value::ValueType};

/// Why an expression was rejected, and where in it when known.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PromqlError {
    /// 1-based line and column (in characters) within the expression.
    pub(crate) position: Option<(usize, usize)>,
    pub(crate) message: String,
    /// False when the expression parsed but gives the wrong type.
    pub(crate) parse: bool,
}

impl PromqlError {
    /// `PromQL parse error at column 6: unclosed left parenthesis`; the line only when the
    /// expression has several.
    pub(crate) fn render(&self, multiline: bool) -> String {
        if !self.parse {
            return format!("PromQL: {}", self.message);
        }
        match self.position {
            Some((line, column)) if multiline => format!(
                "PromQL parse error at line {line}, column {column}: {}",
                self.message
            ),
            Some((_, column)) => {
                format!("PromQL parse error at column {column}: {}", self.message)
            }
            None => format!("PromQL parse error: {}", self.message),
        }
    }
}

/// Parses `expr` and checks that a range query can evaluate it.
pub(crate) fn check(expr: &str) -> Result<(), PromqlError> {
    match parser::parse(expr) {
        Ok(parsed) => match parsed.value_type() {
            ValueType::Vector | ValueType::Scalar => Ok(()),
            other => Err(PromqlError {
                position: None,
                parse: false,
                message: format!(
                    "the expression gives a {}, but a range query needs an instant vector or \
                     a scalar{}",
                    describe(other),
                    if other == ValueType::Matrix {
                        " (wrap the range in a function such as rate())"
                    } else {
                        ""
                    }
                ),
            }),
        },
        Err(message) => Err(PromqlError {
            position: locate(expr, &message).map(|offset| line_column(expr, offset)),
            message,
            parse: true,
        }),
    }
}

/// Checks that `expr` (which already passed [`check`]) is a plain vector selector, as push
/// queries must be: pushed series are matched by their labels, nothing is evaluated.
pub(crate) fn check_selector(expr: &str) -> Result<(), String> {
    let what = match parser::parse(expr) {
        Ok(parser::Expr::VectorSelector(vs)) if vs.offset.is_none() && vs.at.is_none() => {
            return Ok(());
        }
        Ok(parser::Expr::VectorSelector(_)) => "a selector with offset or @",
        Ok(parser::Expr::Paren(_)) => "a parenthesised expression",
        Ok(parser::Expr::Call(_)) => "a function call",
        Ok(parser::Expr::Aggregate(_)) => "an aggregation",
        Ok(parser::Expr::Binary(_)) => "a binary expression",
        Ok(parser::Expr::NumberLiteral(_)) => "a number",
        Ok(_) => "not a plain selector",
        Err(e) => return Err(format!("PromQL parse error: {e}")),
    };
    Err(format!(
        "a push query must be a plain series selector such as http_requests_total{{job=\"api\"}} \
         (matchers =, !=, =~, !~): pushed samples are matched by their labels, not evaluated; \
         this is {what} (compute it in a Prometheus recording rule and push its result)"
    ))
}

fn describe(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

/// Lexer messages reported at the end of the input for something opened earlier: the opener
/// is the useful position.
const UNCLOSED: [&str; 5] = [
    "unclosed left parenthesis",
    "unexpected end of input inside braces",
    "unexpected end of input inside brackets",
    "unterminated quoted string",
    "escape sequence not terminated",
];

/// Longest expression whose lexer errors are located (a few milliseconds at worst).
const MAX_LOCATE_LEN: usize = 4096;

/// The byte offset in `expr` that `message` is about, if it can be told.
fn locate(expr: &str, message: &str) -> Option<usize> {
    if UNCLOSED.iter().any(|m| message.starts_with(m)) {
        return innermost_unclosed(expr);
    }
    // Grammar and type errors come from the parser proper, which keeps no positions. The
    // prefix search below is quadratic: spare a reload the cost on a monstrous expression.
    if expr.len() > MAX_LOCATE_LEN || parser::lexer(expr).err().as_deref() != Some(message) {
        return None;
    }
    // The lexer reads left to right and fails as soon as it sees the offending character, so
    // the shortest prefix that fails with the same message ends there.
    let end = expr
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .find(|&end| parser::lexer(&expr[..end]).err().as_deref() == Some(message))?;
    // "bad number or duration syntax: 5x" names the token; point at its start.
    if let Some((_, token)) = message.split_once(": ")
        && let Some(start) = expr[..end].rfind(token.trim_matches('\''))
    {
        return Some(start);
    }
    expr[..end].char_indices().last().map(|(i, _)| i)
}

/// Byte offset of the innermost bracket or quote still open at the end of `expr`.
fn innermost_unclosed(expr: &str) -> Option<usize> {
    let mut open: Vec<(usize, char)> = Vec::new();
    let mut chars = expr.char_indices();
    while let Some((i, c)) = chars.next() {
        let in_string = matches!(open.last(), Some((_, '"' | '\'' | '`')));
        match c {
            _ if in_string => {
                if open.last().is_some_and(|&(_, q)| q == c) {
                    open.pop();
                } else if c == '\\' && open.last().is_some_and(|&(_, q)| q != '`') {
                    chars.next();
                }
            }
            '#' => {
                // A comment runs to the end of the line.
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '(' | '{' | '[' | '"' | '\'' | '`' => open.push((i, c)),
            ')' | '}' | ']' => {
                open.pop();
            }
            _ => {}
        }
    }
    open.last().map(|&(i, _)| i)
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(expr: &str, offset: usize) -> (usize, usize) {
    let before = &expr[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(expr: &str) -> String {
        check(expr).unwrap_err().render(expr.contains('\n'))
    }

    #[test]
    fn valid_expressions_pass() {
        for e in [
            "up",
            "rate(node_cpu_seconds_total{mode!=\"idle\"}[5m])",
            "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
            "sum(rate(http_requests_total{code=~\"5..\"}[5m])) / sum(rate(http_requests_total[5m]))",
            "1 + 1",
            "# comment\nup",
        ] {
            assert_eq!(check(e), Ok(()), "{e}");
        }
    }

    #[test]
    fn errors_point_at_the_cause() {
        assert_eq!(
            err("sum(rate(x[5m])"),
            "PromQL parse error at column 4: unclosed left parenthesis"
        );
        assert_eq!(
            err("up{job=\"api\""),
            "PromQL parse error at column 3: unexpected end of input inside braces"
        );
        assert_eq!(
            err("rate(x[5x])"),
            "PromQL parse error at column 8: bad number or duration syntax: 5x"
        );
        assert_eq!(
            err("up{job=\"a\")"),
            "PromQL parse error at column 11: unexpected character inside braces: ')'"
        );
        assert_eq!(
            err("sum(up))"),
            "PromQL parse error at column 8: unexpected right parenthesis ')'"
        );
        assert_eq!(
            err("up + $x"),
            "PromQL parse error at column 6: unexpected character: '$'"
        );
        assert_eq!(
            err("sum(up)\n  / on(\n"),
            "PromQL parse error at line 2, column 7: unclosed left parenthesis"
        );
        assert_eq!(err("foo bar"), "PromQL parse error: invalid promql query");
        assert_eq!(
            err("up[5m]"),
            "PromQL: the expression gives a range vector, but a range query needs \
             an instant vector or a scalar (wrap the range in a function such as rate())"
        );
        assert_eq!(
            err("\"text\""),
            "PromQL: the expression gives a string, but a range query needs an \
             instant vector or a scalar"
        );
    }

    #[test]
    fn unclosed_skips_quoted_brackets() {
        assert_eq!(innermost_unclosed("up{a=\"(\"}"), None);
        assert_eq!(innermost_unclosed("f(up{a=\"x\\\"(\"}"), Some(1));
        assert_eq!(innermost_unclosed("f(\"abc"), Some(2));
    }
}
