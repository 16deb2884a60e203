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
//!   same name (the usual Deployment/Service naming convention), so pods link to their service;
//! * a pod's series without a `node` label (application metrics: latency, errors) link to the
//!   node its other series (cAdvisor's, `kube_pod_info`) were last seen on ([`PodNodes`]) when
//!   the caller accepts it ([`TopologyConfig::place_with`]): the correlator does when an open
//!   incident holds that node's own series, so a noisy neighbour's victims join the node's
//!   incident while two pods that merely share a node stay apart.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use portent_core::{Labels, Timestamp};
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

/// `v`, unless it is empty: a label with an empty value is a missing label.
pub(crate) fn nonempty(v: Option<&str>) -> Option<&str> {
    v.filter(|v| !v.is_empty())
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

/// [`SAFE`] as a table: this runs for every verdict of a pod.
const IS_SAFE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < SAFE.len() {
        t[SAFE[i] as usize] = true;
        i += 1;
    }
    t
};

fn generated(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| IS_SAFE[usize::from(b)])
}

/// The workload a pod belongs to, from its name: `api-7d9f8-xk2p` → `api` (Deployment pods:
/// `<deployment>-<pod-template-hash>-<suffix>`). `None` when the name has no such tail
/// (StatefulSet pods, bare pods).
pub fn workload_of_pod(pod: &str) -> Option<&str> {
    replicaset_of_pod(pod).map(|(workload, _)| workload)
}

/// The workload and the ReplicaSet a Deployment pod belongs to, from its name:
/// `api-7d9f8-xk2p` → (`api`, `api-7d9f8`). `None` as for [`workload_of_pod`].
pub(crate) fn replicaset_of_pod(pod: &str) -> Option<(&str, &str)> {
    let (rest, suffix) = pod.rsplit_once('-')?;
    let (name, hash) = rest.rsplit_once('-')?;
    (!name.is_empty() && generated(suffix, 4..=5) && generated(hash, 5..=10))
        .then_some((name, rest))
}

/// The maps on every verdict's path, keyed by label values: hashed with foldhash as `Labels`
/// are (SipHash's resistance to chosen keys buys nothing against names the cluster chose).
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The most pods [`PodNodes`] remembers; beyond it, pods not seen for a day are forgotten.
const MAX_PODS: usize = 200_000;
/// How long a pod's node is remembered once [`MAX_PODS`] is reached.
const POD_MEMORY_MS: i64 = 86_400_000;

/// Which node each pod was last seen on, learnt from series that carry both labels.
#[derive(Clone, Debug, Default)]
pub struct PodNodes {
    /// [`pod_key`] of namespace and pod → its node and when it was last seen. Every verdict
    /// looks its pod up here: keyed by the pod's name, a lookup compared that name with the
    /// key's own copy, elsewhere in memory, and at 100,000 pods the two cache misses made it
    /// a tenth of the daemon's CPU. Keyed by a 64-bit hash, the entry alone is read; two pods
    /// sharing a hash would share an entry, which among 200,000 pods happens about once in
    /// a billion clusters, and costs a misplaced pod.
    pods: Map<u64, Placed>,
    /// Node names, each once: a cluster has far fewer nodes than pods, and a pod's node is
    /// checked on every verdict. Comparing indices into a small table kept in cache, where
    /// comparing each pod's own copy of the name was a cache miss per verdict at 100,000 pods.
    nodes: Vec<Box<str>>,
    node_ids: Map<Box<str>, u32>,
}

/// The key of pod `pod` of namespace `ns` in [`PodNodes`]: a hash with a fixed seed, so that a
/// pod has the same key wherever it is computed.
fn pod_key(ns: &str, pod: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x706f_645f_6e6f_6465).hash_one((ns, pod))
}

#[derive(Clone, Copy, Debug)]
struct Placed {
    /// Index into [`PodNodes::nodes`].
    node: u32,
    seen: Timestamp,
}

impl PodNodes {
    /// Learns from one series' labels at `t`: a pod and a node label name where the pod runs.
    pub fn learn(&mut self, topology: &TopologyConfig, labels: &Labels, t: Timestamp) {
        let [pod, node, ns] = labels.get_many([&topology.pod, &topology.node, &topology.namespace]);
        self.place(pod, node, ns, t);
    }

    /// Learns that `pod` (of namespace `ns`) ran on `node` at `t`: [`Self::learn`] with the
    /// labels' values already read. Empty values count as missing.
    pub(crate) fn place(
        &mut self,
        pod: Option<&str>,
        node: Option<&str>,
        ns: Option<&str>,
        t: Timestamp,
    ) {
        let (Some(pod), Some(node)) = (nonempty(pod), nonempty(node)) else {
            return;
        };
        let ns = nonempty(ns).unwrap_or("");
        let node = self.node_id(node);
        match self.pods.entry(pod_key(ns, pod)) {
            Entry::Occupied(mut o) => {
                let placed = o.get_mut();
                placed.node = node;
                placed.seen = placed.seen.max(t);
            }
            Entry::Vacant(v) => {
                v.insert(Placed { node, seen: t });
                if self.pods.len() > MAX_PODS {
                    self.forget_before(t.add_millis(-POD_MEMORY_MS));
                }
            }
        }
    }

