//! Reversible pseudonymisation of the names an incident mentions.
//!
//! Before a prompt leaves the process, namespaces, pods, nodes, workloads, services, hosts and
//! IPv4 addresses are replaced by stable aliases (`ns1`, `pod1`, `node1`, `wl1`, `svc1`,
//! `host1`, and documentation addresses such as `192.0.2.1` for IPs, so the model still reads
//! them as what they are). The model's answer is mapped back before anyone sees it.
//!
//! Replacement is a single left-to-right pass that, at each word boundary, takes the longest
//! known name: a pod `api-7d9f8-xk2p` is replaced whole before its workload `api` could match
//! inside it, and an alias just written is never rewritten. Words are runs of ASCII letters,
//! digits and `_`, so `api` in `rapid` is left alone while `api` in `api-7d9f8` is not. Names
//! shaped like evidence IDs (`e1`, `k2`) are left as they are so citations stay intact.

use std::collections::BTreeMap;

use portent_incidents::EvidencePack;

/// The kinds of names replaced, each with its alias prefix.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A namespace (`ns1`).
    Namespace,
    /// A pod (`pod1`).
    Pod,
    /// A node (`node1`).
    Node,
    /// A workload (`wl1`).
    Workload,
    /// A service (`svc1`).
    Service,
    /// A host, e.g. from an `instance` label without its port (`host1`).
    Host,
    /// An IPv4 address (`192.0.2.1`, …).
    Ip,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Namespace => "ns",
            Kind::Pod => "pod",
            Kind::Node => "node",
            Kind::Workload => "wl",
            Kind::Service => "svc",
            Kind::Host => "host",
            Kind::Ip => "ip",
        }
    }
}

/// Label names whose values are hosts.
const HOST_LABELS: [&str; 4] = ["instance", "host", "hostname", "exported_instance"];

/// A two-way name map; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Pseudonymiser {
    forward: BTreeMap<String, String>,
    backward: BTreeMap<String, String>,
    counts: BTreeMap<Kind, usize>,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// An IPv4 address starting at byte `i` of `s` (at a word boundary), as its byte length.
fn ipv4_at(s: &str, i: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut j = i;
    for octet in 0..4 {
        let start = j;
        while j < b.len() && b[j].is_ascii_digit() && j - start < 3 {
            j += 1;
        }
        if j == start || s[start..j].parse::<u16>().ok()? > 255 {
            return None;
        }
        if octet < 3 {
            if b.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
    }
    // Not followed by more of a word or another dotted number (a version like 1.2.3.4.5).
    match s[j..].chars().next() {
        Some(c) if is_word(c) => None,
        Some('.') if s[j + 1..].starts_with(|c: char| c.is_ascii_digit()) => None,
        _ => Some(j - i),
    }
}

/// Whether `name` could be an evidence ID (`e1`, `k2`, `l3`, `s4`): such a name is left as it
/// is, because replacing it would rewrite the IDs the answer must cite, and a letter and a
/// number identify nothing.
fn looks_like_id(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| "ekls".contains(f)) && name.len() > 1 && c.all(|d| d.is_ascii_digit())
}

impl Pseudonymiser {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of every name in `pack`: its scope, its origin, the label values of its series
    /// and whatever IPv4 addresses appear anywhere in it, including events and logs.
    pub fn for_pack(pack: &EvidencePack) -> Self {
        let mut p = Self::new();
        p.learn_pack(pack);
        p
    }

    /// Adds every name in `pack` (see [`Pseudonymiser::for_pack`]).
    pub fn learn_pack(&mut self, pack: &EvidencePack) {
        let s = &pack.scope;
        for (kind, names) in [
            (Kind::Namespace, &s.namespaces),
            (Kind::Pod, &s.pods),
            (Kind::Node, &s.nodes),
            (Kind::Workload, &s.workloads),
            (Kind::Service, &s.services),
        ] {
            for n in names {
                self.add(kind, n);
            }
        }
        let series = crate::labels::all_series(pack);
        for text in series {
            for (k, v) in crate::labels::parse(text) {
                self.learn_label(&k, &v);
            }
        }
        for (k, v) in &pack.incident.origin {
            self.learn_label(k, v);
        }
        for v in pack.kubernetes_events.iter().chain(pack.logs.iter()) {
            if let Some(obj) = v.as_object() {
                for (k, v) in obj {
                    if let Some(v) = v.as_str() {
                        self.learn_label(k, v);
                    }
                }
            }
        }
        self.learn_ips(&pack.to_json());
    }

    /// Adds `value` when label `name` holds a name of a kind this map replaces.
    pub fn learn_label(&mut self, name: &str, value: &str) {
        let kind = match name {
            "namespace" | "exported_namespace" => Kind::Namespace,
            "pod" | "pod_name" | "exported_pod" => Kind::Pod,
            "node" | "kubernetes_node" | "nodename" => Kind::Node,
            "deployment" | "statefulset" | "daemonset" | "workload" => Kind::Workload,
            "service" => Kind::Service,
            n if HOST_LABELS.contains(&n) => {
                // `10.0.0.5:9100` or `db-1.internal:9100`: the host without its port.
                let host = value.rsplit_once(':').map_or(value, |(h, _)| h);
                if ipv4_at(host, 0) == Some(host.len()) {
                    self.add(Kind::Ip, host);
                } else {
                    self.add(Kind::Host, host);
                }
                return;
            }
            _ => return,
        };
        self.add(kind, value);
    }

