//! The model in memory: validated shape plus f32 weights, independent of file format and backend.

use std::borrow::Cow;
use std::collections::HashMap;

use half::f16;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::{index, naming_of, Naming, TensorEntry, TensorRole, WeightsFile};

/// The five Pattention layers of a block, in the order the inspector lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    Query,
    Key,
    Value,
    Proj,
    Ffn,
}

impl Projection {
    pub const ALL: [Projection; 5] = [Self::Query, Self::Key, Self::Value, Self::Proj, Self::Ffn];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Key => "key",
            Self::Value => "value",
            Self::Proj => "proj",
            Self::Ffn => "ffn",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| Error::UnknownProjection(name.to_string()))
    }

    /// Number of parameter tokens of this projection.
    pub fn slots(self, cfg: &ModelConfig) -> usize {
        match self {
            Self::Query | Self::Key | Self::Value => cfg.qkv_slots,
            Self::Proj => cfg.proj_slots,
            Self::Ffn => cfg.ffn_slots,
        }
    }
}

/// How the CPU backend stores a model's large matrices (parameter tokens, embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuDtype {
    F32,
    /// Half the memory and half the bytes read per token; converted to f32 inside the products,
    /// which accumulate in f32.
    F16,
}

impl CpuDtype {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            _ => Err(Error::Usage(format!("unknown dtype {name:?} (f32 or f16)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

/// A weight matrix, row-major, in the dtype the CPU backend computes from.
#[derive(Debug, Clone)]
pub enum WeightData {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl WeightData {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> CpuDtype {
        match self {
            Self::F32(_) => CpuDtype::F32,
            Self::F16(_) => CpuDtype::F16,
        }
    }

    /// The values as f32: borrowed when stored so, widened (exactly) when f16.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            Self::F32(v) => Cow::Borrowed(v),
            Self::F16(v) => Cow::Owned(v.iter().map(|h| h.to_f32()).collect()),
        }
    }

    /// `out.len()` values from `start` on, as f32 (an embedding row).
    pub fn read_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Self::F32(v) => out.copy_from_slice(&v[start..start + out.len()]),
            Self::F16(v) => out.iter_mut().zip(&v[start..]).for_each(|(o, h)| *o = h.to_f32()),
        }
    }

    /// The same values in `dtype`; `name` says which tensor in an error. f16 rounds to nearest
    /// even, as the GPU upload does; a value beyond f16's range (±65504) is refused, not made ∞.
    pub fn into_dtype(self, dtype: CpuDtype, name: &str) -> Result<Self> {
        match (self, dtype) {
            (Self::F32(v), CpuDtype::F16) => {
                let halves: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                if let Some(i) = halves.iter().position(|h| h.is_infinite()) {
                    return Err(Error::Usage(format!(
                        "{name} holds {} at index {i}, beyond f16's range: load it with dtype f32",
                        v[i]
                    )));
                }
                Ok(Self::F16(halves))
            }
            (Self::F16(v), CpuDtype::F32) => Ok(Self::F32(v.iter().map(|h| h.to_f32()).collect())),
            (same, _) => Ok(same),
        }
    }
}

/// One Pattention layer: `n` parameter tokens with keys [n, d_in] and values [n, d_out].
#[derive(Debug, Clone)]
pub struct Pattention {
    pub n: usize,
    pub key_param_tokens: WeightData,
    pub value_param_tokens: WeightData,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub query: Pattention,
    pub key: Pattention,
    pub value: Pattention,
    pub proj: Pattention,
    pub ffn: Pattention,
}

impl Block {
    /// The block with its parameter tokens in `dtype` (block `layer` of `layers`, for errors).
    pub fn into_dtype(self, dtype: CpuDtype, layer: usize, layers: usize) -> Result<Block> {
        let convert = |p: Pattention, proj: Projection| -> Result<Pattention> {
            let name = |values| TensorRole::ParamTokens { layer, proj, values }.name(Naming::Project, layers);
            Ok(Pattention {
                n: p.n,
                key_param_tokens: p.key_param_tokens.into_dtype(dtype, &name(false))?,
                value_param_tokens: p.value_param_tokens.into_dtype(dtype, &name(true))?,
            })
        };
        Ok(Block {
            query: convert(self.query, Projection::Query)?,
            key: convert(self.key, Projection::Key)?,
            value: convert(self.value, Projection::Value)?,
            proj: convert(self.proj, Projection::Proj)?,
            ffn: convert(self.ffn, Projection::Ffn)?,
        })
    }