    /// The index of node `name` in [`Self::nodes`], added if new.
    fn node_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.node_ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        self.nodes.push(name.into());
        self.node_ids.insert(name.into(), id);
        id
    }

    fn forget_before(&mut self, cutoff: Timestamp) {
        self.pods.retain(|_, placed| placed.seen >= cutoff);
        // Nodes no pod remembered runs on go too: renumber those left.
        let mut renumbered: Map<u32, u32> = Map::default();
        let mut nodes = Vec::new();
        for placed in self.pods.values_mut() {
            placed.node = *renumbered.entry(placed.node).or_insert_with(|| {
                let name = usize::try_from(placed.node)
                    .ok()
                    .and_then(|i| self.nodes.get_mut(i))
                    .map(std::mem::take)
                    .unwrap_or_default();
                nodes.push(name);
                u32::try_from(nodes.len() - 1).unwrap_or(u32::MAX)
            });
        }
        self.node_ids = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        self.nodes = nodes;
    }

    /// The node pod `pod` of namespace `ns` was last seen on.
    pub fn node(&self, ns: &str, pod: &str) -> Option<&str> {
        let placed = self.pods.get(&pod_key(ns, pod))?;
        self.nodes
            .get(usize::try_from(placed.node).ok()?)
            .map(|n| &**n)
    }

    /// How many pods are remembered.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

impl TopologyConfig {
    /// Places a series as [`TopologyConfig::place`] does, and links a pod's series that names
    /// no node to the node `pods` last saw the pod on, if `accept` takes that node.
    pub fn place_with(
        &self,
        labels: &Labels,
        pods: &PodNodes,
        accept: impl Fn(&str) -> bool,
    ) -> Placement {
        let mut place = self.place(labels);
        let get = |k: &str| labels.get(k).filter(|v| !v.is_empty());
        if get(&self.node).is_none()
            && let Some(pod) = get(&self.pod)
            && let Some(node) = pods.node(get(&self.namespace).unwrap_or(""), pod)
            && accept(node)
        {
            place.keys.insert(TopoKey(format!("node/{node}")));
        }
        place
    }

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
    fn pods_are_placed_on_the_node_they_were_last_seen_on_and_old_ones_forgotten() {
        let t = TopologyConfig::default();
        let l = |pairs: &[(&str, &str)]| Labels::new(pairs.iter().copied()).unwrap();
        let mut pods = PodNodes::default();
        let at = Timestamp::from_millis;
        // Labels without a node teach nothing.
        pods.learn(&t, &l(&[("namespace", "shop"), ("pod", "api-1")]), at(0));
        assert!(pods.is_empty());
        pods.learn(
            &t,
            &l(&[("namespace", "shop"), ("pod", "api-1"), ("node", "n1")]),
            at(0),
        );
        pods.learn(
            &t,
            &l(&[("namespace", "shop"), ("pod", "api-1"), ("node", "n2")]),
            at(5),
        );
        pods.learn(
            &t,
            &l(&[("namespace", "ops"), ("pod", "api-1"), ("node", "n3")]),
            at(9),
        );
        assert_eq!(pods.len(), 2);
        assert_eq!(pods.node("shop", "api-1"), Some("n2"));
        assert_eq!(pods.node("ops", "api-1"), Some("n3"));
        assert_eq!(pods.node("shop", "other"), None);

        let latency = l(&[("namespace", "shop"), ("pod", "api-1")]);
        let node_key = TopoKey("node/n2".into());
        assert!(
            t.place_with(&latency, &pods, |_| true)
                .keys
                .contains(&node_key)
        );
        assert!(
            !t.place_with(&latency, &pods, |_| false)
                .keys
                .contains(&node_key)
        );
        // A series with its own node label keeps it.
        let cpu = l(&[("namespace", "shop"), ("pod", "api-1"), ("node", "n9")]);
        assert!(!t.place_with(&cpu, &pods, |_| true).keys.contains(&node_key));

        pods.forget_before(at(6));
        assert_eq!(pods.len(), 1);
        assert_eq!(pods.node("shop", "api-1"), None);
        // The nodes left are renumbered, and still named right.
        assert_eq!(pods.node("ops", "api-1"), Some("n3"));
        assert_eq!(pods.nodes.len(), 1);
        pods.learn(
            &t,
            &l(&[("namespace", "shop"), ("pod", "api-2"), ("node", "n1")]),
            at(10),
        );
        assert_eq!(pods.node("shop", "api-2"), Some("n1"));
        assert_eq!(pods.node("ops", "api-1"), Some("n3"));
    }

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
