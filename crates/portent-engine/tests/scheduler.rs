//! The scheduler over a replayed clock, with a fake source standing in for Prometheus: three
//! pods' CPU at one-minute steps with a daily cycle and seeded noise. Pod `a` runs throughout
//! and carries an injected spike; pod `b` appears mid-run (churn); pod `c` stops and must be
//! forgotten after the retention; the source is down for over an hour, which must be counted
//! and caught up without losing or changing any state.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap fixtures known good

use std::collections::BTreeSet;

use portent_core::seeded::gauss;
use portent_core::{Labels, Reason, Sample, Score, Series, Timestamp};
use portent_engine::{
    Cadence, HistorySource, IntervalTracker, Job, MemorySource, Plan, RangeQuery, Request,
    Scheduler, StepReport, StepScore, load, save,
};
use portent_models::DetectorConfig;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// A Monday, 00:00 UTC.
const T0: i64 = 1_700_438_400_000;

const ANOMALY: i64 = T0 + 3 * DAY + 14 * HOUR + 7 * MIN;
const B_FROM: i64 = T0 + 3 * DAY;
const C_UNTIL: i64 = T0 + 2 * DAY + 6 * HOUR;
const OUTAGE: (i64, i64) = (T0 + 3 * DAY + 5 * HOUR, T0 + 3 * DAY + 6 * HOUR + 20 * MIN);
const END: i64 = T0 + 4 * DAY;
const RETENTION: i64 = 2 * HOUR;

fn pod(name: &str) -> Labels {
    Labels::new([("__name__", "cpu"), ("pod", name), ("namespace", "shop")]).unwrap()
}

/// One pod's CPU over `[from, until)`: a daily cycle and noise, seeded by `seed`.
fn cpu(name: &str, seed: u64, from: i64, until: i64) -> Series {
    let samples = (from..until)
        .step_by(MIN as usize)
        .map(|t| {
            let day = std::f64::consts::TAU * ((t - T0) % DAY) as f64 / DAY as f64;
            let mut v = 50.0 + 20.0 * day.sin() + 2.0 * gauss(seed + (t / MIN) as u64);
            if name == "a" && t == ANOMALY {
                v += 40.0;
            }
            Sample::new(Timestamp::from_millis(t), v)
        })
        .collect();
    Series {
        labels: pod(name),
        samples,
    }
}

/// Prometheus as the scheduler sees it: the series, and an outage.
struct Fake {
    data: MemorySource,
    /// The scheduler's clock, set before each step: requests fail while it is in the outage.
    now: i64,
    requests: usize,
}

impl HistorySource for Fake {
    type Error = String;
    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, String> {
        self.requests += 1;
        assert!(q.start <= q.end, "{q:?}");
        assert!(
            q.end.millis() <= self.now,
            "a request into the future: {q:?}"
        );
        if (OUTAGE.0..OUTAGE.1).contains(&self.now) {
            return Err("connection refused".into());
        }
        self.data.query_range(q).map_err(|e| e.to_string())
    }
}

fn fake() -> Fake {
    let mut data = MemorySource::new();
    data.insert("cpu", cpu("a", 0, T0, END));
    data.insert("cpu", cpu("b", 1 << 32, B_FROM, END));
    data.insert("cpu", cpu("c", 2 << 32, T0, C_UNTIL));
    Fake {
        data,
        now: 0,
        requests: 0,
    }
}

fn plan() -> Plan {
    Plan {
        jobs: vec![Job {
            model: "auto".into(),
            query: "cpu".into(),
            expr: "sum by (pod, namespace) (rate(cpu_seconds_total[5m]))".into(),
            step_ms: MIN,
            detector: DetectorConfig::default(),
            cadence: Cadence {
                fit_every_ms: 6 * HOUR,
                fit_window_ms: 2 * DAY,
                score_every_ms: 5 * MIN,
            },
        }],
        joint: Vec::new(),
        retention_ms: RETENTION,
    }
}

fn step(s: &mut Scheduler, src: &mut Fake, now: i64) -> StepReport {
    src.now = now;
    s.step(Timestamp::from_millis(now), src)
}

fn of<'a>(scores: &'a [StepScore], name: &str) -> impl Iterator<Item = &'a StepScore> {
    let labels = pod(name);
    scores.iter().filter(move |s| s.labels == labels)
}

