//! Operator feedback: "this was a false positive" or "this was real", persisted crash-safely.
//!
//! A verdict names an incident or one anomaly and carries who, when and an optional note. A
//! false positive yields, for each series involved, a **training exclusion** (the series and
//! the time window of its anomalies, [`FeedbackStore::exclusions`]) and a **threshold raise**
//! ([`FeedbackStore::threshold_raise`]); a confirmed one is kept as a labelled example
//! ([`FeedbackStore::confirmed`]). Callers (the scheduler, the trainers) apply them.
//!
//! **Threshold rule.** Each false positive on a series adds [`ThresholdRule::step`] (0.05) to
//! its alerting threshold, decaying with a half-life of [`ThresholdRule::half_life`] (7 days):
//! `raise(now) = min(cap, Σ step · 2^(−age / half_life))` over that series' false positives,
//! `cap` = [`ThresholdRule::cap`] (0.15). So one mistake nudges, repeated ones add up to the
//! cap, and a series that stops misbehaving drifts back to the default within a few weeks.
//! The raise is recomputed from the stored verdicts, so there is no second state to drift.
//!
//! **Persistence.** One JSON file `{"version": 1, "entries": [...]}`, rewritten on every change
//! by writing `<file>.tmp`, `fsync`ing it, renaming it over the file and `fsync`ing the
//! directory. A crash at any point leaves either the old or the new file whole; a leftover
//! `.tmp` is ignored. A file that does not parse is an error, never silently replaced.
//!
//! **Silences.** Active Alertmanager silences with `alertname="PortentIncident"` and an
//! `incident="…"` matcher are taken as a false positive on that incident, by the silence's
//! author, with its comment as the note ([`FeedbackStore::apply_silences`]); each silence
//! counts once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portent_core::{Labels, Timestamp};
use serde::{Deserialize, Serialize};

use crate::correlate::{Incident, IncidentId};
use crate::notify::Silence;

/// The file format's version.
pub const FEEDBACK_VERSION: u32 = 1;

/// Feedback could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// Reading or writing the file failed.
    #[error("feedback: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid feedback JSON.
    #[error("feedback: {path}: not valid feedback ({message}); fix or move the file")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file was written by a newer portent.
    #[error(
        "feedback: {path}: format version {found} is newer than this build's {FEEDBACK_VERSION}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// No incident with that ID is known.
    #[error("feedback: no incident {0}")]
    UnknownIncident(String),
}

/// The operator's verdict.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not a problem: keep it out of training, raise the threshold.
    FalsePositive,
    /// A real problem: keep it as a labelled example.
    Confirmed,
}

/// One series over a time window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesWindow {
    /// The series.
    pub labels: Labels,
    /// Its query alias.
    pub query: String,
    /// Its model alias.
    pub model: String,
    /// The window's start (inclusive).
    pub from: Timestamp,
    /// The window's end (inclusive).
    pub to: Timestamp,
    /// The largest departure from the expected value, `|actual − expected|` in the series'
    /// units, the series showed in the window, when known (a verdict on an incident knows
    /// it): anomalies of the series departing no further are the same pattern, and a false
    /// positive keeps them from paging again. In the series' units rather than band widths,
    /// so that the same data replayed is the same pattern however the band has moved since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_deviation: Option<f64>,
}

impl SeriesWindow {
    /// Whether `labels` at `t` falls in this window.
    pub fn covers(&self, labels: &Labels, t: Timestamp) -> bool {
        &self.labels == labels && self.from <= t && t <= self.to
    }
}

/// Where a verdict came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    /// The API (or any direct caller).
    Api,
    /// An Alertmanager silence.
    Silence {
        /// The silence's ID.
        id: String,
    },
}

/// One stored verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// `fb-1`, `fb-2`, … in the order given.
    pub id: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The incident it is about, if it is about one.
    pub incident: Option<IncidentId>,
    /// The series and windows it covers.
    pub windows: Vec<SeriesWindow>,
    /// Who gave it.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Why, if they said.
    pub note: Option<String>,
    /// Where it came from.
    pub source: Source,
}

/// How false positives raise a series' threshold; see the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdRule {
    /// The raise per false positive (0.05).
    pub step: f64,
    /// The largest total raise (0.15).
    pub cap: f64,
    /// The half-life of a raise (7 days).
    pub half_life: Duration,
    /// How much larger than a false positive's peak an anomaly may deviate and still be the
    /// same pattern (1.25: a quarter larger).
    pub pattern_tolerance: f64,
    /// How long a false positive's pattern is remembered (30 days).
    pub pattern_memory: Duration,
}

