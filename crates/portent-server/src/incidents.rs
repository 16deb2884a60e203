//! Incidents in the daemon: the [`Hub`] the scoring loop feeds and the HTTP API reads, and the
//! API's routes ([`api_router`]), described by an OpenAPI document at
//! `GET /api/v1/openapi.json`.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/v1/incidents` | incidents kept, newest first; `?state=firing` (or `pending`, `resolved`, `open`) filters |
//! | `GET /api/v1/incidents/{id}` | one incident (an ID merged into another answers with that one): its evidence pack, its explanation (`explanation`, the text; `explanation_detail`, its parts and source: `llm`, `deterministic` or `fallback`), its feedback |
//! | `GET /api/v1/incidents/{id}/evidence` | the evidence pack alone, as explainers read it |
//! | `POST /api/v1/incidents/{id}/feedback` | `{"verdict": "false_positive" \| "confirmed", "by": …, "note": …}`; bearer token |
//! | `POST /api/v1/feedback` | a verdict on one anomaly: a series (`labels`, `query`, `model`) over `from`..`to`; bearer token |
//! | `GET /api/v1/feedback` | every verdict, oldest first |
//! | `GET /api/v1/ask?q=…` | a question answered from the open incidents and the top scores, by the LLM when one is configured, deterministically otherwise (`portent ask` calls it) |
//! | `POST /api/v1/slack/command` | a Slack slash command, answered in the channel; only with `explain.slack_signing_secret` and a valid, fresh signature |
//! | `GET /api/v1/openapi.json` | this API as OpenAPI 3.1 |
//!
//! A false positive excludes its window from the series' training and raises the series'
//! threshold ([`portent_incidents::feedback`] explains the rule): the hub applies the raise when
//! it takes anomalies in, and hands the windows to the scheduler through [`Hub::exclusions`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portent_core::{Labels, Score, Timestamp};
use portent_incidents::feedback::{Feedback, FeedbackError, FeedbackStore, SeriesWindow, Verdict};
use portent_incidents::notify::Silence;
use portent_incidents::{
    Anomaly, Correlator, CorrelatorConfig, Counters, EvidencePack, IncidentId, OpenMembers,
    PackConfig, State as IncidentState,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::explain::{self, Explanations};
use crate::{Control, Scores};

/// The most top scores an answer considers.
const ASK_TOP_SCORES: usize = 20;

/// The OpenAPI document of [`api_router`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// The most bytes of a feedback request body.
const MAX_FEEDBACK_BODY: usize = 64 * 1024;

/// How long `GET /api/v1/ask` waits for the model before answering deterministically.
const ASK_WAIT: Duration = Duration::from_secs(25);

/// How long a slash command waits for the model: Slack gives up on an answer after 3 s.
const SLACK_WAIT: Duration = Duration::from_millis(2500);

/// The most bytes of a slash command's body (Slack's are a few hundred).
const MAX_SLACK_BODY: usize = 16 * 1024;

/// The correlator, the feedback store and the clock they share, and the incidents'
/// explanations; cloning shares them.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
    explanations: Explanations,
}

#[derive(Debug)]
struct Inner {
    correlator: Correlator,
    feedback: FeedbackStore,
    pack: PackConfig,
    now: Timestamp,
}

/// What one [`Hub::observe`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Anomalies taken in (at or above their threshold).
    pub anomalies: usize,
    /// Samples at or above the model's threshold held back by feedback: below it once the
    /// series' raise is added, or a pattern an operator called a false positive.
    pub held_back_by_feedback: usize,
}

/// One scored sample offered to the hub, with its model's alerting threshold.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The sample, its series and aliases.
    pub anomaly: Anomaly,
    /// The model's `threshold`.
    pub threshold: Score,
}