#[test]
fn replay_scores_picks_up_expires_and_survives_an_outage() {
    let mut src = fake();
    let mut s = Scheduler::new(plan()).unwrap();
    s.record_scores(true);
    let mut reports = Vec::new();
    let mut now = T0 + DAY;
    while now <= END {
        let before = s.store().clone();
        let r = step(&mut s, &mut src, now);
        if !r.errors.is_empty() {
            // An unreachable source changes nothing.
            assert_eq!(
                s.store(),
                &before,
                "state changed in a failed step at {now}"
            );
            assert!(r.scores.is_empty() && r.samples_scored == 0 && r.expired == 0);
        }
        reports.push(r);
        now = s.next_due().unwrap().millis();
    }
    let scores: Vec<StepScore> = reports.iter().flat_map(|r| r.scores.clone()).collect();

    // The first step warms up the pods that exist, fitting each on its day of history.
    assert_eq!(reports[0].created, 2);
    assert_eq!(reports[0].fitted, 2);
    assert!(
        reports
            .iter()
            .skip(1)
            .any(|r| r.fit_ticks == 1 && r.fitted >= 2)
    );

    // The spike scores at least 0.8 at its time, and nothing else in pod a comes close to it.
    let a: Vec<&StepScore> = of(&scores, "a").collect();
    let spike = a
        .iter()
        .find(|s| s.scored.t.millis() == ANOMALY)
        .expect("the spike was scored");
    assert!(spike.scored.score >= Score::ALERT, "{:?}", spike.scored);
    // A one-sample excursion; the detector may call it a spike or the start of a shift.
    assert!(matches!(
        spike.scored.reason,
        Some(Reason::Spike | Reason::LevelShift)
    ));
    assert!(
        spike.scored.yhat_lower < spike.scored.yhat && spike.scored.yhat < spike.scored.yhat_upper
    );
    let alerts = a.iter().filter(|s| s.scored.score >= Score::ALERT).count();
    assert!(alerts <= 3, "{alerts} alerts on pod a");

    // The backtest's view: an anomalous interval of pod a spans the spike.
    let mut tracker = IntervalTracker::new(Score::ALERT);
    scores.iter().for_each(|s| tracker.push(s));
    let intervals = tracker.finish();
    assert!(intervals.iter().any(|i| {
        i.labels == pod("a") && i.from.millis() <= ANOMALY && ANOMALY <= i.to.millis()
    }));

    // Every sample of pod a after the warm-up day was scored exactly once, in order, the ones
    // during the outage included.
    let times: Vec<i64> = a.iter().map(|s| s.scored.t.millis()).collect();
    assert!(
        times.windows(2).all(|w| w[1] == w[0] + MIN),
        "gaps or repeats"
    );
    assert_eq!(
        times[0],
        T0 + DAY - 5 * MIN,
        "the first tick scores its whole window"
    );
    assert_eq!(*times.last().unwrap(), END - MIN);

    // Pod b is picked up at the first tick after it appears and scored from then on.
    let created_b = reports
        .iter()
        .find(|r| r.now.millis() >= B_FROM && r.created == 1)
        .expect("pod b was created");
    assert!(created_b.now.millis() <= B_FROM + 5 * MIN);
    let b: BTreeSet<i64> = of(&scores, "b").map(|s| s.scored.t.millis()).collect();
    assert_eq!(b.first(), Some(&B_FROM));
    assert_eq!(b.len() as i64, (END - B_FROM) / MIN);

    // Pod c reports missing data once overdue, then is forgotten after the retention.
    let missing = of(&scores, "c")
        .find(|s| s.scored.reason == Some(Reason::MissingData))
        .expect("pod c's missing data was reported");
    assert!(missing.scored.t.millis() > C_UNTIL);
    let expired = reports
        .iter()
        .find(|r| r.expired == 1)
        .expect("pod c expired");
    assert!(expired.now.millis() >= C_UNTIL + RETENTION);
    assert!(expired.now.millis() <= C_UNTIL + RETENTION + 5 * MIN);
    assert!(s.store().get("auto", "cpu", &pod("c")).is_none());
    assert_eq!(s.store().len(), 2);

    // The outage: every step in it counted a score error, and a fit tick that fell in it was
    // retried when the source came back.
    let failed: Vec<&StepReport> = reports.iter().filter(|r| !r.errors.is_empty()).collect();
    assert_eq!(failed.len() as i64, (OUTAGE.1 - OUTAGE.0) / (5 * MIN));
    for r in &failed {
        assert!((OUTAGE.0..OUTAGE.1).contains(&r.now.millis()));
        assert!(r.errors.iter().any(|e| e.request == Request::Score));
        assert_eq!(r.errors[0].message, "connection refused");
        assert_eq!(
            (r.errors[0].model.as_str(), r.errors[0].query.as_str()),
            ("auto", "cpu")
        );
    }
    assert!(
        failed
            .iter()
            .any(|r| r.errors.iter().any(|e| e.request == Request::Fit))
    );
    let back = reports.iter().find(|r| r.now.millis() >= OUTAGE.1).unwrap();
    assert!(back.errors.is_empty() && back.fitted >= 2);
    assert!(back.fit_time > std::time::Duration::ZERO);
    assert!(back.score_time > std::time::Duration::ZERO);
    assert!(back.samples_scored >= 2 * ((OUTAGE.1 - OUTAGE.0) / MIN) as usize);

    // The exposition: the latest verdict of every series, with query and model labels.
    let latest: Vec<Labels> = s.store().latest().map(|l| l.output_labels()).collect();
    assert_eq!(latest.len(), 2);
    for l in &latest {
        assert_eq!(l.get("query"), Some("cpu"));
        assert_eq!(l.get("model"), Some("auto"));
        assert_eq!(l.get("namespace"), Some("shop"));
    }

    // Each series is news on the tick that first reports it (b arrives a day and a half
    // in), and on no other.
    for name in ["a", "b", "c"] {
        let ticks: Vec<bool> = reports
            .iter()
            .filter_map(|r| {
                let v: Vec<&StepScore> = of(&r.scores, name).collect();
                (!v.is_empty()).then(|| v.iter().all(|s| s.first))
            })
            .collect();
        assert!(ticks.len() > 2 && ticks[0], "{name}: {ticks:?}");
        assert!(ticks[1..].iter().all(|f| !f), "{name}: {ticks:?}");
    }
}

