//! Grouping anomalies into incidents, and the incidents' lifecycle.
//!
//! The [`Correlator`] is fed anomalies in time order and told the time with
//! [`Correlator::advance`]; it never reads a clock, so live operation and replays (and tests
//! with a fake clock) run the same code.
//!
//! **Grouping.** An anomaly joins an open (pending or firing) incident when both hold:
//! * time: the incident's latest anomaly is at most [`CorrelatorConfig::gap`] before it;
//! * topology: the anomaly's [`TopoKey`]s intersect the incident's (see [`crate::topology`]).
//!
//! If it matches several incidents they merge into the oldest (their members keep their
//! evidence IDs in the survivor, the others' are renumbered after them). If none, it opens a new
//! incident whose [`IncidentId`] hashes the first anomaly's series fingerprint, query, model and
//! onset, so a replay of the same data yields the same IDs.
//!
//! **Sustained deviation.** portent's detectors score a change once, at its onset, and then
//! adapt to it: a memory leak or an error ratio that stays up after a bad rollout gives one high
//! score and then ordinary ones while the problem goes on. So each member remembers the band it
//! was expected in when it first went wrong (the pre-incident normal) and on which side it left
//! it; every later verdict of that series below the threshold still outside that band, on that
//! side, keeps the incident *active* ([`Incident::active_until`]) up to
//! [`CorrelatorConfig::sustain`] after the incident started. An active incident does not resolve,
//! and a later anomaly that shares a pod, workload, service or node with a member still outside
//! its band (not only a namespace, and not a member long back to normal) joins it: the leaking
//! pod's latency an hour after its memory, its OOM kill ten hours later.
//!
//! **Flapping.** An anomaly of a series that was a member of an incident resolved at most
//! [`CorrelatorConfig::reopen_within`] before, or of the same pod, workload or service as one
//! of its members when it resolved at most twice [`CorrelatorConfig::gap`] before, reopens that
//! incident (firing again at once, as the same alert would) instead of opening a new one or
//! joining an open incident it shares only a namespace with: a series that breaks its
//! hour-of-day range every hour is one incident, not one an hour, and so is a slow problem the
//! detectors flag again hours later, or on a sibling pod minutes after the first went quiet.
//!
//! **Rollouts.** Every verdict handed to [`Correlator::learn`] also teaches [`Rollouts`] what
//! each Deployment's ReplicaSets' pods show. When a young incident's member moved on a kind of
//! query (errors, latency, …) on which a ReplicaSet of its workload that appeared shortly
//! before is off, against the ReplicaSet it replaced, that ReplicaSet joins the incident as a
//! member of model [`ROLLOUT_MODEL`] (see [`crate::rollout`]): the new pods of a bad rollout
//! never alarm on their own, having no history.
//!
//! **Lifecycle** (Prometheus' alert states): an incident is *pending* from its first anomaly;
//! *firing* once it has stayed open for [`CorrelatorConfig::hold`] (an anomaly at least `hold`
//! after the onset, or the clock reaching `onset + hold` before the incident went quiet);
//! *resolved* once neither an anomaly arrived nor a member stayed outside its band for
//! [`CorrelatorConfig::resolve_after`]; dropped
//! [`CorrelatorConfig::retention`] after resolving. "Open" is the condition of portent's own
//! alerting rule, `max_over_time(score[window]) >= threshold` held `for`: true for a window after
//! any anomaly, so a lone onset score pages after the hold, as the rule's alert does (portent's
//! detectors give a change one high score at its onset, not one per sample). A pending incident
//! that goes quiet before its hold is dropped without ever firing, as Prometheus drops a pending
//! alert ([`Counters::pending_expired`]).
//!
//! **Bounds.** At most [`CorrelatorConfig::max_open`] open incidents (an anomaly that would open
//! one more is refused and counted), at most [`CorrelatorConfig::max_members`] series per
//! incident (further series are counted on the incident), at most
//! [`CorrelatorConfig::max_resolved`] resolved incidents kept (the oldest go first).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::time::Duration;

use portent_core::{Labels, LabelsHash, Reason, Score, Scored, Timestamp};
use serde::{Deserialize, Serialize};

use crate::rollout::{ROLLOUT_MODEL, Rollouts, Suspect};
use crate::topology::{Level, Placement, PodNodes, TopoKey, TopologyConfig};

/// One anomalous sample of one series, as the scheduler reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// The input series' labels.
    pub labels: Labels,
    /// The query alias that produced the series.
    pub query: String,
    /// The model alias that scored it.
    pub model: String,
    /// The verdict: time, value, score, expected value and band, reason.
    pub scored: Scored,
}