impl Hub {
    /// A hub with no incidents, keeping feedback in `feedback`.
    pub fn new(config: CorrelatorConfig, feedback: FeedbackStore, pack: PackConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                correlator: Correlator::new(config),
                feedback,
                pack,
                now: Timestamp::from_millis(i64::MIN),
            })),
            explanations: Explanations::default(),
        }
    }

    /// The hub with `explanations` (by default: deterministic, no runbooks, no Slack).
    #[must_use]
    pub fn with_explanations(mut self, explanations: Explanations) -> Self {
        self.explanations = explanations;
        self
    }

    /// The incidents' explanations.
    pub fn explanations(&self) -> &Explanations {
        &self.explanations
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in one step's samples (any order; they are taken in time order) and moves the
    /// clock to `now`. A sample counts when its score reaches its model's threshold plus the
    /// series' raise from false-positive feedback (capped at 1), unless it repeats a pattern
    /// marked a false positive ([`FeedbackStore::is_known_pattern`]).
    pub fn observe(
        &self,
        candidates: impl IntoIterator<Item = Candidate>,
        now: Timestamp,
    ) -> Observed {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut seen = Observed::default();
        // Each with whether it reached its threshold: those below may still hold an incident
        // open (a member that stays outside its pre-incident band).
        let mut kept: Vec<(Anomaly, bool)> = Vec::new();
        let sustaining = inner.correlator.wants_normal();
        for c in candidates {
            let score = c.anomaly.scored.score.get();
            if score < c.threshold.get() {
                if sustaining {
                    kept.push((c.anomaly, false));
                }
                continue;
            }
            let a = &c.anomaly;
            let raise = inner.feedback.threshold_raise(&a.labels, a.scored.t);
            let raised = raise > 0.0 && score < (c.threshold.get() + raise).min(1.0);
            if raised
                || inner.feedback.is_known_pattern(
                    &a.labels,
                    &a.query,
                    &a.model,
                    (a.scored.value - a.scored.yhat).abs(),
                    a.scored.t,
                )
            {
                seen.held_back_by_feedback += 1;
                continue;
            }
            kept.push((c.anomaly, true));
        }
        kept.sort_by_key(|(a, _)| a.scored.t);
        for (a, anomalous) in &kept {
            if !anomalous {
                inner.correlator.observe_normal(a);
            } else if inner.correlator.observe(a).is_some() {
                seen.anomalies += 1;
            }
        }
        inner.correlator.advance(now);
        inner.now = inner.now.max(now);
        seen
    }

    /// The clock: the latest step's time.
    pub fn now(&self) -> Timestamp {
        self.lock().now
    }

    /// The evidence pack of every incident kept, oldest onset first: what the notifier sends.
    pub fn packs(&self) -> Vec<EvidencePack> {
        let inner = self.lock();
        let topology = &inner.correlator.config().topology;
        inner
            .correlator
            .incidents()
            .iter()
            .map(|i| EvidencePack::build(i, topology, &inner.pack))
            .collect()
    }

    /// The evidence pack of incident `id`.
    pub fn pack(&self, id: &str) -> Option<EvidencePack> {
        let inner = self.lock();
        let incident = inner.correlator.incident(&IncidentId(id.to_owned()))?;
        Some(EvidencePack::build(
            incident,
            &inner.correlator.config().topology,
            &inner.pack,
        ))
    }

    /// The web UI's ID ([`crate::history::series_id`]) of each series of incident `id`, by
    /// evidence ID, so its page can link every piece of evidence to the series' chart.
    pub fn series_ids(&self, id: &str) -> BTreeMap<String, String> {
        let inner = self.lock();
        inner
            .correlator
            .incident(&IncidentId(id.to_owned()))
            .map(|incident| {
                incident
                    .members
                    .iter()
                    .map(|m| {
                        let sid = crate::history::series_id(&m.query, &m.model, &m.labels);
                        (m.evidence_id.clone(), sid)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many incidents are in each state.
    pub fn counts(&self) -> BTreeMap<IncidentState, usize> {
        let mut counts = BTreeMap::from([
            (IncidentState::Pending, 0),
            (IncidentState::Firing, 0),
            (IncidentState::Resolved, 0),
        ]);
        for i in self.lock().correlator.incidents() {
            *counts.entry(i.state).or_default() += 1;
        }
        counts
    }

    /// The series whose verdicts below their threshold matter now (members of an open
    /// incident: one still beyond its pre-incident band keeps the incident active); `None`
    /// when none do. Callers hand [`Hub::observe`] those verdicts alone, and skip building the
    /// others.
    pub fn open_members(&self) -> Option<OpenMembers> {
        self.lock().correlator.open_members()
    }

    /// Learns from every verdict, `(labels, query, time, value, place)`: where pods run (the
    /// series that name a pod and a node, when `place`), so a pod's application series link
    /// to its node (see [`portent_incidents::PodNodes`]), and what each Deployment's
    /// ReplicaSets' pods show, so an incident can name a bad rollout (see
    /// [`portent_incidents::rollout`]). Nothing is allocated for pods and queries already
    /// known.
    pub fn learn<'a>(
        &self,
        verdicts: impl IntoIterator<Item = (&'a Labels, &'a str, Timestamp, f64, bool)>,
    ) {
        let mut inner = self.lock();
        for (labels, query, t, value, place) in verdicts {
            inner.correlator.learn(labels, query, t, value, place);
        }
    }

    /// What the correlator had to leave out so far.
    pub fn counters(&self) -> Counters {
        self.lock().correlator.counters()
    }

    /// Records a verdict on incident `id`, at the hub's clock.
    pub fn mark_incident(
        &self,
        id: &str,
        verdict: Verdict,
        by: &str,
        note: Option<&str>,
    ) -> Result<Feedback, FeedbackError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(incident) = inner.correlator.incident(&IncidentId(id.to_owned())) else {
            return Err(FeedbackError::UnknownIncident(id.to_owned()));
        };
        inner
            .feedback
            .mark_incident(incident, verdict, by, inner.now, note)
            .cloned()
    }

    /// Records a verdict on one series over a window, at the hub's clock.
    pub fn mark_anomaly(
        &self,
        window: SeriesWindow,
        verdict: Verdict,
        by: &str,
        note: Option<&str>,
    ) -> Result<Feedback, FeedbackError> {
        let mut inner = self.lock();
        let now = inner.now;
        inner
            .feedback
            .mark_anomaly(window, verdict, by, now, note)
            .cloned()
    }

    /// Every verdict, oldest first.
    pub fn feedback(&self) -> Vec<Feedback> {
        self.lock().feedback.entries().to_vec()
    }

    /// The windows false positives keep out of training.
    pub fn exclusions(&self) -> Vec<SeriesWindow> {
        self.lock().feedback.exclusions().cloned().collect()
    }

    /// Takes Alertmanager silences on portent's alerts as false positives; returns how many
    /// were new.
    pub fn apply_silences(&self, silences: &[Silence]) -> Result<usize, FeedbackError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let correlator = &inner.correlator;
        let report = inner
            .feedback
            .apply_silences(silences, |id| correlator.incident(id))?;
        Ok(report.applied)
    }
}

/// The incidents API on `hub` and `scores`; the POST routes need `control`'s bearer token.
pub fn api_router(hub: Hub, control: Control, scores: Scores) -> Router {
    Router::new()
        .route("/api/v1/incidents", get(list))
        .route("/api/v1/incidents/{id}", get(one))
        .route("/api/v1/incidents/{id}/evidence", get(evidence))
        .route("/api/v1/incidents/{id}/feedback", post(incident_feedback))
        .route("/api/v1/feedback", get(all_feedback).post(anomaly_feedback))
        .route("/api/v1/ask", get(ask))
        .route("/api/v1/slack/command", post(slack_command))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(Api {
            hub,
            control,
            scores,
        })
}

#[derive(Clone)]
struct Api {
    hub: Hub,
    control: Control,
    scores: Scores,
}

/// An error answer: `{"error": "…"}` with a status.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
}

/// One line of the incident list.
#[derive(Serialize)]
struct Summary<'a> {
    id: &'a str,
    state: IncidentState,
    started_at: &'a portent_incidents::pack::At,
    fired_at: Option<&'a portent_incidents::pack::At>,
    resolved_at: Option<&'a portent_incidents::pack::At>,
    last_anomaly_at: &'a portent_incidents::pack::At,
    series: usize,
    scope: &'a portent_incidents::pack::Scope,
    /// The top root-cause candidate's series, reason and evidence ID.
    top_cause: Option<TopCause<'a>>,
}

