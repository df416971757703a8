//! Entry points of the fuzz targets (`fuzz/`, run by `tools/fuzz.sh`) and of the corpus replay test
//! (`tests/fuzz_corpus.rs`): each feeds arbitrary bytes to one parser of outside data. Any `Err` is
//! a correct answer; only a panic, a hang, a crash or a runaway allocation is a bug.

use crate::config::ModelConfig;
use crate::model::Model;
use crate::weights::{pytorch, safetensors};

/// The safetensors header reader.
pub fn safetensors_index(data: &[u8]) {
    let _ = safetensors::index(&data);
}

/// The restricted zip + pickle reader of `pytorch_model.bin`.
pub fn pytorch_state_dict(data: &[u8]) {
    let _ = pytorch::read_state_dict(&data);
}

/// `config.json` parsing and validation.
pub fn config(data: &[u8]) {
    let _ = ModelConfig::from_json(data);
}

/// The whole loader: `config.json`, a NUL byte, then a weights file in either format.
pub fn load_model(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0) else { return };
    let (config, weights) = (&data[..split], &data[split + 1..]);
    if let Ok(config) = ModelConfig::from_json(config) {
        let _ = Model::from_file(config, 1, &weights, &mut |_, _| {});
    }
}
