//! `tokenformer convert`: any accepted model into the project's layout
//! (`config.json` + `model.safetensors` with readable names + `tokenizer.json`).

use crate::error::Result;
use crate::model::Model;
use crate::weights::safetensors::{write, StoreDtype};

/// The model's weights as one safetensors file, project names, f32 or f16.
pub fn to_safetensors(model: &Model, dtype: StoreDtype) -> Result<Vec<u8>> {
    let tensors = model.tensors();
    write(tensors.iter().map(|(name, shape, data)| (name.clone(), shape.clone(), &data[..])), dtype)
}