impl Default for ThresholdRule {
    fn default() -> Self {
        Self {
            step: 0.05,
            cap: 0.15,
            half_life: Duration::from_secs(7 * 24 * 3600),
            pattern_tolerance: 1.25,
            pattern_memory: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<Feedback>,
}

/// What [`FeedbackStore::apply_silences`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SilenceReport {
    /// Silences turned into feedback now.
    pub applied: usize,
    /// Portent silences already taken earlier.
    pub already: usize,
    /// Portent silences naming an incident that is no longer known.
    pub unknown_incident: usize,
    /// Silences that are not active, not portent's, or not about one incident.
    pub ignored: usize,
}

/// The verdicts, kept in a file; see the [module docs](self).
#[derive(Debug)]
pub struct FeedbackStore {
    path: PathBuf,
    entries: Vec<Feedback>,
    rule: ThresholdRule,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FeedbackError + '_ {
    move |source| FeedbackError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FeedbackStore {
    /// Opens the store at `path`; a missing file is an empty store.
    pub fn open(path: impl Into<PathBuf>, rule: ThresholdRule) -> Result<Self, FeedbackError> {
        let path = path.into();
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                // Peek at the version first, so a newer format gets the right message.
                #[derive(Deserialize)]
                struct Head {
                    version: u32,
                }
                let corrupt = |e: serde_json::Error| FeedbackError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                };
                let head: Head = serde_json::from_slice(&bytes).map_err(corrupt)?;
                if head.version > FEEDBACK_VERSION {
                    return Err(FeedbackError::Version {
                        path,
                        found: head.version,
                    });
                }
                let file: File = serde_json::from_slice(&bytes).map_err(corrupt)?;
                file.entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Self {
            path,
            entries,
            rule,
        })
    }

