//! From a weights stream to a model: which role each tensor plays (checked against the config),
//! and the CPU backend's sink that stores rows as they arrive, in the dtype each tensor is
//! announced in (a [`Converter`](super::storage::Converter) in front chooses it).

use std::collections::HashMap;

use super::storage::Converter;
use super::{Block, Dtype, Model, Pattention, Projection, WeightData};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::quant::GROUP;
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
            // Quantized matrices hold whole groups (their rows may be padded to them), and value
            // tensors are stored transposed.
            let quant = t.dtype.quant().is_some();
            let cols_match =
                |c: usize, want: usize| if quant { c.div_ceil(GROUP) == want.div_ceil(GROUP) } else { c == want };
            let padded =
                |want: usize| if quant { format!("{want} (or its {GROUP}-value groups)") } else { want.to_string() };
            let (ok, expected) = match (role, t.shape.as_slice()) {
                (TensorRole::FinalNormWeight | TensorRole::FinalNormBias, s) => {
                    (!quant && s == [d], format!("[{d}] as floats"))
                }
                (TensorRole::ParamTokens { proj, values: true, .. }, &[r, c]) if quant => {
                    let n = proj.slots(config);
                    (r == d && cols_match(c, n), format!("[{d}, {}] (values quantized as Vᵀ)", padded(n)))
                }
                (TensorRole::ParamTokens { proj, .. }, s) => {
                    let n = proj.slots(config);
                    (matches!(s, &[r, c] if r == n && cols_match(c, d)), format!("[{n}, {}]", padded(d)))
                }
                (TensorRole::Embedding, s) => {
                    (matches!(s, &[r, c] if r > 0 && cols_match(c, d)), format!("[rows, {}]", padded(d)))
                }
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

/// Values per stored row of tensor `t` (of `role`) in a model of `config`. A float tensor says so
/// itself; a quantized row holds whole groups, so the config says how many of its values are real:
/// value tensors are stored as Vᵀ (rows of n slots), the others have rows of the hidden size.
pub(crate) fn row_values(t: &TensorInfo, role: TensorRole, config: &ModelConfig) -> usize {
    match role {
        _ if t.dtype.quant().is_none() => t.cols(),
        TensorRole::ParamTokens { proj, values: true, .. } => proj.slots(config),
        _ => config.hidden_size,
    }
}

/// The CPU backend's sink: each tensor is allocated in its announced dtype (f32, f16, or quantized
/// blocks) when the stream lists it, and rows are stored as they arrive, so no f32 copy of a whole
/// tensor exists.
pub struct ModelBuilder<'p> {
    config: ModelConfig,
    vocab_size: usize,
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
    /// A model of `config` whose tokenizer has `vocab_size` ids; `progress(done, total)` is called
    /// as tensors complete.
    pub fn new(config: ModelConfig, vocab_size: usize, progress: Option<&'p mut dyn FnMut(usize, usize)>) -> Self {
        ModelBuilder {
            config,
            vocab_size,
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

/// An empty matrix for `t`'s rows of `cols` values in its dtype, reserved fallibly: a model larger
/// than memory (a tab's wasm heap) is an error, not an abort.
fn reserve(t: &TensorInfo, cols: usize) -> Result<WeightData> {
    let dtype = t.dtype.storage();
    let rows = t.rows();
    let bytes = (rows as u64).saturating_mul(dtype.row_bytes(cols) as u64);
    let oom = || Error::OutOfMemory { name: t.name.clone(), bytes };
    let mut data = WeightData::empty(dtype, cols);
    let values = rows.checked_mul(cols);
    let reserved = match &mut data {
        WeightData::F32(v) => values.is_some_and(|n| v.try_reserve_exact(n).is_ok()),
        WeightData::F16(v) => values.is_some_and(|n| v.try_reserve_exact(n).is_ok()),
        WeightData::Quant(q) => usize::try_from(bytes).is_ok_and(|b| q.blocks.try_reserve_exact(b).is_ok()),
    };
    if !reserved {
        return Err(oom());
    }
    Ok(data)
}

impl TensorSink for ModelBuilder<'_> {
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
        let plan = TensorPlan::new(&self.config, self.vocab_size, tensors)?;
        for (t, &role) in tensors.iter().zip(&plan.roles) {
            let cols = row_values(t, role, &self.config);
            self.data.push(reserve(t, cols)?);
            self.missing.push(t.rows());
            self.cols.push(cols.max(1));
            self.names.push(t.name.clone());
        }
        self.plan = Some(plan);
        Ok(())
    }

    fn rows(&mut self, index: usize, _row0: usize, values: &[f32]) -> Result<()> {
        self.data[index].extend_from_f32(values, &self.names[index])?;
        self.arrived(index, values.len() / self.cols[index]);
        Ok(())
    }

    fn blocks(&mut self, index: usize, _row0: usize, blocks: &[u8]) -> Result<()> {
        let WeightData::Quant(q) = &mut self.data[index] else {
            return Err(Error::Usage(format!("{} arrived as blocks but was announced as floats", self.names[index])));
        };
        q.blocks.extend_from_slice(blocks);
        let rows = blocks.len() / q.row_bytes().max(1);
        self.arrived(index, rows);
        Ok(())
    }
}

impl ModelBuilder<'_> {
    /// Counts `rows` more rows of tensor `index`, reporting progress when it is complete.
    fn arrived(&mut self, index: usize, rows: usize) {
        self.missing[index] -= rows;
        if self.missing[index] == 0 {
            self.done += 1;
            if let Some(progress) = self.progress.as_mut() {
                progress(self.done, self.names.len());
            }
        }
    }
}

impl Model {
    /// Reads a whole model from a weights file in either format and naming (the same stream the
    /// browser reads), checking every name and shape; `progress(done, total)` is called as
    /// tensors complete. The parameter tokens are stored in `dtype`, the embedding in `embedding`
    /// (default: [`Dtype::default_embedding`]).
    pub fn from_file(
        config: ModelConfig,
        vocab_size: usize,
        file: &[u8],
        dtype: Dtype,
        embedding: Option<Dtype>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let builder = ModelBuilder::new(config.clone(), vocab_size, Some(progress));
        let mut converter = Converter::new(config, vocab_size, dtype, embedding, builder);
        stream_file(file, &mut converter)?;
        converter.finish()?.finish()
    }
}