impl Anomaly {
    /// How far the value is from the expected value, in half-band widths: 1 at the band's edge.
    ///
    /// `|value − yhat| / ((yhat_upper − yhat_lower) / 2)`, the width floored at a millionth of
    /// `|yhat|` (and at 1e-12) so a zero-width band does not divide by zero; 0 when the model
    /// expected nothing (NaN `yhat`).
    pub fn deviation(&self) -> f64 {
        deviation(&self.scored)
    }
}

pub(crate) fn deviation(s: &Scored) -> f64 {
    if !(s.value.is_finite() && s.yhat.is_finite()) {
        return 0.0;
    }
    let half = if s.yhat_upper.is_finite() && s.yhat_lower.is_finite() {
        (s.yhat_upper - s.yhat_lower) / 2.0
    } else {
        0.0
    };
    let floor = (s.yhat.abs() * 1e-6).max(1e-12);
    (s.value - s.yhat).abs() / half.max(floor)
}

/// An incident's stable name: `inc-` and 16 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub String);

impl IncidentId {
    /// The ID of an incident whose first anomaly is `a`: FNV-1a over the series fingerprint,
    /// query, model and onset in milliseconds.
    pub fn of(a: &Anomaly) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes.iter().chain([0xff].iter()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(&a.labels.fingerprint().to_le_bytes());
        eat(a.query.as_bytes());
        eat(a.model.as_bytes());
        eat(&a.scored.t.millis().to_le_bytes());
        Self(format!("inc-{h:016x}"))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an incident is in its lifecycle.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Anomalous, not yet for long enough to page.
    Pending,
    /// Anomalous for at least the hold: pages.
    Firing,
    /// Quiet for `resolve_after`; kept for the retention.
    Resolved,
}

impl State {
    /// The name used in outputs.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One series taking part in an incident, with its evidence ID.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// `e1`, `e2`, …: the order in which series joined the incident.
    pub evidence_id: String,
    /// The series.
    pub labels: Labels,
    /// Its query alias.
    pub query: String,
    /// Its model alias.
    pub model: String,
    /// Where it sits in the topology.
    pub level: Level,
    /// Its workload, given or derived from the pod name.
    pub workload: Option<String>,
    /// Its first anomalous sample in this incident.
    pub onset: Timestamp,
    /// Its latest anomalous sample.
    pub last: Timestamp,
    /// How many anomalous samples it had.
    pub count: u64,
    /// The sample that deviated most (by [`Anomaly::deviation`]).
    pub peak: Scored,
    /// Its highest score.
    pub max_score: Score,
    /// The band it was expected in when it first went wrong, and the side it left it on: later
    /// values beyond that edge are still the problem ([`Correlator`]'s sustained deviation).
    /// `None` when the model expected nothing then.
    pub onset_band: Option<OnsetBand>,
    /// The latest verdict still outside `onset_band` (below the threshold or not).
    pub deviating_at: Option<Timestamp>,
    pub(crate) keys: BTreeSet<TopoKey>,
}

/// A member's pre-incident normal: the edge of the band its value left at its first anomaly.
/// A later value beyond that edge is still outside what was expected before the incident.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct OnsetBand {
    /// The value a later one must pass to still count as the problem.
    pub edge: f64,
    /// Whether the problem was above the expectation (else below).
    pub above: bool,
}

impl OnsetBand {
    fn of(s: &Scored) -> Option<Self> {
        let finite = s.value.is_finite()
            && s.yhat.is_finite()
            && s.yhat_lower.is_finite()
            && s.yhat_upper.is_finite();
        if !finite {
            return None;
        }
        // Only a value that left its band: a drift or a volatility change flagged while the
        // value was still inside it has no edge that later values could stay beyond, and the
        // onset value itself is a poor one (on a daily cycle the values pass it every morning).
        if s.value > s.yhat_upper {
            Some(Self {
                edge: s.yhat_upper,
                above: true,
            })
        } else if s.value < s.yhat_lower {
            Some(Self {
                edge: s.yhat_lower,
                above: false,
            })
        } else {
            None
        }
    }

    /// Whether `value` is still beyond the edge.
    pub fn outside(&self, value: f64) -> bool {
        if self.above {
            value >= self.edge
        } else {
            value <= self.edge
        }
    }
}

impl Member {
    /// The peak sample's deviation in half-band widths.
    pub fn deviation(&self) -> f64 {
        deviation(&self.peak)
    }

    /// Whether its peak was above the expectation; `None` when either is unknown or they are
    /// equal.
    pub(crate) fn rose(&self) -> Option<bool> {
        let p = &self.peak;
        (p.value.is_finite() && p.yhat.is_finite() && p.value != p.yhat).then_some(p.value > p.yhat)
    }

