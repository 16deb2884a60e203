//! The Prometheus text exposition format (0.0.4) of a cluster's current state.

use std::fmt::Write as _;

use portent_core::Labels;

use crate::Cluster;

/// Every metric family the simulator exposes: name, type, help.
pub const FAMILIES: [(&str, &str, &str); 10] = [
    (
        "node_cpu_seconds_total",
        "counter",
        "Seconds the CPUs spent in each mode.",
    ),
    (
        "node_memory_MemTotal_bytes",
        "gauge",
        "Memory information field MemTotal_bytes.",
    ),
    (
        "node_memory_MemAvailable_bytes",
        "gauge",
        "Memory information field MemAvailable_bytes.",
    ),
    ("kube_pod_info", "gauge", "Information about pod."),
    (
        "kube_pod_container_status_restarts_total",
        "counter",
        "The number of container restarts per container.",
    ),
    (
        "kube_pod_container_resource_limits",
        "gauge",
        "The number of requested limit resource by a container.",
    ),
    (
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
    ),
    (
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set in bytes.",
    ),
    (
        "http_requests_total",
        "counter",
        "Total HTTP requests by method and status code.",
    ),
    (
        "http_request_duration_seconds",
        "histogram",
        "HTTP request latencies in seconds.",
    ),
];

/// The index in [`FAMILIES`] of the family a series belongs to (`_bucket`, `_sum` and
/// `_count` belong to their histogram).
fn family(name: &str) -> usize {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|b| FAMILIES.iter().any(|f| f.0 == *b && f.1 == "histogram"))
        .unwrap_or(name);
    FAMILIES
        .iter()
        .position(|f| f.0 == base)
        .unwrap_or(FAMILIES.len())
}

fn write_sample(out: &mut String, labels: &Labels, value: f64) {
    out.push_str(labels.metric_name().unwrap_or("unnamed"));
    let mut first = true;
    for l in labels.iter().filter(|l| l.name != Labels::METRIC_NAME) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(l.name);
        out.push_str("=\"");
        for c in l.value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

impl Cluster {
    /// The current state in the Prometheus text format 0.0.4: each family once, with its
    /// `# HELP` and `# TYPE`, its samples together, no timestamps (the scraper stamps them).
    pub fn render_exposition(&self) -> String {
        let mut samples: Vec<(usize, &Labels, f64)> = Vec::new();
        self.visit(&mut |l, v| samples.push((family(l.metric_name().unwrap_or("")), l, v)));
        let mut out = String::with_capacity(samples.len() * 120);
        // Stable: within a family, series keep the cluster's order (a histogram's buckets,
        // then its _sum and _count).
        let mut ptrs: Vec<&(usize, &Labels, f64)> = samples.iter().collect();
        ptrs.sort_by_key(|s| s.0);
        let mut current = usize::MAX;
        for &&(f, labels, value) in &ptrs {
            if f != current {
                current = f;
                if let Some((name, kind, help)) = FAMILIES.get(f) {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                }
            }
            write_sample(&mut out, labels, value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_parts_belong_to_their_family() {
        assert_eq!(family("http_request_duration_seconds_bucket"), 9);
        assert_eq!(family("http_request_duration_seconds_count"), 9);
        assert_eq!(family("http_requests_total"), 8);
        assert_eq!(family("node_memory_MemAvailable_bytes"), 2);
    }

    #[test]
    fn samples_escape_values_and_omit_the_name_label() {
        let mut out = String::new();
        let l = Labels::new([("__name__", "m"), ("a", "x\"y"), ("b", "1")]).unwrap();
        write_sample(&mut out, &l, 2.5);
        assert_eq!(out, "m{a=\"x\\\"y\",b=\"1\"} 2.5\n");
        out.clear();
        write_sample(&mut out, &Labels::new([("__name__", "up")]).unwrap(), 1.0);
        assert_eq!(out, "up 1\n");
    }
}
