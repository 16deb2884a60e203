//! Crash safety of the state snapshot: a process saving in a loop is killed with SIGKILL in the
//! middle of a save, and the snapshot on disk is still one whole, loadable save from which
//! scoring resumes. The saving process is this test binary run again on one test
//! ([`child_saves_in_a_loop`]), which does nothing unless the parent sets its environment
//! variable.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap fixtures known good

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portent_core::seeded::gauss;
use portent_core::{Fit, Labels, Sample, Series, Timestamp};
use portent_engine::persist::{STATE_FILE, TEMP_FILE, load_file};
use portent_engine::{
    Cadence, Entry, Job, MemorySource, PersistError, Plan, Scheduler, Store, load, save,
};
use portent_models::DetectorConfig;

const CHILD_ENV: &str = "PORTENT_ENGINE_SAVE_LOOP_DIR";
const SERIES: usize = 20_000;
const MIN: i64 = 60_000;
/// The last sample every series has scored.
const LAST: i64 = 1_700_000_000_000;

/// `SERIES` series sharing one detector fitted on eight days with a daily cycle (so it carries
/// per-hour ranges, as a real fleet's do), each marked with `stamp` as its last-seen time.
fn store(stamp: i64) -> Store {
    let history: Vec<Sample> = (0..8 * 1440)
        .map(|i| {
            let t = LAST - (8 * 1440 - 1 - i) * MIN;
            let day = std::f64::consts::TAU * (t % 86_400_000) as f64 / 86_400_000.0;
            Sample::new(
                Timestamp::from_millis(t),
                100.0 + 30.0 * day.sin() + gauss(i as u64),
            )
        })
        .collect();
    let detector = DetectorConfig::default().fit(&history).unwrap();
    let mut s = Store::new();
    let g = s.group_id("m", "q");
    for i in 0..SERIES {
        let mut e = Entry::new(detector.clone(), Timestamp::from_millis(stamp));
        e.last_scored = Some(Timestamp::from_millis(LAST));
        s.group_mut(g).insert(labels(i), e);
    }
    s
}

fn labels(i: usize) -> Labels {
    Labels::new([("__name__", "cpu"), ("pod", &format!("web-{i}"))]).unwrap()
}

/// The last-seen stamps in a store: one value if it is one whole save.
fn stamps(s: &Store) -> BTreeSet<Timestamp> {
    s.groups()
        .iter()
        .flat_map(|g| g.values().map(|e| e.last_seen))
        .collect()
}

/// The child: loads the snapshot and saves it again and again, each save with a new stamp.
/// Bounded: the parent kills it long before the end.
#[test]
fn child_saves_in_a_loop() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // run as an ordinary test: nothing to do
    };
    let dir = PathBuf::from(dir);
    let mut s = load(&dir).unwrap().unwrap();
    for k in 1..=300 {
        for g in 0..s.groups().len() {
            for e in s.group_mut(g).values_mut() {
                e.last_seen = Timestamp::from_millis(k);
            }
        }
        save(&s, &dir).unwrap();
    }
}

fn wait_for_a_save_under_way(child: &mut std::process::Child, tmp: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::metadata(tmp).is_ok_and(|m| m.len() > 0) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the saving process exited first: {status}");
        }
        assert!(Instant::now() < deadline, "no save started within 60 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sigkill_during_a_save_leaves_a_whole_snapshot_and_scoring_resumes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, tmp) = (dir.path().join(STATE_FILE), dir.path().join(TEMP_FILE));
    save(&store(0), dir.path()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut partial = 0;
    for attempt in 0..6 {
        let _ = std::fs::remove_file(&tmp);
        let mut child = Command::new(&exe)
            .args(["--exact", "child_saves_in_a_loop", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_a_save_under_way(&mut child, &tmp);
        std::thread::sleep(Duration::from_millis(attempt * 4));
        child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush runs
        child.wait().unwrap();

        let s = load(dir.path())
            .expect("the snapshot survives the kill")
            .expect("a snapshot");
        assert_eq!(s.len(), SERIES);
        assert_eq!(stamps(&s).len(), 1, "a mix of two saves");
        let (tmp_len, state_len) = (
            std::fs::metadata(&tmp).map_or(0, |m| m.len()),
            std::fs::metadata(&state).unwrap().len(),
        );
        if tmp_len > 0 && tmp_len < state_len {
            partial += 1;
            // The interrupted save itself is refused, not half-loaded.
            let err = load_file(&tmp).unwrap_err();
            assert!(matches!(err, PersistError::Truncated { .. }), "{err}");
        }
    }
    assert!(partial > 0, "no kill landed in the middle of a save");

    // Scoring resumes from the snapshot: the next samples are scored, nothing is refitted.
    let plan = Plan {
        jobs: vec![Job {
            model: "m".into(),
            query: "q".into(),
            expr: "cpu".into(),
            step_ms: MIN,
            detector: DetectorConfig::default(),
            cadence: Cadence {
                fit_every_ms: 3_600_000,
                fit_window_ms: 86_400_000,
                score_every_ms: 5 * MIN,
            },
        }],
        joint: Vec::new(),
        retention_ms: 86_400_000,
    };
    let mut src = MemorySource::new();
    for i in 0..3 {
        let samples = (1..=5)
            .map(|k| Sample::new(Timestamp::from_millis(LAST + k * MIN), 100.0))
            .collect();
        src.insert(
            "q",
            Series {
                labels: labels(i),
                samples,
            },
        );
    }
    let (mut sched, dropped) =
        Scheduler::with_store(plan, load(dir.path()).unwrap().unwrap()).unwrap();
    assert_eq!(dropped, 0);
    let r = sched.step(Timestamp::from_millis(LAST + 5 * MIN), &mut src);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        (r.created, r.fitted, r.series_scored, r.samples_scored),
        (0, 0, 3, 15)
    );
}
