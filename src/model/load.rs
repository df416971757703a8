//! From a weights stream to a model: which role each tensor plays (checked against the config),
//! and the CPU backend's sink that decodes rows into place as they arrive.

use std::collections::HashMap;

use super::{Block, CpuDtype, Model, Pattention, Projection, WeightData};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::stream::{stream_file, TensorInfo, TensorSink};
use crate::weights::{naming_of, Naming, TensorRole};

/// The role of every tensor of a file, checked against the config and the tokenizer: every
/// role present once under one naming scheme, each with its shape, and nothing else.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    /// By tensor index, in the file's order.
    pub roles: Vec<TensorRole>,
    /// Rows of the embedding (at least the vocabulary; extra rows are padding).
    pub embedding_rows: usize,
}

impl TensorPlan {
    pub fn new(config: &ModelConfig, vocab_size: usize, tensors: &[TensorInfo]) -> Result<TensorPlan> {
        let layers = config.num_layers;
        let d = config.hidden_size;
        let naming = tensors.first().map(|t| naming_of(&t.name)).unwrap_or(Naming::Authors);
        let by_name: HashMap<String, TensorRole> =
            TensorRole::all(layers).into_iter().map(|r| (r.name(naming, layers), r)).collect();
        let mut roles = Vec::with_capacity(tensors.len());
        let mut found: HashMap<TensorRole, &TensorInfo> = HashMap::new();
        for t in tensors {
            if naming_of(&t.name) != naming {
                return Err(Error::MixedNaming(TensorRole::Embedding.name(naming, layers), t.name.clone()));
            }
            let role = *by_name.get(&t.name).ok_or_else(|| Error::UnexpectedTensor(t.name.clone()))?;
            roles.push(role);
            found.insert(role, t);
        }
        let mut embedding_rows = 0;
        for role in TensorRole::all(layers) {
            let name = role.name(naming, layers);
            let t = found.get(&role).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            let (ok, expected) = match (role, t.shape.as_slice()) {
                (TensorRole::FinalNormWeight | TensorRole::FinalNormBias, s) => (s == [d], format!("[{d}]")),
                (TensorRole::ParamTokens { proj, .. }, s) => {
                    let n = proj.slots(config);
                    (s == [n, d], format!("[{n}, {d}]"))
                }
                (TensorRole::Embedding, s) => (matches!(s, [r, c] if *r > 0 && *c == d), format!("[rows, {d}]")),
            };
            if !ok {
                return Err(Error::TensorShape { name, found: t.shape.clone(), expected });
            }
            if role == TensorRole::Embedding {
                embedding_rows = t.shape[0];
                if vocab_size > embedding_rows {
                    return Err(Error::VocabTooLarge { tokenizer: vocab_size, embedding: embedding_rows });
                }
            }
        }
        Ok(TensorPlan { roles, embedding_rows })
    }
}

/// The CPU backend's sink: each tensor is allocated in the chosen dtype when the file announces
/// it, and rows are converted into place as they arrive, so no f32 copy of a whole tensor exists.
pub struct ModelBuilder<'p> {
    config: ModelConfig,
    vocab_size: usize,
    dtype: CpuDtype,
    plan: Option<TensorPlan>,
    names: Vec<String>,
    data: Vec<WeightData>,
    cols: Vec<usize>,
    /// Rows still to come, by tensor.
    missing: Vec<usize>,
    done: usize,
    progress: Option<&'p mut dyn FnMut(usize, usize)>,
}

impl<'p> ModelBuilder<'p> {
    /// A model of `config` whose tokenizer has `vocab_size` ids, its matrices stored in `dtype`;
    /// `progress(done, total)` is called as tensors complete.
    pub fn new(
        config: ModelConfig,
        vocab_size: usize,
        dtype: CpuDtype,
        progress: Option<&'p mut dyn FnMut(usize, usize)>,
    ) -> Self {
        ModelBuilder {
            config,
            vocab_size,
            dtype,
            plan: None,
            names: Vec::new(),
            data: Vec::new(),
            cols: Vec::new(),
            missing: Vec::new(),
            done: 0,
            progress,
        }
    }

