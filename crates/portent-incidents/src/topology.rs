//! Topology: which Kubernetes objects a series describes, and how they link.
//!
//! A series is placed at one [`Level`] (the most specific object its labels name) and yields a
//! set of [`TopoKey`]s. Two anomalies share topology when their key sets intersect. Keys are
//! namespaced where Kubernetes namespaces the object, so `service="api"` in `shop` and in
//! `billing` are different objects.
//!
//! Derived links:
//! * a pod named `api-7d9f8-xk2p` belongs to the workload `api` (the ReplicaSet's
//!   pod-template hash and the pod suffix are stripped, see [`workload_of_pod`]);
//! * a pod's series carrying `node="n1"` links to node `n1`'s series;
//! * with [`TopologyConfig::service_is_workload`], a `service` label names the workload of the
//!   same name (the usual Deployment/Service naming convention), so pods link to their service.

use std::collections::BTreeSet;
use std::fmt;

use portent_core::Labels;
use serde::{Deserialize, Serialize};

/// The label keys that carry topology. Defaults follow Kubernetes and kube-state-metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyConfig {
    /// The namespace label (`namespace`).
    pub namespace: String,
    /// The service label (`service`).
    pub service: String,
    /// The workload label (`deployment`).
    pub deployment: String,
    /// The pod label (`pod`).
    pub pod: String,
    /// The node label (`node`).
    pub node: String,
    /// Whether anomalies that share only a namespace (no closer object) belong together.
    /// On by default, as the issue asks; turn it off for busy namespaces.
    pub group_by_namespace: bool,
    /// Whether a `service` label also names the workload of the same name.
    pub service_is_workload: bool,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            namespace: "namespace".into(),
            service: "service".into(),
            deployment: "deployment".into(),
            pod: "pod".into(),
            node: "node".into(),
            group_by_namespace: true,
            service_is_workload: true,
        }
    }
}

/// Where a series sits in the dependency chain `node → pod → workload → service → namespace`.
///
/// Lower levels are upstream: a node's trouble reaches its pods, a pod's its service.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// A node-level series (a `node` label and no pod).
    Node,
    /// A pod-level series.
    Pod,
    /// A workload (Deployment) series with no pod.
    Workload,
    /// A service-level series (a `service` label, no pod, no workload).
    Service,
    /// Only a namespace.
    Namespace,
    /// No topology labels at all.
    Other,
}

impl Level {
    /// The name used in packs and texts.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Node => "node",
            Level::Pod => "pod",
            Level::Workload => "workload",
            Level::Service => "service",
            Level::Namespace => "namespace",
            Level::Other => "other",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Kubernetes object a series touches, e.g. `pod/shop/api-7d9f8-xk2p` or `node/n1`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TopoKey(pub String);

/// A series placed in the topology: its level and the objects it touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The most specific object the series describes.
    pub level: Level,
    /// Every object it touches (always at least the series itself).
    pub keys: BTreeSet<TopoKey>,
    /// The workload name, given or derived from the pod name.
    pub workload: Option<String>,
}

/// The characters Kubernetes uses for generated names (`k8s.io/apimachinery` `rand.String`):
/// no vowels, no `0 1 3`, so words never collide with a hash.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| SAFE.contains(&b))
}

/// The workload a pod belongs to, from its name: `api-7d9f8-xk2p` → `api` (Deployment pods:
/// `<deployment>-<pod-template-hash>-<suffix>`). `None` when the name has no such tail
/// (StatefulSet pods, bare pods).
pub fn workload_of_pod(pod: &str) -> Option<&str> {
    let (rest, suffix) = pod.rsplit_once('-')?;
    let (name, hash) = rest.rsplit_once('-')?;
    (!name.is_empty() && generated(suffix, 4..=5) && generated(hash, 5..=10)).then_some(name)
}

impl TopologyConfig {
    /// Places a series: its level, its keys, its workload.
    pub fn place(&self, labels: &Labels) -> Placement {
        let get = |k: &str| labels.get(k).filter(|v| !v.is_empty());
        let ns = get(&self.namespace);
        let nsq = ns.unwrap_or("");
        let pod = get(&self.pod);
        let node = get(&self.node);
        let service = get(&self.service);
        let workload = get(&self.deployment)
            .or_else(|| pod.and_then(workload_of_pod))
            .map(str::to_owned);
        let mut keys = BTreeSet::new();
        keys.insert(TopoKey(format!("series/{:016x}", labels.fingerprint())));
        if let Some(p) = pod {
            keys.insert(TopoKey(format!("pod/{nsq}/{p}")));
        }
        if let Some(n) = node {
            keys.insert(TopoKey(format!("node/{n}")));
        }
        if let Some(w) = &workload {
            keys.insert(TopoKey(format!("workload/{nsq}/{w}")));
        }
        if let Some(s) = service {
            keys.insert(TopoKey(format!("service/{nsq}/{s}")));
            if self.service_is_workload {
                keys.insert(TopoKey(format!("workload/{nsq}/{s}")));
            }
        }
        if let Some(n) = ns
            && self.group_by_namespace
        {
            keys.insert(TopoKey(format!("namespace/{n}")));
        }
        let level = if pod.is_some() {
            Level::Pod
        } else if get(&self.deployment).is_some() {
            Level::Workload
        } else if service.is_some() {
            Level::Service
        } else if node.is_some() {
            Level::Node
        } else if ns.is_some() {
            Level::Namespace
        } else {
            Level::Other
        };
        Placement {
            level,
            keys,
            workload,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deployment_pods_strip_hash_and_suffix() {
        assert_eq!(workload_of_pod("api-7d9f8-xk2p"), Some("api"));
        assert_eq!(workload_of_pod("my-api-5c6b7d8f9-2x4zq"), Some("my-api"));
        // StatefulSet and words are left alone.
        assert_eq!(workload_of_pod("web-0"), None);
        assert_eq!(workload_of_pod("api-canary-stable"), None);
        assert_eq!(workload_of_pod("-7d9f8-xk2p"), None);
    }

    #[test]
    fn a_pod_links_to_its_node_and_workload_and_service() {
        let t = TopologyConfig::default();
        let pod = t.place(
            &Labels::new([
                ("namespace", "shop"),
                ("pod", "api-7d9f8-xk2p"),
                ("node", "n1"),
            ])
            .unwrap(),
        );
        assert_eq!(pod.level, Level::Pod);
        assert_eq!(pod.workload.as_deref(), Some("api"));
        let node = t.place(&Labels::new([("node", "n1"), ("__name__", "cpu")]).unwrap());
        assert_eq!(node.level, Level::Node);
        assert!(pod.keys.intersection(&node.keys).next().is_some());
        let svc = t.place(&Labels::new([("namespace", "shop"), ("service", "api")]).unwrap());
        assert_eq!(svc.level, Level::Service);
        assert!(
            pod.keys.contains(&TopoKey("workload/shop/api".into()))
                && svc.keys.contains(&TopoKey("workload/shop/api".into()))
        );
        let other = t.place(&Labels::new([("namespace", "billing"), ("service", "api")]).unwrap());
        assert!(other.keys.intersection(&svc.keys).next().is_none());
    }
}
