//! The model in memory: validated shape plus f32 weights, independent of file format and backend.

use std::borrow::Cow;

use half::f16;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::{Naming, TensorRole};

pub(crate) mod load;
mod synthetic;

pub use load::{ModelBuilder, TensorPlan};
pub use synthetic::OFFICIAL_SIZES;

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

    /// Appends `values` in the stored dtype; `name` says which tensor in an error. f16 rounds to
    /// nearest even, as the GPU upload does; a value beyond f16's range (±65504) is refused, not
    /// made ∞.
    pub fn extend_from_f32(&mut self, values: &[f32], name: &str) -> Result<()> {
        match self {
            Self::F32(v) => v.extend_from_slice(values),
            Self::F16(v) => {
                let start = v.len();
                v.extend(values.iter().map(|&x| f16::from_f32(x)));
                if let Some(i) = v[start..].iter().position(|h| h.is_infinite()) {
                    return Err(Error::Usage(format!(
                        "{name} holds {} at index {}, beyond f16's range: load it with dtype f32",
                        values[i],
                        start + i
                    )));
                }
            }
        }
        Ok(())
    }

    /// The same values in `dtype` (see [`WeightData::extend_from_f32`]).
    pub fn into_dtype(self, dtype: CpuDtype, name: &str) -> Result<Self> {
        match (self, dtype) {
            (Self::F32(v), CpuDtype::F16) => {
                let mut halves = Self::F16(Vec::with_capacity(v.len()));
                halves.extend_from_f32(&v, name)?;
                Ok(halves)
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

impl Model {
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
        TensorRole::all(layers)
            .into_iter()
            .map(|role| {
                let (shape, data) = self.tensor(role);
                (role.name(Naming::Project, layers), shape, data)
            })
            .collect()
    }

    /// One tensor's shape and values as f32 (borrowed when stored as f32).
    pub fn tensor(&self, role: TensorRole) -> (Vec<usize>, Cow<'_, [f32]>) {
        let data = match role {
            TensorRole::Embedding => self.embedding.to_f32(),
            TensorRole::ParamTokens { layer, proj, values } => {
                let p = self.blocks[layer].get(proj);
                if values { &p.value_param_tokens } else { &p.key_param_tokens }.to_f32()
            }
            TensorRole::FinalNormWeight => Cow::Borrowed(&self.final_norm_weight[..]),
            TensorRole::FinalNormBias => Cow::Borrowed(&self.final_norm_bias[..]),
        };
        (self.shape(role), data)
    }

    /// One tensor's shape, without touching its values.
    pub fn shape(&self, role: TensorRole) -> Vec<usize> {
        let d = self.config.hidden_size;
        match role {
            TensorRole::Embedding => vec![self.embedding_rows, d],
            TensorRole::ParamTokens { layer, proj, .. } => vec![self.blocks[layer].get(proj).n, d],
            TensorRole::FinalNormWeight | TensorRole::FinalNormBias => vec![d],
        }
    }
}
