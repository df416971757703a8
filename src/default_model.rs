//! The project's own small TokenFormer (`models/tokenformer-moby`, see its model card), built into
//! the binary so `tokenformer generate` writes English with no download and no `--model`.

use crate::dtype::Dtype;
use crate::error::Result;
use crate::loader::load_from_bytes;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

pub const NAME: &str = "tokenformer-moby (built in)";
pub const CONFIG: &[u8] = include_bytes!("../models/tokenformer-moby/config.json");
pub const WEIGHTS: &[u8] = include_bytes!("../models/tokenformer-moby/model.safetensors");
pub const TOKENIZER: &[u8] = include_bytes!("../models/tokenformer-moby/tokenizer.json");

/// The built-in model, stored as `dtypes` says (see [`load_from_bytes`]).
pub fn load(dtypes: (Dtype, Option<Dtype>)) -> Result<(Model, Tokenizer)> {
    load_from_bytes(CONFIG, WEIGHTS, TOKENIZER, dtypes, &mut |_, _| {})
}
