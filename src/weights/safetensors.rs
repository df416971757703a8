//! safetensors files through the `safetensors` crate: reading any of F32/F16/BF16, writing F32/F16.

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{DType, RawTensor};
use crate::error::{Error, Result};

pub fn read(file: &[u8]) -> Result<Vec<RawTensor<'_>>> {
    let st = SafeTensors::deserialize(file).map_err(|e| Error::Safetensors(e.to_string()))?;
    // The crate checks offsets against the data region; tensors come back in file order.
    let mut tensors: Vec<(usize, RawTensor)> = Vec::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => return Err(Error::UnsupportedDtype { name: name.to_string(), dtype: format!("{other:?}") }),
        };
        let bytes = view.data();
        let offset = bytes.as_ptr() as usize - file.as_ptr() as usize;
        tensors.push((offset, RawTensor { name: name.to_string(), dtype, shape: view.shape().to_vec(), bytes }));
    }
    tensors.sort_by_key(|(offset, _)| *offset);
    Ok(tensors.into_iter().map(|(_, t)| t).collect())
}

/// Output precision of `tokenformer convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    F16,
}

/// Serialises f32 tensors as one safetensors file, rounding to f16 when asked.
pub fn write<'a>(
    tensors: impl IntoIterator<Item = (String, Vec<usize>, &'a [f32])>,
    dtype: StoreDtype,
) -> Result<Vec<u8>> {
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, data)| {
            let bytes = match dtype {
                StoreDtype::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                StoreDtype::F16 => data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            };
            (name, shape, bytes)
        })
        .collect();
    let st_dtype = match dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
    };
    let mut views = Vec::with_capacity(encoded.len());
    for (name, shape, bytes) in &encoded {
        let view = TensorView::new(st_dtype, shape.clone(), bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
        views.push((name.clone(), view));
    }
    safetensors::tensor::serialize(views, None).map_err(|e| Error::Safetensors(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn round_trips_f32_and_f16() {
        let a = [1.0f32, -2.5, 3.25, 0.1];
        for dtype in [StoreDtype::F32, StoreDtype::F16] {
            let bytes = write([("a".to_string(), vec![2, 2], &a[..])], dtype).unwrap();
            let t = read(&bytes).unwrap();
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].shape, vec![2, 2]);
            let back = t[0].to_f32();
            for (x, y) in a.iter().zip(&back) {
                assert!((x - y).abs() <= if dtype == StoreDtype::F32 { 0.0 } else { 1e-3 }, "{x} {y}");
            }
        }
    }

    #[test]
    fn malformed_files_give_errors() {
        // Header length far beyond the file.
        let mut f = (1u64 << 40).to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        assert!(matches!(read(&f), Err(Error::Safetensors(_))));
        // Header not JSON.
        assert!(matches!(read(&file_with_header("{not json", &[])), Err(Error::Safetensors(_))));
        // Data offsets out of bounds.
        let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        assert!(matches!(read(&file_with_header(h, &[0; 8])), Err(Error::Safetensors(_))));
        // Shape disagrees with the byte count.
        let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
        assert!(matches!(read(&file_with_header(h, &[0; 16])), Err(Error::Safetensors(_))));
        // Unsupported dtype.
        let h = r#"{"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#;
        assert!(matches!(read(&file_with_header(h, &[0; 16])), Err(Error::UnsupportedDtype { .. })));
        // Truncated: a valid file cut short.
        let full = write([("a".to_string(), vec![4], &[1.0f32; 4][..])], StoreDtype::F32).unwrap();
        assert!(matches!(read(&full[..full.len() - 3]), Err(Error::Safetensors(_))));
    }
}
