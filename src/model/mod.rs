//! The model in memory: validated shape plus weights stored as f32, f16 or quantized blocks (q8,
//! q4; the final norm always f32), independent of file format and backend.

use std::borrow::Cow;

use half::f16;

use crate::config::ModelConfig;
pub use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::quant::QuantMatrix;
use crate::weights::{Naming, TensorRole};

pub(crate) mod load;
pub mod storage;
mod synthetic;

pub use load::{ModelBuilder, TensorPlan};
pub use storage::Converter;
pub use synthetic::OFFICIAL_SIZES;

pub use crate::config::Projection;

/// A weight matrix, row-major, in the dtype the CPU backend computes from.
#[derive(Debug, Clone)]
pub enum WeightData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// Rows quantized in groups along the dimension the products reduce (see [`crate::quant`]).
    Quant(QuantMatrix),
}

impl WeightData {
    /// An empty matrix of rows `cols` long in `dtype`.
    pub fn empty(dtype: Dtype, cols: usize) -> Self {
        match dtype.quant() {
            Some(format) => Self::Quant(QuantMatrix::new(format, cols)),
            None if dtype == Dtype::F16 => Self::F16(Vec::new()),
            None => Self::F32(Vec::new()),
        }
    }

    /// Values held (rows × cols).
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::Quant(q) => q.rows() * q.cols,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> Dtype {
        match self {
            Self::F32(_) => Dtype::F32,
            Self::F16(_) => Dtype::F16,
            Self::Quant(q) => q.format.into(),
        }
    }

    /// The values as f32: borrowed when stored so, widened (exactly) or dequantized otherwise.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            Self::F32(v) => Cow::Borrowed(v),
            Self::F16(v) => Cow::Owned(v.iter().map(|h| h.to_f32()).collect()),
            Self::Quant(q) => Cow::Owned(q.dequantize()),
        }
    }

    /// Row `row` (of `out.len()` values) as f32: an embedding row.
    pub fn read_row(&self, row: usize, out: &mut [f32]) {
        let start = row * out.len();
        match self {
            Self::F32(v) => out.copy_from_slice(&v[start..start + out.len()]),
            Self::F16(v) => out.iter_mut().zip(&v[start..]).for_each(|(o, h)| *o = h.to_f32()),
            Self::Quant(q) => q.format.dequantize_row(q.row(row), out),
        }
    }

    /// Appends whole rows of `values` in the stored dtype; `name` says which tensor in an error.
    /// f16 rounds to nearest even, as the GPU upload does; a value beyond f16's range (±65504), or
    /// needing a quantization scale beyond it, is refused, not made ∞.
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
            Self::Quant(q) => {
                let first = q.rows();
                for (r, row) in values.chunks(q.cols.max(1)).enumerate() {
                    q.format.quantize_row(row, &mut q.blocks).map_err(|e| {
                        Error::Usage(format!("{name} row {}: {e}: load it with dtype f32 or f16", first + r))
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// `rows × cols` row-major values transposed.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; values.len()];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// One Pattention layer: `n` parameter tokens with keys [n, d_in] and values [n, d_out]. Quantized
/// values are stored transposed, Vᵀ [d_out, n], so that their groups run along the slots, the
/// dimension `Theta · V` reduces.
#[derive(Debug, Clone)]
pub struct Pattention {
    pub n: usize,
    pub key_param_tokens: WeightData,
    pub value_param_tokens: WeightData,
}

impl Pattention {
    /// Whether the values are stored as Vᵀ (quantized).
    pub fn values_transposed(&self) -> bool {
        matches!(self.value_param_tokens, WeightData::Quant(_))
    }

    pub fn d_out(&self) -> usize {
        self.value_param_tokens.len() / self.n.max(1)
    }

    /// The values as f32 in the authors' orientation, [n, d_out].
    pub fn values_f32(&self) -> Cow<'_, [f32]> {
        let v = self.value_param_tokens.to_f32();
        match self.values_transposed() {
            true => Cow::Owned(transpose(&v, self.d_out(), self.n)),
            false => v,
        }
    }

    /// Parameter token `slot`'s value vector (d_out values).
    pub fn value_token(&self, slot: usize) -> Vec<f32> {
        assert!(slot < self.n, "slot {slot} of {} (callers check it: inspect::check_slot)", self.n);
        let d_out = self.d_out();
        let mut out = vec![0f32; d_out];
        match &self.value_param_tokens {
            WeightData::Quant(q) => {
                for (c, o) in out.iter_mut().enumerate() {
                    *o = q.format.dequantize_at(q.row(c), slot);
                }
            }
            v => v.read_row(slot, &mut out),
        }
        out
    }
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
    /// The dtype the parameter tokens are stored in.
    pub fn dtype(&self) -> Dtype {
        self.blocks.first().map_or(self.embedding.dtype(), |b| b.query.key_param_tokens.dtype())
    }

    /// The dtype the embedding (the tied head) is stored in.
    pub fn embedding_dtype(&self) -> Dtype {
        self.embedding.dtype()
    }

    /// Bytes of weights one decoded token reads as stored: every parameter token and the
    /// embedding as the head (see [`ModelConfig::weight_bytes_per_token`]).
    pub fn weight_bytes_per_token(&self) -> usize {
        self.config.weight_bytes_per_token(self.vocab_size, self.dtype(), self.embedding_dtype())
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

    /// The matrix a role is stored in (None for the final norm's vectors).
    pub fn stored(&self, role: TensorRole) -> Option<&WeightData> {
        match role {
            TensorRole::Embedding => Some(&self.embedding),
            TensorRole::ParamTokens { layer, proj, values } => {
                let p = self.blocks[layer].get(proj);
                Some(if values { &p.value_param_tokens } else { &p.key_param_tokens })
            }
            TensorRole::FinalNormWeight | TensorRole::FinalNormBias => None,
        }
    }

    /// One tensor's shape and values as f32 (borrowed when stored as f32), values as [n, d].
    pub fn tensor(&self, role: TensorRole) -> (Vec<usize>, Cow<'_, [f32]>) {
        let data = match role {
            TensorRole::Embedding => self.embedding.to_f32(),
            TensorRole::ParamTokens { layer, proj, values: true } => self.blocks[layer].get(proj).values_f32(),
            TensorRole::ParamTokens { layer, proj, values: false } => {
                self.blocks[layer].get(proj).key_param_tokens.to_f32()
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