    /// The model, once every tensor has arrived.
    pub fn finish(self) -> Result<Model> {
        let plan = self.plan.ok_or_else(|| Error::Usage("the weights stream ended before its header".into()))?;
        let mut by_role: HashMap<TensorRole, WeightData> = plan.roles.iter().copied().zip(self.data).collect();
        let mut take =
            |role: TensorRole| by_role.remove(&role).ok_or_else(|| Error::MissingTensor(format!("{role:?}")));
        let vector = |w: WeightData| w.to_f32().into_owned();
        let embedding = take(TensorRole::Embedding)?;
        let mut blocks = Vec::with_capacity(self.config.num_layers);
        for layer in 0..self.config.num_layers {
            let mut pattention = |proj: Projection| -> Result<Pattention> {
                Ok(Pattention {
                    n: proj.slots(&self.config),
                    key_param_tokens: take(TensorRole::ParamTokens { layer, proj, values: false })?,
                    value_param_tokens: take(TensorRole::ParamTokens { layer, proj, values: true })?,
                })
            };
            blocks.push(Block {
                query: pattention(Projection::Query)?,
                key: pattention(Projection::Key)?,
                value: pattention(Projection::Value)?,
                proj: pattention(Projection::Proj)?,
                ffn: pattention(Projection::Ffn)?,
            });
        }
        let final_norm_weight = vector(take(TensorRole::FinalNormWeight)?);
        let final_norm_bias = vector(take(TensorRole::FinalNormBias)?);
        Ok(Model {
            config: self.config,
            vocab_size: self.vocab_size,
            embedding,
            embedding_rows: plan.embedding_rows,
            blocks,
            final_norm_weight,
            final_norm_bias,
        })
    }
}

/// An empty buffer of `len` values, reserved fallibly: a model larger than memory (a tab's wasm
/// heap) is an error, not an abort.
fn reserve(dtype: CpuDtype, len: usize, name: &str) -> Result<WeightData> {
    let oom =
        || Error::OutOfMemory { name: name.to_string(), bytes: (len as u64).saturating_mul(dtype.bytes() as u64) };
    Ok(match dtype {
        CpuDtype::F32 => {
            let mut v = Vec::new();
            v.try_reserve_exact(len).map_err(|_| oom())?;
            WeightData::F32(v)
        }
        CpuDtype::F16 => {
            let mut v = Vec::new();
            v.try_reserve_exact(len).map_err(|_| oom())?;
            WeightData::F16(v)
        }
    })
}

impl TensorSink for ModelBuilder<'_> {
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
        let plan = TensorPlan::new(&self.config, self.vocab_size, tensors)?;
        for (t, role) in tensors.iter().zip(&plan.roles) {
            // Norm vectors stay f32 whatever the matrices' dtype.
            let dtype = match role {
                TensorRole::FinalNormWeight | TensorRole::FinalNormBias => CpuDtype::F32,
                _ => self.dtype,
            };
            self.data.push(reserve(dtype, t.rows() * t.cols(), &t.name)?);
            self.missing.push(t.rows());
            self.cols.push(t.cols().max(1));
            self.names.push(t.name.clone());
        }
        self.plan = Some(plan);
        Ok(())
    }

    fn rows(&mut self, index: usize, _row0: usize, values: &[f32]) -> Result<()> {
        self.data[index].extend_from_f32(values, &self.names[index])?;
        let rows = values.len() / self.cols[index];
        self.missing[index] -= rows;
        if self.missing[index] == 0 {
            self.done += 1;
            if let Some(progress) = self.progress.as_mut() {
                progress(self.done, self.names.len());
            }
        }
        Ok(())
    }
}

impl Model {
    /// Reads a whole model from a weights file in either format and naming (the same stream the
    /// browser reads), checking every name and shape; `progress(done, total)` is called as
    /// tensors complete.
    pub fn from_file(
        config: ModelConfig,
        vocab_size: usize,
        file: &[u8],
        dtype: CpuDtype,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let mut builder = ModelBuilder::new(config, vocab_size, dtype, Some(progress));
        stream_file(file, &mut builder)?;
        builder.finish()
    }
}