    /// The objects this series touches.
    pub fn keys(&self) -> &BTreeSet<TopoKey> {
        &self.keys
    }

    fn same_series(&self, a: &Anomaly) -> bool {
        self.labels == a.labels && self.query == a.query && self.model == a.model
    }

    fn series_key(&self) -> u64 {
        series_key(&self.labels, &self.query, &self.model)
    }
}

/// A group of anomalies that are one problem.
#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    /// Its stable ID.
    pub id: IncidentId,
    /// Its state.
    pub state: State,
    /// The first anomaly's time.
    pub started_at: Timestamp,
    /// When it began firing.
    pub fired_at: Option<Timestamp>,
    /// When it resolved.
    pub resolved_at: Option<Timestamp>,
    /// The latest anomaly's time.
    pub last_anomaly_at: Timestamp,
    /// The latest time a member was still outside its onset band, capped at
    /// `started_at + sustain` (see the module docs); never before `last_anomaly_at`.
    pub active_until: Timestamp,
    /// The series involved, in the order they joined (at most `max_members`).
    pub members: Vec<Member>,
    /// Series that would have joined beyond `max_members`.
    pub dropped_members: u64,
    /// The IDs of the incidents merged into this one: links to them (an alert, a Slack
    /// message) still find it.
    pub absorbed: Vec<IncidentId>,
    next_evidence: u64,
    keys: BTreeSet<TopoKey>,
}

impl Incident {
    /// The member with evidence ID `id`.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.evidence_id == id)
    }

    /// Whether it is pending or firing.
    pub fn is_open(&self) -> bool {
        self.state != State::Resolved
    }

    fn new(a: &Anomaly, place: Placement) -> Self {
        let mut inc = Self {
            id: IncidentId::of(a),
            state: State::Pending,
            started_at: a.scored.t,
            fired_at: None,
            resolved_at: None,
            last_anomaly_at: a.scored.t,
            active_until: a.scored.t,
            members: Vec::new(),
            dropped_members: 0,
            absorbed: Vec::new(),
            next_evidence: 1,
            keys: BTreeSet::new(),
        };
        inc.add(a, place, usize::MAX);
        inc
    }

    /// Adds `a`; returns whether a new series was refused by the cap.
    fn add(&mut self, a: &Anomaly, place: Placement, max_members: usize) -> bool {
        self.last_anomaly_at = self.last_anomaly_at.max(a.scored.t);
        self.active_until = self.active_until.max(self.last_anomaly_at);
        if let Some(m) = self.members.iter_mut().find(|m| m.same_series(a)) {
            m.last = m.last.max(a.scored.t);
            if m.onset_band.is_some_and(|b| b.outside(a.scored.value)) {
                m.deviating_at = Some(a.scored.t);
            }
            m.count += 1;
            if a.deviation() > m.deviation() {
                m.peak = a.scored;
            }
            if a.scored.score > m.max_score {
                m.max_score = a.scored.score;
            }
            return false;
        }
        if self.members.len() >= max_members {
            self.dropped_members += 1;
            return true;
        }
        self.keys.extend(place.keys.iter().cloned());
        self.members.push(Member {
            evidence_id: format!("e{}", self.next_evidence),
            labels: a.labels.clone(),
            query: a.query.clone(),
            model: a.model.clone(),
            level: place.level,
            workload: place.workload,
            onset: a.scored.t,
            last: a.scored.t,
            count: 1,
            peak: a.scored,
            max_score: a.scored.score,
            onset_band: OnsetBand::of(&a.scored),
            deviating_at: OnsetBand::of(&a.scored).map(|_| a.scored.t),
            keys: place.keys,
        });
        self.next_evidence += 1;
        false
    }

    /// Takes in `other`'s members; returns how many the cap refused.
    fn absorb(&mut self, other: Incident, max_members: usize) -> u64 {
        let mut refused = 0;
        self.started_at = self.started_at.min(other.started_at);
        self.last_anomaly_at = self.last_anomaly_at.max(other.last_anomaly_at);
        self.active_until = self.active_until.max(other.active_until);
        self.dropped_members += other.dropped_members;
        self.absorbed.push(other.id);
        self.absorbed.extend(other.absorbed);
        if self.fired_at.is_none() {
            self.fired_at = other.fired_at;
        }
        if other.state == State::Firing {
            self.state = State::Firing;
        }
        for mut m in other.members {
            if self.members.len() >= max_members {
                self.dropped_members += 1;
                refused += 1;
                continue;
            }
            m.evidence_id = format!("e{}", self.next_evidence);
            self.next_evidence += 1;
            self.keys.extend(m.keys.iter().cloned());
            self.members.push(m);
        }
        refused
    }
}

