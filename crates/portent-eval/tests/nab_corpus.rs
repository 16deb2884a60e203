//! The NAB module against the real corpus in `shared/datasets/nab`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use portent_eval::nab::{
    Corpus, NO_DETECTION_THRESHOLD, Profile, Sweep, results_path, write_null_results, write_results,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/nab")
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| Corpus::load(&root()).unwrap())
}

#[test]
fn corpus_has_the_documented_shape() {
    let c = corpus();
    assert_eq!(c.files.len(), 58);
    assert_eq!(c.rows(), 365_558);
    assert_eq!(c.window_count(), 116);
    // The README's table: category -> (files, rows, windows).
    let mut by_category: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for f in &c.files {
        let e = by_category.entry(f.category.as_str()).or_default();
        *e = (e.0 + 1, e.1 + f.len(), e.2 + f.windows.len());
    }
    let expected: BTreeMap<&str, (usize, usize, usize)> = [
        ("artificialNoAnomaly", (5, 20_160, 0)),
        ("artificialWithAnomaly", (6, 24_192, 6)),
        ("realAWSCloudwatch", (17, 67_740, 30)),
        ("realAdExchange", (6, 9_610, 14)),
        ("realKnownCause", (7, 69_561, 19)),
        ("realTraffic", (7, 15_664, 14)),
        ("realTweets", (10, 158_631, 33)),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_category, expected);
    // Sorted by key, and windows are row ranges whose edges carry the windows file's timestamps.
    assert!(c.files.windows(2).all(|p| p[0].key < p[1].key));
    let taxi = c.file("realKnownCause/nyc_taxi.csv").unwrap();
    assert_eq!(taxi.windows.len(), 5);
    assert_eq!(
        taxi.raw_timestamps[taxi.windows[0].start],
        "2014-10-30 15:30:00"
    );
    assert_eq!(
        taxi.raw_timestamps[taxi.windows[0].end],
        "2014-11-03 22:30:00"
    );
    assert_eq!(taxi.raw_timestamps[0], "2014-07-01 00:00:00");
    assert_eq!(taxi.values[0], 10844.0);
    // No window reaches into its file's probationary period (NAB's labeler dropped those).
    assert!(
        c.files
            .iter()
            .all(|f| f.windows.iter().all(|w| w.start >= f.probationary_len()))
    );
}

#[test]
fn profiles_file_holds_the_three_profiles() {
    let mut loaded = Profile::load(&root().join("config/profiles.json")).unwrap();
    let mut builtin = Profile::all().to_vec();
    loaded.sort_by(|a, b| a.name.cmp(&b.name));
    builtin.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(loaded, builtin);
}

#[test]
fn null_detector_scores_zero() {
    let c = corpus();
    let scores: Vec<Vec<f64>> = c.files.iter().map(|f| vec![0.0; f.len()]).collect();
    let sweep = Sweep::new(c, &scores).unwrap();
    let null_raw = [-116.0, -116.0, -232.0];
    for (profile, null_raw) in Profile::all().iter().zip(null_raw) {
        let s = sweep.optimize(profile).unwrap();
        assert_eq!(s.null_raw, null_raw, "{}", profile.name);
        assert_eq!(s.raw, null_raw);
        assert_eq!(s.perfect_raw, 116.0);
        assert_eq!(s.normalized, 0.0);
        assert_eq!(s.threshold, NO_DETECTION_THRESHOLD);
        assert_eq!(
            (s.detected_windows, s.missed_windows, s.false_positives),
            (0, 116, 0)
        );
    }
}

#[test]
fn perfect_detector_scores_one_hundred() {
    let c = corpus();
    let scores: Vec<Vec<f64>> = c
        .files
        .iter()
        .map(|f| {
            let mut s = vec![0.0; f.len()];
            for w in &f.windows {
                s[w.start] = 1.0;
            }
            s
        })
        .collect();
    let sweep = Sweep::new(c, &scores).unwrap();
    for profile in Profile::all() {
        let s = sweep.optimize(&profile).unwrap();
        assert_eq!(s.normalized, 100.0, "{}", profile.name);
        assert_eq!(s.raw, 116.0);
        assert_eq!(s.threshold, 1.0);
        assert_eq!(
            (s.detected_windows, s.missed_windows, s.false_positives),
            (116, 0, 0)
        );
    }
}

#[test]
fn results_layout_for_the_tiny_windows_file() {
    let root = root();
    let tiny =
        Corpus::load_with_windows(&root, &root.join("labels/combined_windows_tiny.json")).unwrap();
    let keys: Vec<&str> = tiny.files.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "realKnownCause/nyc_taxi.csv",
            "realKnownCause/rogue_agent_key_hold.csv"
        ]
    );
    assert_eq!(tiny.window_count(), 7);

    let out = tempfile::tempdir().unwrap();
    let scores: Vec<Vec<f64>> = tiny
        .files
        .iter()
        .map(|f| (0..f.len()).map(|i| (i % 10) as f64 / 10.0).collect())
        .collect();
    write_results(out.path(), "portent", &tiny, &scores).unwrap();
    write_null_results(out.path(), &tiny).unwrap();

    let mut written = Vec::new();
    let mut stack = vec![out.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                written.push(
                    p.strip_prefix(out.path())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    written.sort();
    assert_eq!(
        written,
        [
            "null/realKnownCause/null_nyc_taxi.csv",
            "null/realKnownCause/null_rogue_agent_key_hold.csv",
            "portent/realKnownCause/portent_nyc_taxi.csv",
            "portent/realKnownCause/portent_rogue_agent_key_hold.csv",
        ]
    );

    for (file, scores) in tiny.files.iter().zip(&scores) {
        let text = fs::read_to_string(results_path(out.path(), "portent", file)).unwrap();
        let data = fs::read_to_string(root.join("data").join(&file.key)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), file.len() + 1);
        assert_eq!(lines[0], "timestamp,value,anomaly_score,label");
        let labelled = lines[1..].iter().filter(|l| l.ends_with(",1")).count();
        assert_eq!(
            labelled,
            file.windows.iter().map(|w| w.width()).sum::<usize>()
        );
        // Timestamps verbatim, values and scores read back exactly, row by row.
        for ((line, data_line), (i, score)) in lines[1..]
            .iter()
            .zip(data.lines().skip(1))
            .zip(scores.iter().enumerate())
        {
            let fields: Vec<&str> = line.split(',').collect();
            let data_ts = data_line.split(',').next().unwrap();
            assert_eq!(fields[0], data_ts);
            assert_eq!(fields[1].parse::<f64>().unwrap(), file.values[i]);
            assert_eq!(fields[2].parse::<f64>().unwrap(), *score);
        }
        let null = fs::read_to_string(results_path(out.path(), "null", file)).unwrap();
        assert_eq!(null.lines().count(), file.len() + 1);
    }
}