    /// Adds every IPv4 address in `text`.
    pub fn learn_ips(&mut self, text: &str) {
        let mut prev_word = false;
        for (i, c) in text.char_indices() {
            if !prev_word
                && c.is_ascii_digit()
                && let Some(n) = ipv4_at(text, i)
            {
                self.add(Kind::Ip, &text[i..i + n]);
            }
            prev_word = is_word(c) || c == '.';
        }
    }

    /// Adds `name` of `kind`; its alias is the next free one. Empty names and names already
    /// known keep what they have.
    pub fn add(&mut self, kind: Kind, name: &str) {
        if name.is_empty() || self.forward.contains_key(name) || looks_like_id(name) {
            return;
        }
        let n = self.counts.entry(kind).or_insert(0);
        *n += 1;
        let alias = match kind {
            // Documentation ranges (RFC 5737): they read as addresses and route nowhere.
            Kind::Ip => match *n {
                k @ 1..=254 => format!("192.0.2.{k}"),
                k @ 255..=508 => format!("198.51.100.{}", k - 254),
                k @ 509..=762 => format!("203.0.113.{}", k - 508),
                k => format!("ip{k}"),
            },
            _ => format!("{}{n}", kind.prefix()),
        };
        self.backward.insert(alias.clone(), name.to_owned());
        self.forward.insert(name.to_owned(), alias);
    }

    /// How many names are mapped.
    pub fn len(&self) -> usize {
        self.forward.len()
    }

    /// Whether no name is mapped.
    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }

    /// The alias of `name`, if it is mapped.
    pub fn alias(&self, name: &str) -> Option<&str> {
        self.forward.get(name).map(String::as_str)
    }

    /// `text` with every known name replaced by its alias.
    pub fn apply(&self, text: &str) -> String {
        replace(text, &self.forward)
    }

    /// `text` with every alias replaced by the name it stands for.
    pub fn restore(&self, text: &str) -> String {
        replace(text, &self.backward)
    }
}

/// One pass over `text`: at each word boundary the longest key of `map` that ends at a word
/// boundary is replaced by its value.
fn replace(text: &str, map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return text.to_owned();
    }
    // Keys by first byte, longest first, so each position tries few candidates.
    let mut by_first: BTreeMap<u8, Vec<(&str, &str)>> = BTreeMap::new();
    for (k, v) in map {
        if let Some(&b) = k.as_bytes().first() {
            by_first.entry(b).or_default().push((k, v));
        }
    }
    for v in by_first.values_mut() {
        v.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut prev: Option<char> = None;
    while i < text.len() {
        let rest = &text[i..];
        let at_boundary = !prev.is_some_and(is_word);
        let hit = at_boundary
            .then(|| by_first.get(&rest.as_bytes()[0]))
            .flatten()
            .and_then(|cands| {
                cands
                    .iter()
                    .find(|(k, _)| rest.starts_with(k) && !rest[k.len()..].starts_with(is_word))
            });
        if let Some((k, v)) = hit {
            out.push_str(v);
            i += k.len();
            prev = k.chars().last();
        } else {
            let Some(c) = rest.chars().next() else { break };
            out.push(c);
            i += c.len_utf8();
            prev = Some(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pseudonymiser {
        let mut p = Pseudonymiser::new();
        p.add(Kind::Namespace, "payments");
        p.add(Kind::Workload, "api");
        p.add(Kind::Pod, "api-7d9f8-xk2p");
        p.add(Kind::Node, "ip-10-1-2-3.ec2.internal");
        p.learn_label("instance", "10.1.2.3:9100");
        p.learn_label("instance", "db-1.internal:9187");
        p
    }

    #[test]
    fn round_trips_and_prefers_the_longest_name() {
        let p = sample();
        let text = "pod api-7d9f8-xk2p (workload api) in payments on ip-10-1-2-3.ec2.internal \
                    talks to 10.1.2.3:9100 and db-1.internal; rapid api_x apis";
        let hidden = p.apply(text);
        assert_eq!(
            hidden,
            "pod pod1 (workload wl1) in ns1 on node1 talks to 192.0.2.1:9100 and host1; \
             rapid api_x apis"
        );
        assert_eq!(p.restore(&hidden), text);
    }

    #[test]
    fn finds_ips_in_free_text_but_not_versions() {
        let mut p = Pseudonymiser::new();
        p.learn_ips("conn to 10.0.0.7 refused; v1.2.3.4.5 and 300.1.1.1 and 10.0.0.77x");
        assert_eq!(p.len(), 1);
        assert_eq!(p.alias("10.0.0.7"), Some("192.0.2.1"));
        assert_eq!(p.apply("from 10.0.0.7."), "from 192.0.2.1.");
    }

    #[test]
    fn evidence_ids_are_never_rewritten() {
        let mut p = Pseudonymiser::new();
        p.add(Kind::Node, "e1");
        p.add(Kind::Node, "e1a");
        assert_eq!(p.apply("[e1] on e1a"), "[e1] on node1");
    }

    #[test]
    fn aliases_are_stable_and_unique() {
        let mut p = Pseudonymiser::new();
        for i in 0..12 {
            p.add(Kind::Pod, &format!("p-{i}"));
        }
        p.add(Kind::Pod, "p-3");
        assert_eq!(p.len(), 12);
        assert_eq!(p.alias("p-0"), Some("pod1"));
        assert_eq!(p.alias("p-11"), Some("pod12"));
        // `pod1` is not a prefix match inside `pod12`.
        assert_eq!(p.restore("pod12 pod1"), "p-11 p-0");
    }
}