    pub fn get(&self, proj: Projection) -> &Pattention {
        match proj {
            Projection::Query => &self.query,
            Projection::Key => &self.key,
            Projection::Value => &self.value,
            Projection::Proj => &self.proj,
            Projection::Ffn => &self.ffn,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    /// Ids the tokenizer can produce; embedding rows past it are padding and are never scored.
    pub vocab_size: usize,
    /// Word embedding [embedding_rows, hidden_size], also the output head.
    pub embedding: WeightData,
    pub embedding_rows: usize,
    pub blocks: Vec<Block>,
    pub final_norm_weight: Vec<f32>,
    pub final_norm_bias: Vec<f32>,
}

/// A weights file's tensors by role: names are checked when it is opened; each tensor is read,
/// shape-checked and decoded only when asked for, so a backend can take a model one tensor at a
/// time (the GPU upload in the browser holds one tensor in memory, never the whole file).
pub struct ModelTensors<'a> {
    file: &'a dyn WeightsFile,
    config: ModelConfig,
    vocab_size: usize,
    naming: Naming,
    found: HashMap<TensorRole, TensorEntry>,
    done: usize,
    total: usize,
    parameters: usize,
    progress: &'a mut dyn FnMut(usize, usize),
}

impl<'a> ModelTensors<'a> {
    /// Indexes `file` (either format, either naming) for a model of `config` whose tokenizer has
    /// `vocab_size` ids. `progress(done, total)` is called as tensors are decoded.
    pub fn open(
        config: ModelConfig,
        vocab_size: usize,
        file: &'a dyn WeightsFile,
        progress: &'a mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let entries = index(file)?;
        let layers = config.num_layers;
        let naming = entries.first().map(|t| naming_of(&t.name)).unwrap_or(Naming::Authors);
        let by_name: HashMap<String, TensorRole> =
            TensorRole::all(layers).into_iter().map(|r| (r.name(naming, layers), r)).collect();
        let mut found = HashMap::new();
        for t in entries {
            if naming_of(&t.name) != naming {
                let first = TensorRole::Embedding.name(naming, layers);
                return Err(Error::MixedNaming(first, t.name));
            }
            match by_name.get(&t.name) {
                Some(role) => {
                    found.insert(*role, t);
                }
                None => return Err(Error::UnexpectedTensor(t.name)),
            }
        }
        let total = by_name.len();
        let parameters = found.values().map(|t| t.shape.iter().product::<usize>()).sum();
        Ok(ModelTensors { file, config, vocab_size, naming, found, done: 0, total, parameters, progress })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Values in all the model's tensors (embedding padding rows included).
    pub fn parameters(&self) -> usize {
        self.parameters
    }

    fn take(&mut self, role: TensorRole, rows: Rows) -> Result<(Vec<f32>, usize)> {
        let d = self.config.hidden_size;
        let name = role.name(self.naming, self.config.num_layers);
        let t = self.found.remove(&role).ok_or_else(|| Error::MissingTensor(name.clone()))?;
        let shape_ok = match (rows, t.shape.as_slice()) {
            (Rows::Vector, [c]) => *c == d,
            (Rows::Exactly(r), [tr, tc]) => *tr == r && *tc == d,
            (Rows::Any, [tr, tc]) => *tr > 0 && *tc == d,
            _ => false,
        };
        if !shape_ok {
            let expected = match rows {
                Rows::Vector => format!("[{d}]"),
                Rows::Exactly(r) => format!("[{r}, {d}]"),
                Rows::Any => format!("[rows, {d}]"),
            };
            return Err(Error::TensorShape { name, found: t.shape, expected });
        }
        let data = t.read_f32(self.file)?;
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { name });
        }
        self.done += 1;
        (self.progress)(self.done, self.total);
        Ok((data, t.shape[0]))
    }