#[derive(Serialize)]
struct TopCause<'a> {
    evidence_id: &'a str,
    series: &'a str,
    reason: Option<portent_core::Reason>,
}

fn summary(p: &EvidencePack) -> Summary<'_> {
    let top_cause = p.candidates.first().and_then(|c| {
        p.series
            .iter()
            .find(|s| s.id == c.evidence_id)
            .map(|s| TopCause {
                evidence_id: &s.id,
                series: &s.series,
                reason: s.reason,
            })
    });
    Summary {
        id: &p.incident.id,
        state: p.incident.state,
        started_at: &p.incident.started_at,
        fired_at: p.incident.fired_at.as_ref(),
        resolved_at: p.incident.resolved_at.as_ref(),
        last_anomaly_at: &p.incident.last_anomaly_at,
        series: p.incident.series_total,
        scope: &p.scope,
        top_cause,
    }
}

async fn list(State(api): State<Api>, Query(q): Query<ListQuery>) -> Response {
    let filter: Option<fn(IncidentState) -> bool> = match q.state.as_deref() {
        None | Some("") => None,
        Some("pending") => Some(|s| s == IncidentState::Pending),
        Some("firing") => Some(|s| s == IncidentState::Firing),
        Some("resolved") => Some(|s| s == IncidentState::Resolved),
        Some("open") => Some(|s| s != IncidentState::Resolved),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state={other:?}: use pending, firing, resolved or open"),
            );
        }
    };
    let mut packs = api.hub.packs();
    packs.retain(|p| filter.is_none_or(|f| f(p.incident.state)));
    // Newest first: what an SRE opening the page wants to see.
    packs.reverse();
    let incidents: Vec<Summary<'_>> = packs.iter().map(summary).collect();
    Json(json!({ "incidents": incidents })).into_response()
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no incident {id:?}: it may have resolved longer ago than incidents.retention; \
             GET /api/v1/incidents lists those kept"
        ),
    )
}

