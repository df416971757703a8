//! `tokenformer convert`: any accepted model into the project's layout
//! (`config.json` + `model.safetensors` with readable names + `tokenizer.json`), and models written
//! in the authors' hub layout (`tokenformer synthetic --layout authors`).

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::model::{Model, WeightData};
use crate::weights::pytorch::write::write_state_dict;
use crate::weights::safetensors::{write, Stored};
use crate::weights::{Naming, TensorRole};

/// The model's weights as one safetensors file with project names, each tensor in the dtype the
/// model stores it in (quantized values as Vᵀ, see [`crate::weights::safetensors`]).
pub fn to_safetensors(model: &Model) -> Result<Vec<u8>> {
    let layers = model.config.num_layers;
    let roles = TensorRole::all(layers);
    // Floats as f32 for the writer (which rounds f16 tensors back to their stored values exactly).
    let floats: Vec<Cow<'_, [f32]>> = roles
        .iter()
        .map(|&role| match model.stored(role) {
            Some(WeightData::Quant(_)) => Cow::Borrowed(&[][..]),
            _ => model.tensor(role).1,
        })
        .collect();
    write(roles.iter().zip(&floats).map(|(&role, values)| {
        let name = role.name(Naming::Project, layers);
        match model.stored(role) {
            Some(WeightData::Quant(q)) => (name, vec![q.rows(), q.cols], Stored::Blocks(q.format, &q.blocks)),
            Some(WeightData::F16(_)) => (name, model.shape(role), Stored::F16(values)),
            _ => (name, model.shape(role), Stored::F32(values)),
        }
    }))
}

/// Writes `model` as the authors' hub folder: `config.json` (their keys), `tokenizer.json`, and a
/// float32 `pytorch_model.bin` laid out as `torch.save` writes it (official tensor names), one
/// tensor at a time. Returns the weights file's size.
pub fn write_authors_folder(model: &Model, tokenizer: &[u8], out_dir: &std::path::Path) -> Result<u64> {
    use crate::weights::{Naming, TensorRole};
    let io = |path: &std::path::Path, e: std::io::Error| Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| io(out_dir, e))?;
    for (name, data) in [("config.json", model.config.to_json().into_bytes()), ("tokenizer.json", tokenizer.to_vec())] {
        let path = out_dir.join(name);
        std::fs::write(&path, data).map_err(|e| io(&path, e))?;
    }
    let layers = model.config.num_layers;
    let roles = TensorRole::all(layers);
    let names: Vec<(String, Vec<usize>)> =
        roles.iter().map(|&r| (r.name(Naming::Authors, layers), model.shape(r))).collect();
    let path = out_dir.join("pytorch_model.bin");
    let file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
    let mut out = std::io::BufWriter::with_capacity(8 << 20, file);
    write_state_dict(&mut out, "pytorch_model", &names, &mut |i| model.tensor(roles[i]).1.into_owned())
        .map_err(|e| io(&path, e))
}
