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

use std::ops::Range;

pub mod copy;
pub mod pytorch;
pub mod safetensors;
pub mod stream;

use crate::config::Projection;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::quant::QuantFormat;

/// Element types a weight file may hold: floats, or rows of quantized blocks ([`crate::quant`]).
/// Compute is always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8,
    Q4,
}

impl From<QuantFormat> for DType {
    fn from(format: QuantFormat) -> DType {
        match format {
            QuantFormat::Q8 => DType::Q8,
            QuantFormat::Q4 => DType::Q4,
        }
    }
}

/// How a backend's weights are written out (or streamed) as a file's element type.
impl From<Dtype> for DType {
    fn from(dtype: Dtype) -> DType {
        match dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::Q8 => DType::Q8,
            Dtype::Q4 => DType::Q4,
        }
    }
}

impl DType {
    /// The dtype a backend keeps this element type in (bf16 widens to f32).
    pub fn storage(self) -> Dtype {
        match self {
            DType::F32 | DType::BF16 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::Q8 => Dtype::Q8,
            DType::Q4 => Dtype::Q4,
        }
    }

    /// Bytes of a row of `cols` values.
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            DType::F32 => 4 * cols,
            DType::F16 | DType::BF16 => 2 * cols,
            DType::Q8 => QuantFormat::Q8.row_bytes(cols),
            DType::Q4 => QuantFormat::Q4.row_bytes(cols),
        }
    }

    pub fn quant(self) -> Option<QuantFormat> {
        match self {
            DType::Q8 => Some(QuantFormat::Q8),
            DType::Q4 => Some(QuantFormat::Q4),
            _ => None,
        }
    }

    /// Appends the little-endian values in `bytes`, whole rows of `cols` values, to `out` as f32
    /// (f16 and bf16 widen exactly; blocks are dequantized).
    pub fn decode(self, bytes: &[u8], cols: usize, out: &mut Vec<f32>) {
        match self {
            DType::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            DType::F16 => out.extend(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
            DType::BF16 => out.extend(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            DType::Q8 => out.extend(QuantFormat::Q8.dequantize_rows(cols, bytes)),
            DType::Q4 => out.extend(QuantFormat::Q4.dequantize_rows(cols, bytes)),
        }
    }
}

/// Random access to a weights file that need not be in memory: a byte slice or memory map
/// natively; in the browser a `File` or a download that JavaScript holds, read one tensor at a time.
pub trait WeightsFile {
    fn size(&self) -> u64;
    /// Fills `buf` with the bytes at `offset` (callers check the range against `size`).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

impl WeightsFile for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| Error::Usage("read past the end of the weights".into()))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| Error::Usage("read past the end of the weights".into()))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Reads `range` of `file` into a new buffer, refusing ranges outside the file.
pub fn read_range(file: &dyn WeightsFile, range: Range<u64>) -> Result<Vec<u8>> {
    if range.start > range.end || range.end > file.size() {
        return Err(Error::Usage(format!(
            "bytes {}..{} lie outside the {}-byte weights file",
            range.start,
            range.end,
            file.size()
        )));
    }
    let len = usize::try_from(range.end - range.start)
        .map_err(|_| Error::Usage(format!("a {}-byte read does not fit in memory", range.end - range.start)))?;
    let mut buf = vec![0u8; len];
    file.read_at(range.start, &mut buf)?;
    Ok(buf)
}

/// Where a tensor lies in its file and how to decode it (little-endian, contiguous, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub range: Range<u64>,
}

impl TensorEntry {
    /// Reads and decodes the tensor to f32 (f16 and bf16 widen exactly, blocks are dequantized).
    /// The file is read in blocks of whole rows, so only the decoded tensor is held whole.
    pub fn read_f32(&self, file: &dyn WeightsFile) -> Result<Vec<f32>> {
        let cols = self.shape.last().copied().unwrap_or(1);
        let row_bytes = self.dtype.row_bytes(cols).max(1) as u64;
        let block = ((4 << 20) / row_bytes).max(1) * row_bytes;
        let values = self.range.end.saturating_sub(self.range.start) / row_bytes * cols as u64;
        // Reserved fallibly: a tensor larger than memory (a tab's wasm heap) is an error, not an abort.
        let mut out = Vec::new();
        usize::try_from(values)
            .ok()
            .and_then(|n| out.try_reserve_exact(n).ok())
            .ok_or_else(|| Error::OutOfMemory { name: self.name.clone(), bytes: values.saturating_mul(4) })?;
        let mut at = self.range.start;
        while at < self.range.end {
            let end = (at + block).min(self.range.end);
            let bytes = read_range(file, at..end)?;
            self.dtype.decode(&bytes, cols, &mut out);
            at = end;
        }
        Ok(out)
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
    /// `head` is the file's first bytes (9 suffice), `size` its length.
    pub fn detect(head: &[u8], size: u64) -> Result<Self> {
        if size == 0 {
            return Err(Error::EmptyWeights);
        }
        if head.starts_with(b"PK\x03\x04") {
            return Ok(Self::Pytorch);
        }
        // safetensors: u64 little-endian header length, then a JSON object.
        if head.len() >= 9 && head[8] == b'{' {
            return Ok(Self::Safetensors);
        }
        Err(Error::UnknownWeightsFormat(format!("{size} bytes starting with {:02x?}", &head[..head.len().min(8)])))
    }
}

/// Lists every tensor of a weights file, reading only its header (safetensors) or its zip
/// directory and pickle (pytorch_model.bin): tensor data stays where it is.
pub fn index(file: &dyn WeightsFile) -> Result<Vec<TensorEntry>> {
    let head = read_range(file, 0..file.size().min(9))?;
    match WeightsFormat::detect(&head, file.size())? {
        WeightsFormat::Pytorch => Ok(pytorch::read_state_dict(file)?
            .into_iter()
            .map(|t| TensorEntry {
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
                range: t.data.start as u64..t.data.end as u64,
            })
            .collect()),
        WeightsFormat::Safetensors => safetensors::index(file),
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

    /// A file that claims any size and reads as zeros.
    struct Huge(u64);

    impl WeightsFile for Huge {
        fn size(&self) -> u64 {
            self.0
        }

        fn read_at(&self, _: u64, buf: &mut [u8]) -> Result<()> {
            buf.fill(0);
            Ok(())
        }
    }

    #[test]
    fn a_tensor_larger_than_memory_is_an_error_before_reading() {
        let t = TensorEntry { name: "big".into(), dtype: DType::F16, shape: vec![1 << 62], range: 0..1 << 63 };
        let err = t.read_f32(&Huge(1 << 63)).unwrap_err();
        assert!(matches!(&err, Error::OutOfMemory { name, bytes } if name == "big" && *bytes == u64::MAX), "{err}");
        assert_eq!(
            err.to_string(),
            "tensor big needs 18446744073709551615 bytes as f32, more memory than is available"
        );
    }

    #[test]
    fn detects_formats_and_refuses_others() {
        assert!(matches!(WeightsFormat::detect(b"", 0), Err(Error::EmptyWeights)));
        assert!(matches!(WeightsFormat::detect(b"hello wor", 11), Err(Error::UnknownWeightsFormat(_))));
        assert_eq!(WeightsFormat::detect(b"PK\x03\x04rest", 8).unwrap(), WeightsFormat::Pytorch);
        assert_eq!(WeightsFormat::detect(b"\x02\0\0\0\0\0\0\0{", 11).unwrap(), WeightsFormat::Safetensors);
    }
}