async fn one(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Some(pack) = api.hub.pack(&id) else {
        return not_found(&id);
    };
    let stored = api.hub.explanations().current(&pack).await;
    let detail = explain::detail(&stored, Some(&pack));
    let feedback: Vec<Feedback> = api
        .hub
        .feedback()
        .into_iter()
        .filter(|f| f.incident.as_ref().is_some_and(|i| i.as_str() == id))
        .collect();
    Json(json!({
        "incident": pack,
        "explanation": stored.explanation.text,
        "explanation_detail": detail,
        "feedback": feedback,
        "series_ids": api.hub.series_ids(&id),
    }))
    .into_response()
}

async fn evidence(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.hub.pack(&id) {
        Some(pack) => ([(CONTENT_TYPE, "application/json")], pack.to_json()).into_response(),
        None => not_found(&id),
    }
}

/// A verdict as posted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictBody {
    verdict: Verdict,
    by: Option<String>,
    note: Option<String>,
}

/// A verdict on one anomaly as posted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnomalyBody {
    verdict: Verdict,
    labels: BTreeMap<String, String>,
    query: String,
    model: String,
    /// Milliseconds since the epoch.
    from: i64,
    to: i64,
    by: Option<String>,
    note: Option<String>,
}

/// Parses a JSON body with a clear message (axum's `Json` extractor answers in plain text);
/// the error is the answer to give.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Box<Response>> {
    if body.len() > MAX_FEEDBACK_BODY {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_FEEDBACK_BODY} bytes"),
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("the body is not a valid verdict: {e}"),
        ))
    })
}

