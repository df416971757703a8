//! A safetensors copy of a weights stream, written while it loads: what the browser caches, in
//! the dtypes the backend keeps (announced by the [`Converter`](crate::model::Converter) in front:
//! the 1.5B checkpoint's 6.35 GB of f32 is kept as 3.2 GB of f16, or about 1 GB of q4). Every shape
//! is known when the stream announces its tensors, so the header comes first and each block of
//! rows goes straight to its place in the file: the copy is a list of positioned writes, never held
//! whole. Its CRC-32 over the whole file is known at the end (combined from the header's and each
//! tensor's, which are written in order), so a later read can check it.

use super::safetensors::quantized_name;
use super::stream::{TensorInfo, TensorSink};
use super::DType;
use crate::error::Result;

/// Rows written at byte `position` of the copy.
pub type Write = (u64, Vec<u8>);

/// Where a tensor goes in the copy and how its rows are written.
struct Placed {
    start: u64,
    dtype: DType,
    cols: usize,
    crc: crc32fast::Hasher,
}

#[derive(Default)]
pub struct SafetensorsCopy {
    tensors: Vec<Placed>,
    header: crc32fast::Hasher,
    size: u64,
    pending: Vec<Write>,
}

impl SafetensorsCopy {
    pub fn new() -> Self {
        Self::default()
    }

    /// The writes produced since the last call, in order.
    pub fn take(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.pending)
    }

    /// The copy's length in bytes (known once the tensors are).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// CRC-32 of the whole copy, valid once every row was written.
    pub fn checksum(&self) -> u32 {
        let mut all = self.header.clone();
        for t in &self.tensors {
            all.combine(&t.crc);
        }
        all.finalize()
    }

    fn write(&mut self, index: usize, row0: usize, bytes: Vec<u8>) {
        let t = &mut self.tensors[index];
        t.crc.update(&bytes);
        self.pending.push((t.start + (row0 * t.dtype.row_bytes(t.cols)) as u64, bytes));
    }
}

impl TensorSink for SafetensorsCopy {
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
        let mut header = serde_json::Map::new();
        let mut at = 0u64;
        let mut layout = Vec::with_capacity(tensors.len());
        for t in tensors {
            // Floats are kept as f16 or f32 (bf16 rows arrive as f32).
            let dtype = if t.dtype == DType::BF16 { DType::F32 } else { t.dtype };
            let row_bytes = dtype.row_bytes(t.cols());
            let bytes = (t.rows() * row_bytes) as u64;
            let (name, stored, shape) = match dtype.quant() {
                Some(format) => (quantized_name(&t.name, format), "U8", vec![t.rows(), row_bytes]),
                None => (t.name.clone(), if dtype == DType::F16 { "F16" } else { "F32" }, t.shape.clone()),
            };
            header
                .insert(name, serde_json::json!({ "dtype": stored, "shape": shape, "data_offsets": [at, at + bytes] }));
            layout.push((at, dtype, t.cols()));
            at += bytes;
        }
        let mut json = serde_json::Value::Object(header).to_string().into_bytes();
        // The data starts 8-byte aligned, as the format recommends.
        json.resize(json.len().next_multiple_of(8), b' ');
        let mut head = (json.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&json);
        let data_start = head.len() as u64;
        self.header.update(&head);
        self.pending.push((0, head));
        self.tensors = layout
            .into_iter()
            .map(|(at, dtype, cols)| Placed { start: data_start + at, dtype, cols, crc: crc32fast::Hasher::new() })
            .collect();
        self.size = data_start + at;
        Ok(())
    }

    fn rows(&mut self, index: usize, row0: usize, values: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = match self.tensors[index].dtype {
            DType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        self.write(index, row0, bytes);
        Ok(())
    }

    fn blocks(&mut self, index: usize, row0: usize, blocks: &[u8]) -> Result<()> {
        self.write(index, row0, blocks.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::stream::verify;
    use crate::weights::DType;

    #[test]
    fn the_copy_is_a_safetensors_file_with_its_checksum() {
        let tensors = [
            TensorInfo { name: "m".into(), dtype: DType::F32, shape: vec![3, 4] },
            TensorInfo { name: "v".into(), dtype: DType::F32, shape: vec![4] },
        ];
        for f16 in [false, true] {
            let mut tensors = tensors.clone();
            tensors[0].dtype = if f16 { DType::F16 } else { DType::F32 };
            let mut copy = SafetensorsCopy::new();
            copy.begin(&tensors).unwrap();
            // Rows out of tensor order, as a pytorch_model.bin's storages arrive.
            copy.rows(1, 0, &[9.0, 8.0, 7.0, 6.0]).unwrap();
            copy.rows(0, 0, &[1.0, 2.0, 3.0, 4.0]).unwrap();
            copy.rows(0, 1, &[5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]).unwrap();
            let mut file = vec![0u8; copy.size() as usize];
            for (at, bytes) in copy.take() {
                file[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
            }
            assert_eq!(crc32fast::hash(&file), copy.checksum());
            let read = verify(&file, 5).unwrap();
            assert_eq!(read[0].dtype, if f16 { DType::F16 } else { DType::F32 });
            assert_eq!(read[1].dtype, DType::F32);
            let entries = crate::weights::index(&&file[..]).unwrap();
            assert_eq!(entries[0].read_f32(&&file[..]).unwrap(), (1..=12).map(|v| v as f32).collect::<Vec<_>>());
            assert_eq!(entries[1].read_f32(&&file[..]).unwrap(), vec![9.0, 8.0, 7.0, 6.0]);
        }
    }
}
