//! How long NAB scoring takes on the whole corpus, the cost a threshold-tuning loop pays per
//! evaluation.
//!
//! The scores come from a seeded generator and are all distinct, the worst case for the
//! sweep: every row is its own candidate threshold. Scores rise inside windows so that the
//! optimum is a real threshold, not "detect nothing".

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use portent_eval::nab::{Corpus, Profile, Sweep};

fn scores(corpus: &Corpus) -> Vec<Vec<f64>> {
    let mut state: u64 = 42;
    let mut next = move || {
        // splitmix64, mapped to [0, 1).
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    corpus
        .files
        .iter()
        .map(|f| {
            (0..f.len())
                .map(|i| {
                    let u = next();
                    if f.in_window(i) {
                        u.powf(0.2)
                    } else {
                        u.powi(3)
                    }
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/nab");
    let Ok(corpus) = Corpus::load(&root) else {
        eprintln!("NAB corpus not found at {}; skipping", root.display());
        return;
    };
    let scores = scores(&corpus);
    let profiles = Profile::all();
    c.bench_function("nab_score_three_profiles", |b| {
        b.iter(|| {
            let sweep = Sweep::new(&corpus, black_box(&scores)).ok()?;
            profiles
                .iter()
                .map(|p| sweep.optimize(p).ok())
                .collect::<Option<Vec<_>>>()
        });
    });
    let sweep = Sweep::new(&corpus, &scores);
    c.bench_function("nab_optimize_one_profile", |b| {
        b.iter(|| {
            sweep
                .as_ref()
                .ok()
                .map(|s| s.optimize(black_box(&profiles[0])))
        });
    });
    c.bench_function("nab_load_corpus", |b| {
        b.iter(|| Corpus::load(black_box(&root)).is_ok());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