#[test]
fn a_restart_resumes_scoring_from_saved_state_without_refitting() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = fake();
    let mut s = Scheduler::new(plan()).unwrap();
    s.record_scores(true);
    let mut now = T0 + DAY;
    while now < T0 + DAY + 3 * HOUR {
        step(&mut s, &mut src, now);
        now = s.next_due().unwrap().millis();
    }
    save(s.store(), dir.path()).unwrap();
    // The uninterrupted run goes on for an hour; the restarted one starts 20 minutes later.
    let mut later = Vec::new();
    let stop = now + HOUR;
    while now < stop {
        later.extend(step(&mut s, &mut src, now).scores);
        now = s.next_due().unwrap().millis();
    }

    let store = load(dir.path()).unwrap().expect("a snapshot");
    let (mut r, dropped) = Scheduler::with_store(plan(), store).unwrap();
    assert_eq!(dropped, 0);
    r.record_scores(true);
    let requests = src.requests;
    let restart = stop - 40 * MIN;
    let mut first = step(&mut r, &mut src, restart);
    assert_eq!(src.requests, requests + 1, "one score request, no history");
    assert_eq!((first.created, first.fitted), (0, 0));
    // It catches up the 20 minutes it was down, from each series' last scored sample, and
    // says exactly what the uninterrupted run said.
    assert_eq!(first.series_scored, 2);
    let key = |s: &StepScore| (s.labels.clone(), s.scored.t);
    let mut expected: Vec<StepScore> = later
        .into_iter()
        .filter(|s| s.scored.t.millis() <= restart)
        .collect();
    expected.sort_by_key(key);
    first.scores.sort_by_key(key);
    assert!(expected.len() >= 2 * 20, "{} verdicts", expected.len());
    // The restored series are news to this process; to the uninterrupted one they were not.
    assert!(first.scores.iter().all(|s| s.first));
    assert!(expected.iter().all(|s| !s.first));
    for s in &mut first.scores {
        s.first = false;
    }
    assert_eq!(first.scores, expected);
    // The next tick's are not news.
    let due = r.next_due().unwrap().millis();
    let next = step(&mut r, &mut src, due);
    assert!(!next.scores.is_empty() && next.scores.iter().all(|s| !s.first));
}

