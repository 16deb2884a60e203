//! Both models on seeded data shaped like a pod's metrics: CPU, memory and latency all follow
//! traffic (a daily cycle plus noise), the error rate is independent noise.

use portent_core::seeded::gauss;

use super::*;

const CPU: usize = 0;
const MEMORY: usize = 1;
const LATENCY: usize = 2;

fn schema() -> FeatureSet {
    FeatureSet::new(["cpu", "memory", "latency", "errors"]).unwrap()
}

/// A pod's row at a given traffic level (1 is the daily mean), noise from draw `i`.
fn pod(traffic_cpu: f64, traffic_mem: f64, traffic_lat: f64, i: u64) -> [f64; 4] {
    let g = |k: u64| gauss(i * 8 + k);
    [
        2.0 * traffic_cpu + 0.05 * g(1),
        1e9 * (0.5 + 0.3 * traffic_mem) + 1e7 * g(2),
        0.05 + 0.03 * traffic_lat + 0.002 * g(3),
        0.2 + 0.05 * g(4),
    ]
}

/// `n` healthy minutes; `seed` picks independent noise.
fn healthy(n: usize, seed: u64) -> Vec<[f64; 4]> {
    (0..n as u64)
        .map(|m| {
            let i = seed * 10_000_000 + m;
            let day = std::f64::consts::TAU * m as f64 / 1440.0;
            let t = 1.0 + 0.4 * day.sin() + 0.1 * gauss(i * 8);
            pod(t, t, t, i)
        })
        .collect()
}

/// Memory as at 40% more traffic than usual, latency as at 40% less: every value is ordinary
/// (each is exceeded by more than 5% of the training rows), the pair never happens.
fn joint_anomaly(i: u64) -> [f64; 4] {
    pod(1.0, 1.4, 0.6, 900_000_000 + i)
}

/// Healthy rows with `fraction` of them replaced by gross outliers (one feature far out).
fn contaminated(n: usize, seed: u64, fraction: f64) -> Vec<[f64; 4]> {
    let mut rows = healthy(n, seed);
    let every = (1.0 / fraction).round() as usize;
    for (k, r) in rows.iter_mut().enumerate().filter(|(k, _)| k % every == 3) {
        let f = k / every % 4;
        r[f] = r[f] * 4.0 + 1.0;
    }
    rows
}

fn forest(rows: &[[f64; 4]]) -> IsolationForest {
    IsolationForestConfig::default()
        .fit(schema(), rows)
        .unwrap()
}

fn autoencoder(rows: &[[f64; 4]]) -> Autoencoder {
    AutoencoderConfig::default().fit(schema(), rows).unwrap()
}

fn models(rows: &[[f64; 4]]) -> Vec<(&'static str, Box<dyn ScoreRows>)> {
    vec![
        ("isolation_forest", Box::new(forest(rows))),
        ("autoencoder", Box::new(autoencoder(rows))),
    ]
}

/// The fraction of `values` strictly beyond `x` on `x`'s side of the median: how rare `x` is
/// on its own.
fn marginal_tail(values: &[f64], x: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let med = quantile_sorted(&v, 0.5);
    let beyond = if x >= med {
        v.iter().filter(|&&y| y > x).count()
    } else {
        v.iter().filter(|&&y| y < x).count()
    };
    beyond as f64 / v.len() as f64
}