fn feedback_error(e: &FeedbackError) -> Response {
    match e {
        FeedbackError::UnknownIncident(id) => not_found(id),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn who(by: Option<String>) -> String {
    by.filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "api".to_owned())
}

async fn incident_feedback(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = api.control.refusal(&headers) {
        return refused;
    }
    let v: VerdictBody = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match api
        .hub
        .mark_incident(&id, v.verdict, &who(v.by), v.note.as_deref())
    {
        Ok(fb) => (StatusCode::CREATED, Json(fb)).into_response(),
        Err(e) => feedback_error(&e),
    }
}

async fn anomaly_feedback(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = api.control.refusal(&headers) {
        return refused;
    }
    let v: AnomalyBody = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let labels = match Labels::new(&v.labels) {
        Ok(l) if !l.is_empty() => l,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "labels: empty"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("labels: {e}")),
    };
    if v.to < v.from {
        return error(StatusCode::BAD_REQUEST, "to is before from");
    }
    let window = SeriesWindow {
        labels,
        query: v.query,
        model: v.model,
        from: Timestamp::from_millis(v.from),
        to: Timestamp::from_millis(v.to),
        peak_deviation: None,
    };
    match api
        .hub
        .mark_anomaly(window, v.verdict, &who(v.by), v.note.as_deref())
    {
        Ok(fb) => (StatusCode::CREATED, Json(fb)).into_response(),
        Err(e) => feedback_error(&e),
    }
}

async fn all_feedback(State(api): State<Api>) -> Response {
    Json(json!({ "feedback": api.hub.feedback() })).into_response()
}

#[derive(Deserialize)]
struct AskQuery {
    q: Option<String>,
}

/// The answer to `question` from what portent sees now: open incidents worst first (those the
/// question names, when it names any) and the top scores; through the model when one is
/// configured and it answers within `wait`, deterministically otherwise.
async fn answer(api: &Api, question: &str, wait: Duration) -> portent_explain::Explanation {
    let packs = api.hub.packs();
    let top: Vec<portent_explain::TopScore> = api
        .scores
        .top(ASK_TOP_SCORES)
        .into_iter()
        .map(|(k, s)| portent_explain::TopScore {
            series: format!("{} (query {}, model {})", k.labels, k.query, k.model),
            score: s.score.get(),
            reason: s.reason,
        })
        .collect();
    let explainer = api.hub.explanations().explainer();
    match tokio::time::timeout(wait, explainer.ask(question, &packs, &top)).await {
        Ok(e) => e,
        Err(_) => portent_explain::Explanation {
            incident_id: "ask".into(),
            fingerprint: String::new(),
            text: portent_explain::answer_deterministic(question, &packs, &top),
            outcome: portent_explain::Outcome::Fallback {
                reason: format!("llm: no answer within {wait:?}"),
            },
            answer: None,
            runbooks: Vec::new(),
            usage: portent_explain::Usage::default(),
            cached: false,
        },
    }
}

/// `GET /api/v1/ask?q=`: `{"question", "answer", "source"}`.
async fn ask(State(api): State<Api>, Query(q): Query<AskQuery>) -> Response {
    let question = q.q.unwrap_or_default();
    if question.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "ask a question: /api/v1/ask?q=what's+happening+in+production",
        );
    }
    let e = answer(&api, &question, ASK_WAIT).await;
    Json(json!({
        "question": question,
        "answer": e.text,
        "source": explain::source(&e),
    }))
    .into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `POST /api/v1/slack/command`: a slash command, verified against the signing secret on the
/// raw body before anything else is read, answered in the channel.
async fn slack_command(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(secret) = api.hub.explanations().slack_secret() else {
        return error(
            StatusCode::NOT_FOUND,
            "Slack slash commands are off: set explain.slack_signing_secret (or its _file or \
             _env form) to Slack's signing secret",
        );
    };
    if body.len() > MAX_SLACK_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_SLACK_BODY} bytes"),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if let Err(e) = portent_explain::verify_slack(
        secret,
        header(&headers, "x-slack-request-timestamp"),
        header(&headers, "x-slack-signature"),
        &body,
        now,
    ) {
        return error(
            StatusCode::UNAUTHORIZED,
            format!("{e}: not signed by Slack with the configured signing secret, or too old"),
        );
    }
    let command = portent_explain::SlashCommand::parse(&String::from_utf8_lossy(&body));
    let question = command.question();
    let e = answer(&api, &question, SLACK_WAIT).await;
    Json(portent_explain::channel_response(&question, &e.text)).into_response()
}

async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