#[test]
fn the_verdict_on_show_is_the_ticks_peak_not_its_last_sample() {
    // Score ticks every 5 minutes over 1-minute samples: the spike at 14:07 is the third of
    // the five samples the 14:10 tick scores. Prometheus scrapes the store's verdict, so it
    // must be the spike's, not the calm 14:09 sample's, until the next tick.
    let mut src = fake();
    let mut s = Scheduler::new(plan()).unwrap();
    let tick = ANOMALY - ANOMALY % (5 * MIN) + 5 * MIN;
    let mut now = T0;
    while now <= tick {
        step(&mut s, &mut src, now);
        now += 5 * MIN;
    }
    let shown = |s: &Scheduler| {
        let a = pod("a");
        *s.store().latest().find(|l| *l.labels == a).unwrap().scored
    };
    let peak = shown(&s);
    assert_eq!(peak.t, Timestamp::from_millis(ANOMALY));
    assert!(peak.score >= Score::ALERT, "{peak:?}");
    step(&mut s, &mut src, tick + 5 * MIN);
    let after = shown(&s);
    assert!(after.t > Timestamp::from_millis(ANOMALY), "{after:?}");
    assert!(after.score < Score::ALERT, "{after:?}");
}

/// A pod deleted by a rollout: Prometheus remote_writes a stale marker for each of its series
/// (it does when a target or a recorded series disappears). The scheduler scores the pod up to
/// the marker and forgets it, instead of reporting missing data for the retention; the pod's
/// name coming back later is a new series that warms up on its history.
#[test]
fn a_stale_marker_ends_a_pushed_series_without_missing_data() {
    use portent_core::STALE_NAN_BITS;
    use portent_engine::{PushBuffer, PushLimits, PushQuery, Selector};

    let mut buffer = PushBuffer::new(
        vec![PushQuery {
            alias: "cpu".into(),
            selector: Selector::metric("cpu"),
            step_ms: MIN,
        }],
        PushLimits::default(),
    );
    let gone = T0 + DAY + 3 * HOUR;
    let back = gone + 2 * HOUR;
    buffer.ingest(vec![cpu("a", 0, T0, END), cpu("d", 3 << 32, T0, gone)]);
    let mut s = Scheduler::new(plan()).unwrap();
    s.record_scores(true);
    let mut reports = Vec::new();
    let mut now = T0 + DAY;
    while now <= gone + HOUR {
        if now == gone + 10 * MIN {
            let stale = Sample::new(Timestamp::from_millis(gone), f64::from_bits(STALE_NAN_BITS));
            let stats = buffer.ingest(vec![Series {
                labels: pod("d"),
                samples: vec![stale],
            }]);
            assert_eq!(stats.stale, 1);
        }
        reports.push(s.step(Timestamp::from_millis(now), &mut buffer));
        now += 5 * MIN;
    }
    let scores: Vec<StepScore> = reports.iter().flat_map(|r| r.scores.clone()).collect();
    // Before the marker arrived, d was overdue and reported missing (nothing told portent it
    // ended); once it arrived, d was forgotten and nothing more was said about it.
    assert_eq!(reports.iter().map(|r| r.ended).sum::<usize>(), 1);
    let ended_at = reports.iter().find(|r| r.ended == 1).unwrap().now.millis();
    assert!(ended_at >= gone + 10 * MIN && ended_at < gone + 15 * MIN);
    assert!(of(&scores, "d").all(|x| x.scored.t.millis() <= ended_at));
    assert!(s.store().get("auto", "cpu", &pod("d")).is_none());
    assert!(s.store().get("auto", "cpu", &pod("a")).is_some());
    assert_eq!(s.store().len(), 1);

    // The same series again: new, warmed up, scored; a sample clears the end.
    buffer.ingest(vec![cpu("d", 3 << 32, back, back + HOUR)]);
    let r = s.step(Timestamp::from_millis(back + HOUR), &mut buffer);
    assert!(of(&r.scores, "d").count() > 0, "{:?}", r.scores.len());
    assert_eq!(r.ended, 0);
    assert!(s.store().get("auto", "cpu", &pod("d")).is_some());
}