#[test]
fn feature_sets_are_non_empty_and_unique() {
    assert_eq!(
        FeatureSet::new(Vec::<String>::new()),
        Err(FeatureError::Empty)
    );
    assert_eq!(
        FeatureSet::new(["cpu", "cpu"]),
        Err(FeatureError::Duplicate("cpu".into()))
    );
    assert_eq!(
        FeatureSet::new(["cpu", ""]),
        Err(FeatureError::EmptyName(1))
    );
    let s = schema();
    assert_eq!(s.width(), 4);
    assert_eq!(s.index_of("latency"), Some(LATENCY));
    assert!(serde_json::from_str::<FeatureSet>(r#"["a","a"]"#).is_err());
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<FeatureSet>(&json).unwrap(), s);
}

#[test]
fn a_joint_anomaly_normal_on_every_feature_scores_high() {
    let train = healthy(10_080, 1);
    for (name, model) in models(&train) {
        for k in 0..5 {
            let row = joint_anomaly(k);
            // Each value alone is ordinary: more than 5% of the training values lie beyond it.
            for (j, x) in row.iter().enumerate() {
                let col: Vec<f64> = train.iter().map(|r| r[j]).collect();
                assert!(marginal_tail(&col, *x) > 0.05, "feature {j} of {row:?}");
            }
            let s = model.score_row(&row).unwrap();
            assert!(s.score.get() >= 0.8, "{name}: {s:?}");
            // The broken pair carries the score.
            let pair = s.contributions[MEMORY] + s.contributions[LATENCY];
            assert!(pair > 0.5, "{name}: {s:?}");
        }
        let normal = model.score_row(&pod(1.0, 1.0, 1.0, 5)).unwrap();
        assert!(normal.score.get() < 0.5, "{name}: {normal:?}");
    }
}

#[test]
fn a_gross_outlier_names_its_feature() {
    let train = healthy(10_080, 2);
    for (name, model) in models(&train) {
        for (f, factor) in [(CPU, 3.0), (MEMORY, 2.0), (LATENCY, 5.0)] {
            let mut row = pod(1.0, 1.0, 1.0, 77);
            row[f] *= factor;
            let s = model.score_row(&row).unwrap();
            assert!(s.score.get() >= 0.8, "{name}, feature {f}: {s:?}");
            assert_eq!(s.top_feature(), Some(f), "{name}: {s:?}");
            assert!((s.contributions.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }
}

#[test]
fn two_percent_of_gross_outliers_in_training_do_not_hide_anomalies() {
    let train = contaminated(10_080, 3, 0.02);
    for (name, model) in models(&train) {
        let joint: Vec<f64> = (0..5)
            .map(|k| model.score_row(&joint_anomaly(k)).unwrap().score.get())
            .collect();
        assert!(joint.iter().all(|s| *s >= 0.8), "{name}: {joint:?}");
        let mut row = pod(1.0, 1.0, 1.0, 78);
        row[LATENCY] *= 4.0;
        let s = model.score_row(&row).unwrap();
        assert!(s.score.get() >= 0.8, "{name}: {s:?}");
    }
}

/// At most one row in 1,440 (one a day at one-minute steps) crosses the alert threshold on
/// clean held-out data from the training distribution.
#[test]
fn few_false_positives_on_clean_held_out_data() {
    let train = healthy(10_080, 4);
    let test = healthy(10_080, 5);
    for (name, model) in models(&train) {
        let alerts = test
            .iter()
            .filter(|r| model.score_row(*r).unwrap().score >= Score::ALERT)
            .count();
        let rate = alerts as f64 / test.len() as f64;
        eprintln!(
            "{name}: {alerts} of {} clean rows >= 0.8 ({rate:.5})",
            test.len()
        );
        assert!(rate <= 1.0 / 1440.0, "{name}: {rate}");
    }
}

#[test]
fn the_same_seed_gives_the_same_scores() {
    let train = contaminated(3000, 6, 0.02);
    let probe = healthy(200, 7);
    let raws = |m: &dyn ScoreRows| -> Vec<u64> {
        probe
            .iter()
            .map(|r| m.score_row(r).unwrap().raw.to_bits())
            .collect()
    };
    let f1 = forest(&train);
    assert_eq!(raws(&f1), raws(&forest(&train)));
    let other = IsolationForestConfig {
        seed: 9,
        ..Default::default()
    };
    assert_ne!(raws(&f1), raws(&other.fit(schema(), &train).unwrap()));
    let a1 = autoencoder(&train);
    assert_eq!(raws(&a1), raws(&autoencoder(&train)));
    let other = AutoencoderConfig {
        seed: 9,
        ..Default::default()
    };
    assert_ne!(raws(&a1), raws(&other.fit(schema(), &train).unwrap()));
}

#[test]
fn nan_and_infinite_rows_are_skipped_in_training_and_scored_as_missing() {
    let mut train = healthy(3000, 8);
    for k in (0..3000).step_by(50) {
        train[k][k % 4] = if k % 100 == 0 {
            f64::NAN
        } else {
            f64::INFINITY
        };
    }
    for (name, model) in models(&train) {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let s = model.score_row(&[1.0, bad, 0.08, 0.2]).unwrap();
            assert!(s.missing && s.score == Score::ZERO, "{name}: {s:?}");
            assert_eq!(s.top_feature(), None);
        }
        assert_eq!(
            model.score_row(&[1.0, 2.0]),
            Err(FeatureError::Width {
                expected: 4,
                got: 2
            })
        );
        assert!(model.score_row(&pod(1.0, 1.0, 1.0, 3)).unwrap().score.get() < 0.5);
    }
    // Too few usable rows, or a row of the wrong width, is a fit error, not a panic.
    let nans = vec![[f64::NAN; 4]; 500];
    assert!(matches!(
        IsolationForestConfig::default().fit(schema(), &nans),
        Err(FitError::NotEnoughData { got: 0, .. })
    ));
    let ragged = vec![vec![1.0, 2.0], vec![1.0]];
    assert!(matches!(
        AutoencoderConfig::default().fit(FeatureSet::new(["a", "b"]).unwrap(), &ragged),
        Err(FitError::Config(_))
    ));
}

#[test]
fn fitted_models_round_trip_exactly() {
    let train = healthy(3000, 10);
    let probe: Vec<[f64; 4]> = healthy(100, 11)
        .into_iter()
        .chain((0..5).map(joint_anomaly))
        .collect();
    let f = forest(&train);
    let back: IsolationForest = postcard::from_bytes(&postcard::to_stdvec(&f).unwrap()).unwrap();
    assert_eq!(back, f);
    let a = autoencoder(&train);
    let back_a: Autoencoder = postcard::from_bytes(&postcard::to_stdvec(&a).unwrap()).unwrap();
    assert_eq!(back_a, a);
    for r in &probe {
        let (x, y) = (f.score_row(r).unwrap(), back.score_row(r).unwrap());
        assert_eq!(x.raw.to_bits(), y.raw.to_bits());
        assert_eq!(x.score.get().to_bits(), y.score.get().to_bits());
        let (x, y) = (a.score_row(r).unwrap(), back_a.score_row(r).unwrap());
        assert_eq!(x.raw.to_bits(), y.raw.to_bits());
        assert_eq!(x.contributions, y.contributions);
    }
}

#[test]
fn the_window_keeps_the_most_recent_rows() {
    // An old regime the window leaves out: the new regime's rows are ordinary, the old ones not.
    let mut rows: Vec<[f64; 4]> = healthy(2000, 12)
        .into_iter()
        .map(|mut r| {
            r[CPU] += 10.0;
            r
        })
        .collect();
    rows.extend(healthy(2000, 13));
    let config = IsolationForestConfig {
        window: 2000,
        ..Default::default()
    };
    let f = config.fit(schema(), &rows).unwrap();
    assert!(f.score_row(&pod(1.0, 1.0, 1.0, 1)).unwrap().score.get() < 0.5);
    assert!(f.score_row(&rows[0]).unwrap().score.get() >= 0.8);
}

#[test]
fn calibration_is_monotone_and_pins_its_knots() {
    let raw: Vec<f64> = (0..10_000).map(|i| f64::from(i) / 10_000.0).collect();
    let c = Calibration::fit(&raw, 0.0);
    assert!((c.surprise(0.5) - 2f64.log10()).abs() < 1e-3);
    assert!((c.surprise(0.95) - 20f64.log10()).abs() < 1e-2);
    let mut last = -1.0;
    for k in 0..300 {
        let s = c.surprise(f64::from(k) / 200.0);
        assert!(s >= last);
        last = s;
    }
    assert_eq!(c.score(f64::NAN), Score::ZERO);
    // Anomalies in the window (the top 2%, absurdly high) do not stretch the tail when they are
    // set aside.
    let mut dirty = raw.clone();
    dirty[9800..].iter_mut().for_each(|x| *x *= 1000.0);
    let d = Calibration::fit(&dirty, 0.02);
    assert!((d.surprise(1.2) - c.surprise(1.2)).abs() < 0.5);
    assert!(d.score(2.0) >= Score::ALERT);
    // Far past the data the tail goes on: scores saturate towards 1.
    assert!(c.score(3.0).get() > 0.99);
}

#[test]
fn combination_is_a_noisy_or_of_the_strongest_evidence() {
    let row = RowScore {
        score: Score::saturating(0.6),
        raw: 0.7,
        contributions: vec![0.5, 0.5, 0.0],
        missing: false,
    };
    let uni = [Score::ZERO, Score::saturating(0.1), Score::saturating(0.6)];
    let e = combine(&row, &uni).unwrap();
    assert!((e.score.get() - 0.84).abs() < 1e-12);
    assert_eq!(e.univariate, Score::saturating(0.6));
    assert!((e.contributions.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert_eq!(e.top_feature(), Some(2));
    // Many metrics wiggling a little add nothing: only the strongest one counts.
    let quiet = RowScore::missing(3);
    let e = combine(&quiet, &[Score::saturating(0.3); 3]).unwrap();
    assert!((e.score.get() - 0.3).abs() < 1e-12);
    assert!(combine(&quiet, &[Score::ZERO; 2]).is_err());
    let none = combine(&quiet, &[Score::ZERO; 3]).unwrap();
    assert_eq!(none.score, Score::ZERO);
    assert_eq!(none.top_feature(), None);
}

#[test]
fn a_joint_anomaly_that_univariate_scores_miss_reaches_the_entity_score() {
    let train = healthy(10_080, 14);
    let f = forest(&train);
    let row = f.score_row(&joint_anomaly(1)).unwrap();
    let e = combine(&row, &[Score::saturating(0.05); 4]).unwrap();
    assert!(e.score >= Score::ALERT, "{e:?}");
    assert!(
        e.contributions[MEMORY] + e.contributions[LATENCY] > 0.5,
        "{e:?}"
    );
}

#[test]
fn scoring_many_rows_at_once_is_scoring_them_one_by_one() {
    let train = healthy(3000, 15);
    let mut probe: Vec<[f64; 4]> = healthy(50, 16);
    probe[7][2] = f64::NAN;
    probe.push(joint_anomaly(3));
    let f = forest(&train);
    let a = autoencoder(&train);
    let batch = f.score_rows(&probe).unwrap();
    let ae_batch = a.score_rows(&probe).unwrap();
    for (k, r) in probe.iter().enumerate() {
        for (one, many) in [
            (f.score_row(r).unwrap(), &batch[k]),
            (a.score_row(r).unwrap(), &ae_batch[k]),
        ] {
            assert_eq!(one.missing, many.missing);
            assert_eq!(one.raw.to_bits(), many.raw.to_bits());
            assert_eq!(one.score, many.score);
            assert_eq!(one.contributions, many.contributions);
        }
    }
    assert!(batch[7].missing);
    assert!(f.score_rows(&[vec![1.0]]).is_err());
}

#[test]
fn quantiles_by_selection_are_the_sorted_ones_to_the_bit() {
    let mut rng = Rng::new(3, 0);
    for n in [1usize, 2, 3, 10, 101, 1_000] {
        // Ties, signed zeros and a wide range, as features of real rows have.
        let v: Vec<f64> = (0..n)
            .map(|i| match i % 5 {
                0 => 0.0,
                1 => -0.0,
                2 => (rng.uniform() * 10.0).floor(),
                _ => (rng.uniform() - 0.5) * 1e6,
            })
            .collect();
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let mut w = v.clone();
        let median = quantile_select(&mut w, 0.5);
        let [q1, q3] = outer_quartiles(&mut w);
        let quartiles = [q1, median, q3].map(f64::to_bits);
        let expected = [0.25, 0.5, 0.75].map(|q| quantile_sorted(&sorted, q).to_bits());
        assert_eq!(quartiles, expected, "n {n}");
        for q in [0.0, 0.25, 0.5, 0.75, 0.98, 1.0] {
            let mut w = v.clone();
            assert_eq!(
                quantile_select(&mut w, q).to_bits(),
                quantile_sorted(&sorted, q).to_bits(),
                "n {n}, q {q}"
            );
        }
    }
}
