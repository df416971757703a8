//! How a model's weight matrices are stored on either backend: the one choice behind every
//! `--dtype`, the JS `dtype` option and the page's Weights menu. Compute is always f32.

use crate::error::{Error, Result};
use crate::quant::QuantFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    /// Half the bytes; widened exactly to f32 as it is read.
    F16,
    /// int8 in groups of 32 with an f16 scale (8.5 bits a weight): see [`crate::quant`].
    Q8,
    /// 4-bit in groups of 32 with an f16 scale and minimum (5 bits a weight).
    Q4,
}

impl From<QuantFormat> for Dtype {
    fn from(format: QuantFormat) -> Dtype {
        match format {
            QuantFormat::Q8 => Dtype::Q8,
            QuantFormat::Q4 => Dtype::Q4,
        }
    }
}

impl Dtype {
    pub const ALL: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::Q8, Dtype::Q4];

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == name)
            .ok_or_else(|| Error::Usage(format!("unknown dtype {name:?} (f32, f16, q8 or q4)")))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }

    /// The block format of a quantized dtype.
    pub fn quant(self) -> Option<QuantFormat> {
        match self {
            Self::F32 | Self::F16 => None,
            Self::Q8 => Some(QuantFormat::Q8),
            Self::Q4 => Some(QuantFormat::Q4),
        }
    }

    /// Bytes of a row of `cols` values, as the CPU backend and weight files store it.
    pub fn row_bytes(self, cols: usize) -> usize {
        match (self, self.quant()) {
            (_, Some(q)) => q.row_bytes(cols),
            (Self::F16, None) => 2 * cols,
            _ => 4 * cols,
        }
    }

    /// The embedding's dtype when the parameter tokens take `self`: f16 for the quantized formats
    /// (on the built-in model, quantizing the tied head to q4 as well roughly doubles q4's loss).
    pub fn default_embedding(self) -> Dtype {
        match self {
            Self::Q8 | Self::Q4 => Self::F16,
            same => same,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a KV cache holds keys and values: f32, or f16 (half the memory; rounded to 11 significant
/// bits as they are stored). The GPU's default follows the weights ([`KvDtype::default_for`]); the
/// CPU's is f32, the exact path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvDtype {
    F32,
    /// On the GPU, needs even head dims: a u32 holds two dims of one head.
    F16,
}

impl KvDtype {
    /// The default for weights in `dtype` and heads of `head_dim`: f16 with f16 or quantized
    /// weights (what the memory is for; its rounding is smaller than theirs), f32 with f32 weights
    /// (the exact path) and for odd head dims.
    pub fn default_for(dtype: crate::Dtype, head_dim: usize) -> KvDtype {
        match dtype {
            Dtype::F32 => KvDtype::F32,
            _ if head_dim % 2 == 1 => KvDtype::F32,
            _ => KvDtype::F16,
        }
    }

    pub fn parse(name: &str) -> Result<KvDtype> {
        match name {
            "f32" => Ok(KvDtype::F32),
            "f16" => Ok(KvDtype::F16),
            _ => Err(Error::Usage(format!("unknown KV cache dtype {name:?} (f32 or f16)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }
}