/// How anomalies are grouped and how long incidents live. All defaults are here.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrelatorConfig {
    /// Which labels carry topology.
    pub topology: TopologyConfig,
    /// Anomalies below this score are ignored (default [`Score::ALERT`], 0.8).
    pub min_score: Score,
    /// The longest quiet stretch that still counts as overlapping in time (default 10 min).
    pub gap: Duration,
    /// How long an incident must stay open before it fires (default 2 min; 0 fires at once).
    pub hold: Duration,
    /// How long without anomalies before it resolves (default 10 min).
    pub resolve_after: Duration,
    /// How long after an incident started members still outside their onset band can keep it
    /// active (default 4 h; 0 turns sustained deviation off). Anomalies keep it open longer.
    pub sustain: Duration,
    /// How long after resolving an incident is reopened by another anomaly of one of its series
    /// (default 3 h; 0 never reopens). Within twice [`CorrelatorConfig::gap`] of resolving, an
    /// anomaly of the same pod, workload or service reopens it too: on the simulator, a latency
    /// creep flagged again on a sibling pod 15 minutes after its incident resolved (seed 21);
    /// an hour made unrelated blips the top candidate of two scenarios.
    pub reopen_within: Duration,
    /// How long a resolved incident is kept (default 24 h).
    pub retention: Duration,
    /// The most open incidents (default 1000).
    pub max_open: usize,
    /// The most series per incident (default 200).
    pub max_members: usize,
    /// The most resolved incidents kept (default 1000).
    pub max_resolved: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        Self {
            topology: TopologyConfig::default(),
            min_score: Score::ALERT,
            gap: Duration::from_secs(600),
            hold: Duration::from_secs(120),
            resolve_after: Duration::from_secs(600),
            sustain: Duration::from_secs(4 * 3600),
            reopen_within: Duration::from_secs(3 * 3600),
            retention: Duration::from_secs(24 * 3600),
            max_open: 1000,
            max_members: 200,
            max_resolved: 1000,
        }
    }
}

/// What the correlator had to leave out, for self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Anomalies taken in.
    pub anomalies: u64,
    /// Anomalies below `min_score`.
    pub below_threshold: u64,
    /// Of those, verdicts of a member still outside its onset band, that kept it active.
    pub sustained: u64,
    /// Anomalies refused because `max_open` incidents were open.
    pub refused_open_cap: u64,
    /// Series refused because their incident had `max_members`.
    pub refused_member_cap: u64,
    /// Merges of two incidents into one.
    pub merges: u64,
    /// Resolved incidents reopened by another anomaly of one of their series.
    pub reopened: u64,
    /// Suspect rollouts added to incidents (see [`crate::rollout`]).
    pub rollouts: u64,
    /// Pending incidents that went quiet before the hold.
    pub pending_expired: u64,
    /// Resolved incidents dropped after the retention or by `max_resolved`.
    pub dropped_resolved: u64,
}

/// How long after an incident starts its members are checked against rollouts on every step.
const ROLLOUT_RECHECK_MS: i64 = 15 * 60_000;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Default for Correlator {
    fn default() -> Self {
        Self::new(CorrelatorConfig::default())
    }
}

/// How often a series' placement needs refreshing, in minutes of its verdicts' time, for a
/// caller of [`Correlator::learn`] that does not place every verdict: often enough that
/// [`PodNodes`], which forgets pods unseen for a day once full, never forgets a live one.
pub const PLACE_EVERY: i64 = 64;

/// Whether a verdict of the series of `labels` at `t` is one whose placement a caller of
/// [`Correlator::learn`] should refresh: one minute in [`PLACE_EVERY`], staggered by the labels'
/// hash so that each minute refreshes a 64th of the series, whatever the scoring step.
pub fn place_due(labels: &Labels, t: Timestamp) -> bool {
    use std::hash::BuildHasher;
    let minute = t.millis().div_euclid(60_000);
    let h = portent_core::LabelsHash.hash_one(labels);
    h.wrapping_add(minute as u64)
        .is_multiple_of(PLACE_EVERY as u64)
}

/// Groups anomalies into incidents; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Correlator {
    config: CorrelatorConfig,
    incidents: Vec<Incident>,
    counters: Counters,
    now: Timestamp,
    /// [`series_key`] of every member of an open incident, so a verdict below the threshold
    /// (almost all of them) is dismissed with one lookup; rebuilt when `members_dirty`.
    open_members: Members,
    members_dirty: bool,
    /// Where each pod runs, from every verdict seen (see [`PodNodes`]).
    pods: PodNodes,
    /// Each workload's ReplicaSets and their pods' values (see [`Rollouts`]).
    rollouts: Rollouts,
    /// The hashes of series that name no Deployment pod (see [`Correlator::learn`]).
    not_rollout: HashSet<u64, foldhash::fast::RandomState>,
}

