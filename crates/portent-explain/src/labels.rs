//! Reading series back from the Prometheus notation the evidence pack stores them in.

/// The label pairs of `metric{a="x", b="y"}` (the metric name as `__name__`), unescaping
/// values as the text exposition format escapes them. Malformed input yields what parsed
/// before the fault: the pack was written by portent, so this only guards against surprises.
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (name, rest) = match text.find('{') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    if !name.is_empty() {
        out.push(("__name__".to_owned(), name.to_owned()));
    }
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != '}')).collect();
        if chars.next() != Some('=') || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        let mut closed = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => {
                    closed = true;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            break;
        }
        out.push((key.trim().to_owned(), value));
    }
    out
}

/// Every series of `pack` in Prometheus notation: the detailed ones, then the brief ones, in
/// rank order.
pub fn all_series(pack: &portent_incidents::EvidencePack) -> impl Iterator<Item = &str> {
    pack.series
        .iter()
        .map(|s| s.series.as_str())
        .chain(pack.correlated.iter().map(|s| s.series.as_str()))
}

/// The value of label `name` in `text` (Prometheus notation).
pub fn get(text: &str, name: &str) -> Option<String> {
    parse(text)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_display_of_labels() {
        let l = portent_core::Labels::new([
            ("__name__", "up"),
            ("pod", "a\"b\\c\nd"),
            ("namespace", "shop"),
        ]);
        let Ok(l) = l else { panic!("labels") };
        let parsed = parse(&l.to_string());
        assert_eq!(
            parsed,
            vec![
                ("__name__".into(), "up".into()),
                ("namespace".into(), "shop".into()),
                ("pod".into(), "a\"b\\c\nd".into()),
            ]
        );
        assert_eq!(get("{node=\"n1\"}", "node").as_deref(), Some("n1"));
        assert_eq!(
            parse("x{a=\"unterminated"),
            vec![("__name__".into(), "x".into())]
        );
    }
}
