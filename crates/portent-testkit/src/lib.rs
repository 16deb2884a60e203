//! Helpers shared by the end-to-end tests of `portent`, `portent-prom` and `portent-incidents`,
//! which start real servers (Prometheus, Alertmanager, VictoriaMetrics, portent) on loopback,
//! and by the memory tests and push-path benchmarks of `portent-engine` and `portent-eval`,
//! which need many realistic series.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use portent_core::Labels;

/// The metric of [`cadvisor_labels`]' series: cAdvisor's CPU counter.
pub const CADVISOR_CPU: &str = "container_cpu_usage_seconds_total";

/// Series `i` of a synthetic cluster: eight labels as cAdvisor's CPU series carry, spread over
/// 40 namespaces, 7 zones and 250 nodes, with a pod of its own. Always a valid label set.
pub fn cadvisor_labels(i: usize) -> Labels {
    let pairs = [
        ("__name__", CADVISOR_CPU.to_owned()),
        ("namespace", format!("team-{}", i % 40)),
        ("pod", format!("checkout-7d9f8b6c4-{i:05x}")),
        ("container", "checkout".to_owned()),
        (
            "node",
            format!("ip-10-0-{}-{}.ec2.internal", i % 7, i % 250),
        ),
        ("instance", format!("10.0.{}.{}:10250", i % 7, i % 250)),
        ("job", "kubelet".to_owned()),
        ("service", "checkout".to_owned()),
    ];
    Labels::new(pairs).unwrap_or_default()
}

/// The first port [`free_port`] hands out, and how many it cycles through: below Linux's
/// ephemeral range (32768–60999 by default).
const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;

/// A loopback port nothing listens on, for a server a test is about to start.
///
/// Outside the ephemeral range, where the kernel picks the local port of every outgoing
/// connection: a port taken from `bind(0)` and released could be a scrape's or a
/// remote_write's local port by the time the server binds it (CI saw "Address already in
/// use" that way). A process-wide counter never hands out one twice; each test process starts
/// at its own offset.
///
/// # Panics
/// When no port of the span can be bound.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 400) * 30;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(FIRST + (offset + n) % SPAN) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(
            ports.iter().all(|&p| (20_000..32_000).contains(&p)),
            "{ports:?}"
        );
    }
}