    /// Every verdict, oldest first.
    pub fn entries(&self) -> &[Feedback] {
        &self.entries
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn save(&self) -> Result<(), FeedbackError> {
        let file = File {
            version: FEEDBACK_VERSION,
            entries: self.entries.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| FeedbackError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&self.path, &bytes)
    }

    fn push(&mut self, mut fb: Feedback) -> Result<&Feedback, FeedbackError> {
        fb.id = format!("fb-{}", self.entries.len() + 1);
        self.entries.push(fb);
        if let Err(e) = self.save() {
            // Not stored means not taken: memory and disk stay the same.
            self.entries.pop();
            return Err(e);
        }
        Ok(&self.entries[self.entries.len() - 1])
    }

    /// Records a verdict on a whole incident: one window per series, from its first anomaly to
    /// the incident's end (its resolution, or the series' latest anomaly while it is open).
    pub fn mark_incident(
        &mut self,
        incident: &Incident,
        verdict: Verdict,
        by: &str,
        at: Timestamp,
        note: Option<&str>,
    ) -> Result<&Feedback, FeedbackError> {
        self.mark_incident_from(incident, verdict, by, at, note, Source::Api)
    }

    fn mark_incident_from(
        &mut self,
        incident: &Incident,
        verdict: Verdict,
        by: &str,
        at: Timestamp,
        note: Option<&str>,
        source: Source,
    ) -> Result<&Feedback, FeedbackError> {
        let windows = incident
            .members
            .iter()
            .map(|m| SeriesWindow {
                labels: m.labels.clone(),
                query: m.query.clone(),
                model: m.model.clone(),
                from: m.onset,
                // To the incident's end: samples of the same episode that scored under the
                // threshold (the tail of a spike) are kept out of training too.
                to: incident.resolved_at.unwrap_or(m.last).max(m.last),
                peak_deviation: Some((m.peak.value - m.peak.yhat).abs()).filter(|d| d.is_finite()),
            })
            .collect();
        self.push(Feedback {
            id: String::new(),
            verdict,
            incident: Some(incident.id.clone()),
            windows,
            by: by.to_owned(),
            at,
            note: note.map(str::to_owned),
            source,
        })
    }

    /// Records a verdict on one anomaly (a series over a window).
    pub fn mark_anomaly(
        &mut self,
        window: SeriesWindow,
        verdict: Verdict,
        by: &str,
        at: Timestamp,
        note: Option<&str>,
    ) -> Result<&Feedback, FeedbackError> {
        self.push(Feedback {
            id: String::new(),
            verdict,
            incident: None,
            windows: vec![window],
            by: by.to_owned(),
            at,
            note: note.map(str::to_owned),
            source: Source::Api,
        })
    }

    /// The windows to keep out of training: every false positive's.
    pub fn exclusions(&self) -> impl Iterator<Item = &SeriesWindow> {
        self.entries
            .iter()
            .filter(|f| f.verdict == Verdict::FalsePositive)
            .flat_map(|f| f.windows.iter())
    }

    /// Whether `labels` at `t` is inside a false positive's window.
    pub fn is_excluded(&self, labels: &Labels, t: Timestamp) -> bool {
        self.exclusions().any(|w| w.covers(labels, t))
    }

    /// The confirmed verdicts: labelled examples of real trouble.
    pub fn confirmed(&self) -> impl Iterator<Item = &Feedback> {
        self.entries
            .iter()
            .filter(|f| f.verdict == Verdict::Confirmed)
    }

    /// How much to add to `labels`' alerting threshold at `now`; see the [module docs](self).
    pub fn threshold_raise(&self, labels: &Labels, now: Timestamp) -> f64 {
        let half = self.rule.half_life.as_secs_f64().max(1e-3) * 1000.0;
        let total: f64 = self
            .entries
            .iter()
            .filter(|f| f.verdict == Verdict::FalsePositive)
            .filter(|f| f.windows.iter().any(|w| &w.labels == labels))
            .map(|f| {
                let age = now.millis_since(f.at).max(0) as f64;
                self.rule.step * (-age / half).exp2()
            })
            .sum();
        total.min(self.rule.cap)
    }

    /// Whether an anomaly of this series departing `departure` (`|actual − expected|`, in the
    /// series' units) from its expected value at `now` repeats a pattern an operator called a
    /// false positive: a false positive on the same series (labels, query and model) whose
    /// peak departed at least `departure /` [`ThresholdRule::pattern_tolerance`], given within
    /// [`ThresholdRule::pattern_memory`]. Anything larger is a new pattern and pages as usual.
    pub fn is_known_pattern(
        &self,
        labels: &Labels,
        query: &str,
        model: &str,
        departure: f64,
        now: Timestamp,
    ) -> bool {
        let memory = i64::try_from(self.rule.pattern_memory.as_millis()).unwrap_or(i64::MAX);
        self.entries
            .iter()
            .filter(|f| f.verdict == Verdict::FalsePositive && now.millis_since(f.at) <= memory)
            .flat_map(|f| f.windows.iter())
            .filter(|w| &w.labels == labels && w.query == query && w.model == model)
            .filter_map(|w| w.peak_deviation)
            .any(|peak| departure <= peak * self.rule.pattern_tolerance)
    }

    /// Takes active portent silences as false positives on their incidents; `lookup` finds an
    /// incident by ID (the correlator's [`incident`](crate::Correlator::incident)).
    pub fn apply_silences<'a>(
        &mut self,
        silences: &[Silence],
        lookup: impl Fn(&IncidentId) -> Option<&'a Incident>,
    ) -> Result<SilenceReport, FeedbackError> {
        let mut report = SilenceReport::default();
        for s in silences {
            let Some(id) = s.equals("incident").filter(|_| s.is_portent()) else {
                report.ignored += 1;
                continue;
            };
            let seen = self
                .entries
                .iter()
                .any(|f| matches!(&f.source, Source::Silence { id: sid } if sid == &s.id));
            if seen {
                report.already += 1;
                continue;
            }
            let Some(incident) = lookup(&IncidentId(id.to_owned())) else {
                report.unknown_incident += 1;
                continue;
            };
            let at = s
                .starts_at
                .parse::<jiff::Timestamp>()
                .map(|t| Timestamp::from_millis(t.as_millisecond()))
                .unwrap_or(incident.last_anomaly_at);
            let note = (!s.comment.is_empty()).then_some(s.comment.as_str());
            let by = if s.created_by.is_empty() {
                "alertmanager"
            } else {
                &s.created_by
            };
            self.mark_incident_from(
                incident,
                Verdict::FalsePositive,
                by,
                at,
                note,
                Source::Silence { id: s.id.clone() },
            )?;
            report.applied += 1;
        }
        Ok(report)
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content, never a mix:
/// `<path>.tmp`, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FeedbackError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Makes the rename itself durable; directories cannot be opened for sync everywhere.
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().map_err(io(dir))?;
    }
    Ok(())
}
