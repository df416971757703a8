//! Single operations against the float64 reference: the Pattention layer (all three
//! normalisations, including a zero input row) and the sampler's random numbers.

mod common;

use serde::Deserialize;
use tokenformer::config::NormActivation;
use tokenformer::cpu::kernels::normalize_scores;
use tokenformer::cpu::pattention;
use tokenformer::model::{Pattention, WeightData};
use tokenformer::sampling::{pcg_hash, uniform};

#[derive(Deserialize)]
struct PattentionCase {
    kind: String,
    x: Vec<Vec<f64>>,
    keys: Vec<Vec<f64>>,
    values: Vec<Vec<f64>>,
    theta: Vec<Vec<f64>>,
    out: Vec<Vec<f64>>,
}

fn flat(rows: &[Vec<f64>]) -> Vec<f32> {
    rows.iter().flatten().map(|&v| v as f32).collect()
}

#[test]
fn pattention_matches_the_reference_for_every_normalisation() {
    let path = common::fixture_dir("pattention.json");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases: Vec<PattentionCase> = serde_json::from_value(cases["cases"].clone()).unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let activation = NormActivation::parse(&case.kind).unwrap();
        let (t, n, d_in, d_out) = (case.x.len(), case.keys.len(), case.x[0].len(), case.values[0].len());
        // Theta on its own: scores, then the row-wise normalisation.
        let keys = flat(&case.keys);
        for (row, want) in case.x.iter().zip(&case.theta) {
            let mut scores: Vec<f32> =
                keys.chunks_exact(d_in).map(|k| k.iter().zip(row).map(|(a, &b)| a * b as f32).sum()).collect();
            normalize_scores(&mut scores, activation);
            let err = common::max_abs_diff(scores.iter().map(|&v| v as f64), want.iter().copied());
            assert!(err < 1e-5, "{}: theta max |error| {err:e}", case.kind);
        }
        let layer = Pattention {
            n,
            key_param_tokens: WeightData::F32(keys),
            value_param_tokens: WeightData::F32(flat(&case.values)),
        };
        let mut out = vec![0f32; t * d_out];
        pattention(&flat(&case.x), t, &layer, activation, &mut out);
        let err = common::max_abs_diff(out.iter().map(|&v| v as f64), case.out.iter().flatten().copied());
        assert!(err < 1e-5, "{}: out max |error| {err:e}", case.kind);
    }
}

#[test]
fn random_numbers_match_the_specification() {
    let path = common::fixture_dir("rng.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let (seed, step) = (c["seed"].as_u64().unwrap() as u32, c["step"].as_u64().unwrap() as u32);
        assert_eq!(pcg_hash(pcg_hash(seed) ^ step) as u64, c["hash"].as_u64().unwrap(), "seed {seed} step {step}");
        assert_eq!(uniform(seed, step) as f64, c["uniform"].as_f64().unwrap(), "seed {seed} step {step}");
    }
}