/// The most series [`Correlator::learn`] remembers as naming no Deployment pod; past it the
/// memory starts over (series that ended leave their hash behind).
const NOT_ROLLOUT_MAX: usize = 1 << 21;

/// A hash of a series' identity (labels, query, model) for [`Correlator::open_members`]; a
/// collision only costs a scan of the open incidents. The labels contribute the hash they
/// carry, not a fresh pass over every pair: this runs for every verdict while an incident is
/// open.
fn series_key(labels: &Labels, query: &str, model: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // foldhash, not SipHash: the daemon asks this of nearly every verdict while an incident
    // is open (no untrusted input chooses these keys to collide), and SipHash over the labels'
    // cached hash and two aliases was a percent and a half of its CPU at 100,000 series.
    let mut h = foldhash::fast::FixedState::with_seed(0).build_hasher();
    labels.hash(&mut h);
    query.hash(&mut h);
    model.hash(&mut h);
    h.finish()
}

/// The series that are members of an open incident ([`Correlator::open_members`]). Of the
/// verdicts below their threshold, only theirs can keep an incident active, and a daemon with
/// many series offers [`Correlator::observe_normal`] those alone: every verdict of every step
/// while any incident was open, each copied into an [`Anomaly`] first, cost the daemon a
/// tenth of its CPU at 100,000 series.
#[derive(Clone, Debug, Default)]
pub struct OpenMembers(Members);

/// Keys that are already hashes ([`series_key`]).
type Members = HashSet<u64, foldhash::fast::RandomState>;

impl OpenMembers {
    /// Whether the series of `labels`, read by query `query` and scored by model `model`, is a
    /// member of an open incident (or, rarely, shares its hash with one).
    pub fn contains(&self, labels: &Labels, query: &str, model: &str) -> bool {
        self.0.contains(&series_key(labels, query, model))
    }
}

/// Whether two key sets share a pod, workload, service or node: a closer link than a namespace.
fn closely_linked(a: &BTreeSet<TopoKey>, b: &BTreeSet<TopoKey>) -> bool {
    shares(a, b, &["node/", "pod/", "workload/", "service/", "series/"])
}

/// Whether two key sets share a pod, workload or service: one application's problem. Not a
/// node, which many unrelated workloads share.
fn same_workload(a: &BTreeSet<TopoKey>, b: &BTreeSet<TopoKey>) -> bool {
    shares(a, b, &["pod/", "workload/", "service/", "series/"])
}

fn shares(a: &BTreeSet<TopoKey>, b: &BTreeSet<TopoKey>, kinds: &[&str]) -> bool {
    a.intersection(b)
        .any(|k| kinds.iter().any(|p| k.0.starts_with(p)))
}