    /// The word embedding [rows × d] and its row count (at least the vocabulary).
    pub fn embedding(&mut self) -> Result<(Vec<f32>, usize)> {
        let (embedding, rows) = self.take(TensorRole::Embedding, Rows::Any)?;
        if self.vocab_size > rows {
            return Err(Error::VocabTooLarge { tokenizer: self.vocab_size, embedding: rows });
        }
        Ok((embedding, rows))
    }

    pub fn block(&mut self, layer: usize) -> Result<Block> {
        let mut pattention = |proj: Projection| -> Result<Pattention> {
            let n = proj.slots(&self.config);
            let (keys, _) = self.take(TensorRole::ParamTokens { layer, proj, values: false }, Rows::Exactly(n))?;
            let (values, _) = self.take(TensorRole::ParamTokens { layer, proj, values: true }, Rows::Exactly(n))?;
            Ok(Pattention { n, key_param_tokens: WeightData::F32(keys), value_param_tokens: WeightData::F32(values) })
        };
        Ok(Block {
            query: pattention(Projection::Query)?,
            key: pattention(Projection::Key)?,
            value: pattention(Projection::Value)?,
            proj: pattention(Projection::Proj)?,
            ffn: pattention(Projection::Ffn)?,
        })
    }

    /// The final norm's weight and bias.
    pub fn final_norm(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (weight, _) = self.take(TensorRole::FinalNormWeight, Rows::Vector)?;
        let (bias, _) = self.take(TensorRole::FinalNormBias, Rows::Vector)?;
        Ok((weight, bias))
    }
}

impl Model {
    /// Reads a whole model from a weights file in either format and naming, checking every name and
    /// shape; `progress(done, total)` is called as tensors are decoded.
    pub fn from_file(
        config: ModelConfig,
        vocab_size: usize,
        file: &dyn WeightsFile,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        Self::from_tensors(ModelTensors::open(config, vocab_size, file, progress)?)
    }

    /// Decodes every tensor of an opened weights file.
    pub fn from_tensors(tensors: ModelTensors<'_>) -> Result<Model> {
        Self::from_tensors_as(tensors, CpuDtype::F32)
    }

    /// Decodes every tensor of an opened weights file into `dtype`, one tensor at a time, so the
    /// f32 copy of only one tensor is alive at once (what a wasm heap's high-water mark is).
    pub fn from_tensors_as(mut tensors: ModelTensors<'_>, dtype: CpuDtype) -> Result<Model> {
        let vocab_size = tensors.vocab_size;
        let layers = tensors.config.num_layers;
        let (embedding, embedding_rows) = tensors.embedding()?;
        let embedding =
            WeightData::F32(embedding).into_dtype(dtype, &TensorRole::Embedding.name(Naming::Project, layers))?;
        let blocks = (0..layers).map(|l| tensors.block(l)?.into_dtype(dtype, l, layers)).collect::<Result<Vec<_>>>()?;
        let (final_norm_weight, final_norm_bias) = tensors.final_norm()?;
        let config = tensors.config.clone();
        Ok(Model { config, vocab_size, embedding, embedding_rows, blocks, final_norm_weight, final_norm_bias })
    }

    /// The model with its matrices in `dtype`, converted one tensor at a time.
    pub fn into_dtype(self, dtype: CpuDtype) -> Result<Model> {
        let layers = self.config.num_layers;
        let embedding = self.embedding.into_dtype(dtype, &TensorRole::Embedding.name(Naming::Project, layers))?;
        let blocks =
            self.blocks.into_iter().enumerate().map(|(l, b)| b.into_dtype(dtype, l, layers)).collect::<Result<_>>()?;
        Ok(Model { embedding, blocks, ..self })
    }

    /// The dtype the matrices are stored in.
    pub fn dtype(&self) -> CpuDtype {
        self.embedding.dtype()
    }