/// Regression: when a whole query went quiet at once (Prometheus stopped remote-writing, a
/// tick ran ahead of a stalled pipeline), every series reported missing data, one anomaly each
/// (90,000 in one tick of the 100,000-series loopback bench). Nine in ten of a query's series
/// overdue together is now the source's gap: no missing-data verdicts, the query named in
/// the report. One series going quiet alone is still missing data.
#[test]
fn a_whole_query_going_quiet_is_a_gap_in_the_source_not_missing_data() {
    let alone = T0 + DAY + 2 * HOUR;
    let all = T0 + DAY + 4 * HOUR;
    let mut data = MemorySource::new();
    for i in 0..12u64 {
        let name = format!("p{i}");
        let until = if i == 0 { alone } else { all };
        data.insert("cpu", cpu(&name, i << 32, T0, until));
    }
    let mut src = Fake {
        data,
        now: 0,
        requests: 0,
    };
    let mut plan = plan();
    plan.retention_ms = DAY;
    let mut s = Scheduler::new(plan).unwrap();
    s.record_scores(true);
    let mut now = T0 + DAY;
    let (mut alone_missing, mut gaps, mut later_missing) = (0, 0, 0);
    while now < all + 2 * HOUR {
        let r = step(&mut s, &mut src, now);
        let missing = r
            .scores
            .iter()
            .filter(|v| v.scored.reason == Some(Reason::MissingData))
            .count();
        if now < all {
            assert!(r.source_gaps.is_empty(), "{now}");
            // Only p0 is quiet: its missing data is reported.
            assert_eq!(missing, r.missing);
            alone_missing += of(&r.scores, "p0")
                .filter(|v| v.scored.reason == Some(Reason::MissingData))
                .count();
        } else if now >= all + 10 * MIN {
            // The others are overdue from five minutes (five steps) after their last sample.
            later_missing += missing;
            gaps += r.source_gaps.len();
            assert!(r.source_gaps.iter().all(|q| &**q == "cpu"));
        }
        now = s.next_due().unwrap().millis();
    }
    assert!(alone_missing > 0, "p0 alone was reported missing");
    assert_eq!(
        later_missing, 0,
        "no missing data once every series went quiet"
    );
    assert!(gaps >= 12, "{gaps} ticks named the gap");
}

#[test]
fn a_sink_takes_every_verdict_in_chunks_as_the_report_would_hold_them() {
    // Enough pods that one tick gives several chunks: 3,000 series, five samples a tick. Pod
    // 0 stops after the first ticks, so that missing-data verdicts go to the sink too, and
    // every pod is new at the first tick, so the warm-up's verdicts do.
    let (pods, until) = (3_000, T0 + DAY + 30 * MIN);
    let mut data = MemorySource::new();
    for p in 0..pods {
        let name = format!("p{p}");
        let end = if p == 0 { T0 + DAY + 5 * MIN } else { until };
        data.insert("cpu", cpu(&name, p << 32, T0 + DAY - 3 * HOUR, end));
    }
    let src = || Fake {
        data: data.clone(),
        now: 0,
        requests: 0,
    };
    let (mut kept_src, mut sunk_src) = (src(), src());
    let mut plan = plan();
    plan.jobs[0].cadence.fit_window_ms = 3 * HOUR;
    let mut kept = Scheduler::new(plan.clone()).unwrap();
    kept.record_scores(true);
    // Not recording: a sink gets the verdicts anyway.
    let mut sunk = Scheduler::new(plan).unwrap();
    let (mut all, mut chunks) = (Vec::new(), Vec::new());
    let mut now = T0 + DAY;
    while now <= until {
        let expected = step(&mut kept, &mut kept_src, now);
        sunk_src.now = now;
        let before = all.len();
        let mut report = sunk.step_into(Timestamp::from_millis(now), &mut sunk_src, &mut |c| {
            chunks.push(c.len());
            // A sink may take the verdicts out; whatever it leaves is cleared.
            all.append(c);
        });
        assert!(report.scores.is_empty());
        report.scores = all[before..].to_vec();
        report.score_time = expected.score_time;
        report.fit_time = expected.fit_time;
        // Compared as printed: a missing-data verdict's value is NaN, unequal to itself.
        assert_eq!(format!("{report:?}"), format!("{expected:?}"), "at {now}");
        now = kept.next_due().unwrap().millis();
    }
    assert!(
        all.iter()
            .any(|s| s.scored.reason == Some(Reason::MissingData)),
        "no missing-data verdict"
    );
    assert!(chunks.len() > 7, "{chunks:?}");
    assert!(
        chunks
            .iter()
            .all(|&n| (1..=portent_engine::SINK_CHUNK).contains(&n)),
        "{chunks:?}"
    );
    assert_eq!(format!("{:?}", kept.store()), format!("{:?}", sunk.store()));
}
