//! `tokenformer convert`: any accepted model into the project's layout
//! (`config.json` + `model.safetensors` with readable names + `tokenizer.json`), and models written
//! in the authors' hub layout (`tokenformer synthetic --layout authors`).

use crate::error::{Error, Result};
use crate::model::Model;
use crate::weights::pytorch::write::write_state_dict;
use crate::weights::safetensors::{write, StoreDtype};

/// The model's weights as one safetensors file, project names, f32 or f16.
pub fn to_safetensors(model: &Model, dtype: StoreDtype) -> Result<Vec<u8>> {
    let tensors = model.tensors();
    write(tensors.iter().map(|(name, shape, data)| (name.clone(), shape.clone(), &data[..])), dtype)
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