    /// Every tensor with its project name, shape and data, in the authors' order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Cow<'_, [f32]>)> {
        let layers = self.config.num_layers;
        let d = self.config.hidden_size;
        TensorRole::all(layers)
            .into_iter()
            .map(|role| {
                let (shape, data): (Vec<usize>, Cow<'_, [f32]>) = match role {
                    TensorRole::Embedding => (vec![self.embedding_rows, d], self.embedding.to_f32()),
                    TensorRole::ParamTokens { layer, proj, values } => {
                        let p = self.blocks[layer].get(proj);
                        let data = if values { &p.value_param_tokens } else { &p.key_param_tokens };
                        (vec![p.n, d], data.to_f32())
                    }
                    TensorRole::FinalNormWeight => (vec![d], Cow::Borrowed(&self.final_norm_weight[..])),
                    TensorRole::FinalNormBias => (vec![d], Cow::Borrowed(&self.final_norm_bias[..])),
                };
                (role.name(Naming::Project, layers), shape, data)
            })
            .collect()
    }
}

/// The expected first dimension of a tensor whose last dimension is the model width.
#[derive(Clone, Copy)]
enum Rows {
    /// A vector [d].
    Vector,
    Exactly(usize),
    /// The embedding: as many rows as the file has (at least the vocabulary).
    Any,
}

/// Shapes of the authors' released models (TOKENFORMER.md), for benchmarks without a download.
pub const OFFICIAL_SIZES: [(&str, usize, usize, usize, usize, usize); 4] = [
    // name, layers, hidden, heads, qkv/proj slots, ffn slots
    ("150m", 12, 768, 12, 768, 3072),
    ("450m", 24, 1024, 16, 1024, 4096),
    ("900m", 32, 1280, 16, 1280, 5120),
    ("1.5b", 40, 1536, 16, 1536, 6144),
];

impl Model {
    /// A random model of an official size (GPT-NeoX vocabulary, 50,304 embedding rows), seeded.
    pub fn synthetic(size: &str, seed: u32) -> Result<Model> {
        let &(_, layers, d, heads, slots, ffn) = OFFICIAL_SIZES.iter().find(|s| s.0 == size).ok_or_else(|| {
            let names: Vec<&str> = OFFICIAL_SIZES.iter().map(|s| s.0).collect();
            Error::Usage(format!("unknown size {size:?} (one of {})", names.join(", ")))
        })?;
        let config = ModelConfig::from_json(
            serde_json::json!({
                "num_layers": layers, "hidden_size": d, "num_attention_heads": heads, "qkv_slot_num": slots,
                "proj_slot_num": slots, "ffn_slot_num": ffn, "max_position_embeddings": 2048,
                "rotary_pct": 0.25, "norm_activation_type": "l2_norm_gelu"
            })
            .to_string()
            .as_bytes(),
        )?;
        let mut counter = seed.wrapping_mul(0x9E37_79B9);
        let mut random = |len: usize, scale: f32| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    counter = counter.wrapping_add(1);
                    (crate::sampling::pcg_hash(counter) as f32 / u32::MAX as f32 - 0.5) * scale
                })
                .collect()
        };
        let key_scale = 2.0 / (d as f32).sqrt();
        let mut pattention = |n: usize| Pattention {
            n,
            key_param_tokens: WeightData::F32(random(n * d, key_scale)),
            value_param_tokens: WeightData::F32(random(n * d, 2.0 / (n as f32).sqrt())),
        };
        let blocks = (0..layers)
            .map(|_| Block {
                query: pattention(slots),
                key: pattention(slots),
                value: pattention(slots),
                proj: pattention(slots),
                ffn: pattention(ffn),
            })
            .collect();
        let embedding_rows = 50_304;
        Ok(Model {
            config,
            vocab_size: 50_277,
            embedding: WeightData::F32(random(embedding_rows * d, 0.2)),
            embedding_rows,
            blocks,
            final_norm_weight: vec![1.0; d],
            final_norm_bias: vec![0.0; d],
        })
    }

    /// Bytes of weights one decoded token reads (see [`ModelConfig::weight_bytes_per_token`]).
    pub fn weight_bytes_per_token(&self, bytes_per_value: usize) -> usize {
        self.config.weight_bytes_per_token(self.vocab_size, bytes_per_value)
    }
}
