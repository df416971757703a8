//! Weight files: tensor names, dtypes, and the two on-disk formats.
//!
//! Two naming schemes are accepted, one-to-one (the mapping lives in [`TensorRole`]):
//!
//! | role                     | authors' name (`pytorch_model.bin`)                       | project's name                         |
//! |--------------------------|-----------------------------------------------------------|----------------------------------------|
//! | word embedding (tied head)| `sequential.0.word_embeddings.weight`                    | `embed.weight`                         |
//! | block j, query/key/value | `sequential.{j+2}.attention.{query,key,value}.{key,value}_param_tokens` | `blocks.{j}.{query,key,value}.{key,value}_param_tokens` |
//! | block j, output proj     | `sequential.{j+2}.attention.proj.{key,value}_param_tokens` | `blocks.{j}.proj.{key,value}_param_tokens` |
//! | block j, FFN             | `sequential.{j+2}.mlp.{key,value}_param_tokens`           | `blocks.{j}.ffn.{key,value}_param_tokens` |
//! | final layer norm         | `sequential.{L+3}.norm.{weight,bias}`                     | `final_norm.{weight,bias}`             |

pub mod pytorch;
pub mod safetensors;

use crate::error::{Error, Result};
use crate::model::Projection;

/// Element types a weight file may hold. Compute is always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// A tensor exactly as a file stores it: little-endian bytes, contiguous, row-major.
#[derive(Debug, Clone)]
pub struct RawTensor<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

impl RawTensor<'_> {
    /// Decodes to f32 (f16 and bf16 widen exactly).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            DType::F32 => self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            DType::F16 => self.bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            DType::BF16 => {
                self.bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
        }
    }
}

/// The weight-file formats, told apart by their first bytes rather than by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// The authors' `pytorch_model.bin` (zip archive + pickle).
    Pytorch,
    Safetensors,
}

impl WeightsFormat {
    pub fn detect(file: &[u8]) -> Result<Self> {
        if file.is_empty() {
            return Err(Error::EmptyWeights);
        }
        if file.starts_with(b"PK\x03\x04") {
            return Ok(Self::Pytorch);
        }
        // safetensors: u64 little-endian header length, then a JSON object.
        if file.len() >= 9 && file[8] == b'{' {
            return Ok(Self::Safetensors);
        }
        Err(Error::UnknownWeightsFormat(format!(
            "{} bytes starting with {:02x?}",
            file.len(),
            &file[..file.len().min(8)]
        )))
    }
}

/// Lists every tensor of a weights file without copying tensor data.
pub fn read_tensors(file: &[u8]) -> Result<Vec<RawTensor<'_>>> {
    match WeightsFormat::detect(file)? {
        WeightsFormat::Pytorch => Ok(pytorch::read_state_dict(file)?
            .into_iter()
            .map(|t| RawTensor { bytes: &file[t.data], name: t.name, dtype: t.dtype, shape: t.shape })
            .collect()),
        WeightsFormat::Safetensors => safetensors::read(file),
    }
}

/// What a tensor is, independent of the naming scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorRole {
    Embedding,
    ParamTokens { layer: usize, proj: Projection, values: bool },
    FinalNormWeight,
    FinalNormBias,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Authors,
    Project,
}

impl TensorRole {
    /// Every tensor of a model with `num_layers` blocks, in the authors' order.
    pub fn all(num_layers: usize) -> Vec<TensorRole> {
        let mut roles = vec![TensorRole::Embedding];
        for layer in 0..num_layers {
            for proj in Projection::ALL {
                for values in [false, true] {
                    roles.push(TensorRole::ParamTokens { layer, proj, values });
                }
            }
        }
        roles.push(TensorRole::FinalNormWeight);
        roles.push(TensorRole::FinalNormBias);
        roles
    }

    pub fn name(self, naming: Naming, num_layers: usize) -> String {
        let kv = |values: bool| if values { "value_param_tokens" } else { "key_param_tokens" };
        match (naming, self) {
            (Naming::Authors, TensorRole::Embedding) => "sequential.0.word_embeddings.weight".into(),
            (Naming::Authors, TensorRole::ParamTokens { layer, proj, values }) => {
                let module = match proj {
                    Projection::Ffn => "mlp".to_string(),
                    p => format!("attention.{}", p.as_str()),
                };
                format!("sequential.{}.{module}.{}", layer + 2, kv(values))
            }
            (Naming::Authors, TensorRole::FinalNormWeight) => format!("sequential.{}.norm.weight", num_layers + 3),
            (Naming::Authors, TensorRole::FinalNormBias) => format!("sequential.{}.norm.bias", num_layers + 3),
            (Naming::Project, TensorRole::Embedding) => "embed.weight".into(),
            (Naming::Project, TensorRole::ParamTokens { layer, proj, values }) => {
                format!("blocks.{layer}.{}.{}", proj.as_str(), kv(values))
            }
            (Naming::Project, TensorRole::FinalNormWeight) => "final_norm.weight".into(),
            (Naming::Project, TensorRole::FinalNormBias) => "final_norm.bias".into(),
        }
    }
}

/// Which scheme a tensor name belongs to, judged by its first component.
pub fn naming_of(name: &str) -> Naming {
    if name.starts_with("sequential.") {
        Naming::Authors
    } else {
        Naming::Project
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_names_match_the_contract() {
        let names: Vec<String> = TensorRole::all(2).into_iter().map(|r| r.name(Naming::Authors, 2)).collect();
        assert_eq!(names.len(), 1 + 10 * 2 + 2);
        assert_eq!(names[0], "sequential.0.word_embeddings.weight");
        assert!(names.contains(&"sequential.2.attention.query.key_param_tokens".to_string()));
        assert!(names.contains(&"sequential.3.attention.proj.value_param_tokens".to_string()));
        assert!(names.contains(&"sequential.3.mlp.key_param_tokens".to_string()));
        assert_eq!(names[names.len() - 2], "sequential.5.norm.weight");
        assert_eq!(names[names.len() - 1], "sequential.5.norm.bias");
    }

    #[test]
    fn detects_formats_and_refuses_others() {
        assert!(matches!(WeightsFormat::detect(b""), Err(Error::EmptyWeights)));
        assert!(matches!(WeightsFormat::detect(b"hello world"), Err(Error::UnknownWeightsFormat(_))));
        assert_eq!(WeightsFormat::detect(b"PK\x03\x04rest").unwrap(), WeightsFormat::Pytorch);
        assert_eq!(WeightsFormat::detect(b"\x02\0\0\0\0\0\0\0{}").unwrap(), WeightsFormat::Safetensors);
    }
}