impl Correlator {
    /// A correlator with no incidents.
    pub fn new(config: CorrelatorConfig) -> Self {
        Self {
            config,
            incidents: Vec::new(),
            counters: Counters::default(),
            now: Timestamp::from_millis(i64::MIN),
            open_members: Members::default(),
            members_dirty: false,
            pods: PodNodes::default(),
            rollouts: Rollouts::default(),
            not_rollout: HashSet::default(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &CorrelatorConfig {
        &self.config
    }

    /// The incidents kept, oldest onset first.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// The incident called `id`, or the one it was merged into.
    pub fn incident(&self, id: &IncidentId) -> Option<&Incident> {
        self.incidents
            .iter()
            .find(|i| &i.id == id)
            .or_else(|| self.incidents.iter().find(|i| i.absorbed.contains(id)))
    }

    /// What was left out so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Takes in one anomaly (in time order) and returns the incident it joined, if any.
    /// Also advances the clock to the anomaly's time.
    pub fn observe(&mut self, a: &Anomaly) -> Option<IncidentId> {
        self.counters.anomalies += 1;
        self.advance(a.scored.t);
        self.pods
            .learn(&self.config.topology, &a.labels, a.scored.t);
        if a.scored.score < self.config.min_score {
            self.counters.below_threshold += 1;
            return self.sustain(a);
        }
        self.members_dirty = true;
        let t = a.scored.t;
        let gap = millis(self.config.gap);
        // A pod's application series joins its node's incident only when the node itself is
        // anomalous in it: sharing a node alone is too weak a link between two pods.
        let incidents = &self.incidents;
        let place = self
            .config
            .topology
            .place_with(&a.labels, &self.pods, |node| {
                let key = TopoKey(format!("node/{node}"));
                incidents.iter().any(|i| {
                    i.is_open()
                        && i.members
                            .iter()
                            .any(|m| m.level == Level::Node && m.keys.contains(&key))
                })
            });
        let keys = &place.keys;
        let mut matching: Vec<usize> = self
            .incidents
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.is_open()
                    && i.keys.intersection(keys).next().is_some()
                    && (t.millis_since(i.last_anomaly_at) <= gap
                        || (t.millis_since(i.active_until) <= gap
                            && i.members.iter().any(|m| {
                                m.deviating_at.is_some_and(|d| t.millis_since(d) <= gap)
                                    && closely_linked(&m.keys, keys)
                            })))
            })
            .map(|(n, _)| n)
            .collect();
        // A recently resolved incident of the same problem is reopened (the problem did not
        // end) unless an open incident is as closely linked: an open one that shares only the
        // namespace is another problem, and a link that weak must not win over the series' own.
        if !matching
            .iter()
            .any(|&n| closely_linked(&self.incidents[n].keys, keys))
            && let Some(n) = self.reopenable(a, keys)
        {
            matching = vec![n];
        }
        let target = match matching.split_first() {
            None => {
                let open = self.incidents.iter().filter(|i| i.is_open()).count();
                if open >= self.config.max_open {
                    self.counters.refused_open_cap += 1;
                    return None;
                }
                self.incidents.push(Incident::new(a, place));
                self.incidents.len() - 1
            }
            Some((&first, rest)) => {
                // Merge later matches into the oldest, highest index first so indices hold.
                for &n in rest.iter().rev() {
                    let other = self.incidents.remove(n);
                    self.counters.refused_member_cap +=
                        self.incidents[first].absorb(other, self.config.max_members);
                    self.counters.merges += 1;
                }
                let inc = &mut self.incidents[first];
                if inc.state == State::Resolved {
                    inc.state = State::Firing;
                    inc.resolved_at = None;
                    inc.active_until = inc.active_until.max(t);
                    self.counters.reopened += 1;
                }
                if inc.add(a, place, self.config.max_members) {
                    self.counters.refused_member_cap += 1;
                }
                first
            }
        };
        self.blame_rollouts(target);
        let hold = millis(self.config.hold);
        let inc = &mut self.incidents[target];
        if inc.state == State::Pending && t.millis_since(inc.started_at) >= hold {
            inc.state = State::Firing;
            inc.fired_at = Some(t);
        }
        Some(inc.id.clone())
    }

    /// The most recently resolved incident that `a` reopens (see the module docs).
    fn reopenable(&self, a: &Anomaly, keys: &BTreeSet<TopoKey>) -> Option<usize> {
        let within = millis(self.config.reopen_within);
        if within == 0 {
            return None;
        }
        let t = a.scored.t;
        let gap = millis(self.config.gap);
        self.incidents
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.state == State::Resolved
                    && i.resolved_at.is_some_and(|r| {
                        let since = t.millis_since(r);
                        since <= within
                            && i.members.iter().any(|m| {
                                m.same_series(a)
                                    || (since <= 2 * gap && same_workload(&m.keys, keys))
                            })
                    })
            })
            .max_by_key(|(_, i)| i.resolved_at)
            .map(|(n, _)| n)
    }

    /// Whether [`Correlator::observe_normal`] can matter now: some incident is open and
    /// sustained deviation is on. Callers with many verdicts skip them when it is false.
    pub fn wants_normal(&self) -> bool {
        !self.config.sustain.is_zero() && self.incidents.iter().any(Incident::is_open)
    }

    /// The members of the open incidents whose verdicts below their threshold
    /// [`Correlator::observe_normal`] can use; `None` when none can (no incident is open, or
    /// sustained deviation is off).
    pub fn open_members(&mut self) -> Option<OpenMembers> {
        if !self.wants_normal() {
            return None;
        }
        self.refresh_open_members();
        Some(OpenMembers(self.open_members.clone()))
    }

    fn refresh_open_members(&mut self) {
        if self.members_dirty {
            self.open_members = self
                .incidents
                .iter()
                .filter(|i| i.is_open())
                .flat_map(|i| i.members.iter().map(Member::series_key))
                .collect();
            self.members_dirty = false;
        }
    }

    /// Takes in a verdict that is not an anomaly (below its model's threshold, which the caller
    /// applied): if its series is a member of an open incident and still outside its onset
    /// band, the incident stays active (see the module docs) and its ID is returned. Also
    /// advances the clock to the verdict's time.
    pub fn observe_normal(&mut self, a: &Anomaly) -> Option<IncidentId> {
        self.advance(a.scored.t);
        self.pods
            .learn(&self.config.topology, &a.labels, a.scored.t);
        self.sustain(a)
    }

    /// Learns from one verdict of query `query` (every verdict, anomalous or not, once each;
    /// the hub passes them all): where its pod runs ([`PodNodes`]) and, for a Deployment
    /// pod's series, its ReplicaSet's values ([`Rollouts`]), so a rollout that made a service
    /// go wrong can be named. [`Correlator::observe`] learns placement too, but not values.
    ///
    /// `place`: whether to learn (or refresh) the pod's placement from this verdict. A series'
    /// labels never change, so a caller that knows it has placed the series recently (the
    /// daemon: on its first verdict, then on one minute in [`PLACE_EVERY`]) passes `false`
    /// for the others and saves a lookup in a table of every pod.
    ///
    /// A series that names no Deployment pod (no `pod` label: a service's or a node's series;
    /// or a StatefulSet's pod) teaches the rollouts nothing, now or later. Its hash is
    /// remembered and its later verdicts return before reading its labels: reading them (the
    /// label text, which nothing else in a score tick touches) was a tenth of the daemon's
    /// CPU at 100,000 such series. Two series sharing a 64-bit hash would cost a Deployment
    /// pod's values, about once in a billion clusters.
    pub fn learn(&mut self, labels: &Labels, query: &str, t: Timestamp, value: f64, place: bool) {
        let key = LabelsHash.hash_one(labels);
        if !place && self.not_rollout.contains(&key) {
            return;
        }
        let topology = &self.config.topology;
        // One pass over the labels for both.
        let [pod, node, ns, name] = labels.get_many([
            &topology.pod,
            &topology.node,
            &topology.namespace,
            Labels::METRIC_NAME,
        ]);
        if place {
            self.pods.place(pod, node, ns, t);
        }
        if !self
            .rollouts
            .learn_read(labels, pod, ns, name, query, t, value)
        {
            if self.not_rollout.len() >= NOT_ROLLOUT_MAX {
                self.not_rollout.clear();
            }
            self.not_rollout.insert(key);
        }
    }

    /// Adds to incident `target` the rollouts that best explain its members (see
    /// [`crate::rollout`]), at most one per workload: a member of model [`ROLLOUT_MODEL`]
    /// standing for the new ReplicaSet, at the time it appeared, with its pods' mean as the
    /// value and the previous ReplicaSet's as the expectation. Run when an anomaly joins and on
    /// every step while the incident is young, since the new pods may have too few values
    /// when the first symptom arrives.
    fn blame_rollouts(&mut self, target: usize) {
        if self.rollouts.is_empty() {
            return;
        }
        let inc = &self.incidents[target];
        let blamed = |w: &str, ns: &str| {
            inc.members.iter().any(|m| {
                m.model == ROLLOUT_MODEL
                    && m.workload.as_deref() == Some(w)
                    && m.labels.get(&self.config.topology.namespace).unwrap_or("") == ns
            })
        };
        let mut found = Vec::new();
        for m in inc.members.iter().filter(|m| m.model != ROLLOUT_MODEL) {
            let Some(above) = m.rose() else {
                continue;
            };
            let name = m.labels.metric_name().unwrap_or_default();
            let suspect = m
                .keys
                .iter()
                .filter_map(|k| k.0.strip_prefix("workload/")?.split_once('/'))
                .filter(|(ns, w)| !blamed(w, ns))
                .filter_map(|(ns, w)| self.rollouts.suspect(ns, w, name, &m.query, m.onset, above))
                .max_by_key(|x| x.since);
            if let Some(s) = suspect
                && !found.iter().any(|f: &Suspect| f.replicaset == s.replicaset)
            {
                found.push(s);
            }
        }
        for suspect in found {
            let (yhat_lower, yhat_upper) = suspect.previous_band();
            let standing = Anomaly {
                labels: suspect.example,
                query: suspect.query,
                model: ROLLOUT_MODEL.to_owned(),
                scored: Scored {
                    t: suspect.since,
                    value: suspect.value,
                    score: Score::ALERT,
                    yhat: suspect.previous,
                    yhat_lower,
                    yhat_upper,
                    reason: Some(Reason::LevelShift),
                },
            };
            let place = self.config.topology.place(&standing.labels);
            let inc = &mut self.incidents[target];
            if inc.add(&standing, place, self.config.max_members) {
                self.counters.refused_member_cap += 1;
            } else {
                self.counters.rollouts += 1;
                self.members_dirty = true;
            }
        }
    }

    fn sustain(&mut self, a: &Anomaly) -> Option<IncidentId> {
        if self.config.sustain.is_zero() {
            return None;
        }
        self.refresh_open_members();
        if self.open_members.is_empty() {
            return None;
        }
        if !self
            .open_members
            .contains(&series_key(&a.labels, &a.query, &a.model))
        {
            return None;
        }
        let t = a.scored.t;
        let sustain = millis(self.config.sustain);
        let inc = self
            .incidents
            .iter_mut()
            .find(|i| i.is_open() && i.members.iter().any(|m| m.same_series(a)))?;
        let m = inc.members.iter_mut().find(|m| m.same_series(a))?;
        if !m.onset_band.is_some_and(|b| b.outside(a.scored.value)) {
            return None;
        }
        m.deviating_at = Some(m.deviating_at.map_or(t, |d| d.max(t)));
        let cap = inc.started_at.add_millis(sustain);
        inc.active_until = inc.active_until.max(t.min(cap));
        self.counters.sustained += 1;
        Some(inc.id.clone())
    }

    /// Moves the clock to `now`: resolves quiet incidents, drops expired ones. Time never goes
    /// back; an earlier `now` is ignored.
    pub fn advance(&mut self, now: Timestamp) {
        if now <= self.now {
            return;
        }
        self.now = now;
        let quiet = millis(self.config.resolve_after);
        let retention = millis(self.config.retention);
        let hold = millis(self.config.hold);
        let mut expired = 0;
        for inc in &mut self.incidents {
            // Open for the hold (it was still open when the hold ran out): firing, even if it
            // went quiet since and resolves below.
            let due = inc.started_at.add_millis(hold);
            if inc.state == State::Pending
                && now >= due
                && due.millis_since(inc.active_until) < quiet
            {
                inc.state = State::Firing;
                inc.fired_at = Some(due);
            }
            if inc.is_open() && now.millis_since(inc.active_until) >= quiet {
                if inc.state == State::Pending {
                    expired += 1;
                }
                self.members_dirty = true;
                inc.state = State::Resolved;
                // When it went quiet for long enough, which a clock that jumped passed by.
                inc.resolved_at = Some(inc.active_until.add_millis(quiet).min(now));
            }
        }
        // A young incident's rollout may show only once the new pods have a few values.
        for n in 0..self.incidents.len() {
            let inc = &self.incidents[n];
            if inc.is_open() && now.millis_since(inc.started_at) <= ROLLOUT_RECHECK_MS {
                self.blame_rollouts(n);
            }
        }
        let before = self.incidents.len();
        // Pending ones that went quiet never fired: gone, as Prometheus drops a pending alert.
        self.incidents
            .retain(|i| i.state != State::Resolved || i.fired_at.is_some());
        self.counters.pending_expired += expired;
        debug_assert_eq!(before - self.incidents.len(), expired as usize);
        let before = self.incidents.len();
        self.incidents.retain(|i| {
            i.resolved_at
                .is_none_or(|r| now.millis_since(r) < retention)
        });
        let mut resolved: Vec<(Timestamp, usize)> = self
            .incidents
            .iter()
            .enumerate()
            .filter_map(|(n, i)| i.resolved_at.map(|r| (r, n)))
            .collect();
        if resolved.len() > self.config.max_resolved {
            resolved.sort();
            let cut: BTreeSet<usize> = resolved[..resolved.len() - self.config.max_resolved]
                .iter()
                .map(|&(_, n)| n)
                .collect();
            let mut n = 0;
            self.incidents.retain(|_| {
                let keep = !cut.contains(&n);
                n += 1;
                keep
            });
        }
        self.counters.dropped_resolved += (before - self.incidents.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn learn_remembers_the_series_that_name_no_deployment_pod() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let l = |pairs: &[(&str, &str)]| Labels::new(pairs.iter().copied()).unwrap();
        let service = l(&[("__name__", "error_ratio"), ("service", "api")]);
        let stateful = l(&[("__name__", "cpu"), ("pod", "db-0"), ("node", "n1")]);
        let deployment = l(&[("__name__", "cpu"), ("pod", "api-7d9f8-xk2pq")]);
        for m in 0..3 {
            let t = Timestamp::from_millis(m * 60_000);
            for s in [&service, &stateful, &deployment] {
                c.learn(s, "q", t, 1.0, m == 0);
            }
        }
        let remembered = |s: &Labels| c.not_rollout.contains(&LabelsHash.hash_one(s));
        assert!(remembered(&service) && remembered(&stateful));
        assert!(!remembered(&deployment));
        assert_eq!(c.rollouts.len(), 1);
        // Placement still reads the labels of a remembered series when asked to.
        c.learn(
            &l(&[("__name__", "cpu"), ("pod", "db-0"), ("node", "n2")]),
            "q",
            Timestamp::from_millis(240_000),
            1.0,
            true,
        );
        assert_eq!(c.pods.node("", "db-0"), Some("n2"));
    }
}
