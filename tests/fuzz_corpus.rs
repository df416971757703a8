//! Replays the committed fuzz corpora (fuzz/corpus/<target>/, grown by `tools/fuzz.sh`) through the
//! same entry points the fuzz targets use, on stable Rust: every input must give a result or an error,
//! never a panic. The seeds (seed-*) are valid models, so the fuzzers start from inputs that load.

use std::path::Path;

use tokenformer::fuzzing;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.iter().any(|(name, _)| name.starts_with("seed-")), "{target}: no seeds");
    files
}

/// A fuzz target: its corpus folder and its entry point.
type Target = (&'static str, fn(&[u8]));

#[test]
fn every_corpus_input_gives_a_result_or_an_error() {
    let targets: [Target; 5] = [
        ("safetensors_index", fuzzing::safetensors_index),
        ("pytorch_state_dict", fuzzing::pytorch_state_dict),
        ("weights_stream", fuzzing::weights_stream),
        ("config", fuzzing::config),
        ("load_model", fuzzing::load_model),
    ];
    for (target, run) in targets {
        let inputs = corpus(target);
        for (_, data) in &inputs {
            run(data);
        }
        eprintln!("{target}: {} inputs replayed", inputs.len());
    }
}

#[test]
fn the_seeds_are_valid_models() {
    for (name, data) in corpus("load_model").into_iter().filter(|(n, _)| n.starts_with("seed-")) {
        let split = data.iter().position(|&b| b == 0).unwrap();
        let config = tokenformer::ModelConfig::from_json(&data[..split]).unwrap();
        let model =
            tokenformer::Model::from_file(config, 1, &data[split + 1..], tokenformer::Dtype::F32, None, &mut |_, _| {});
        assert!(model.is_ok(), "{name}: {:?}", model.err());
    }
    for (name, data) in corpus("config").into_iter().filter(|(n, _)| n.starts_with("seed-")) {
        assert!(tokenformer::ModelConfig::from_json(&data).is_ok(), "{name}");
    }
}
