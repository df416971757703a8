//! safetensors files through the `safetensors` crate: reading any of F32/F16/BF16, writing F32/F16,
//! and quantized matrices (q8, q4) both ways. A quantized matrix is one U8 tensor named after the
//! matrix with `.q8` or `.q4` appended, shape `[rows, bytes per row]`: each row its blocks
//! ([`crate::quant`]), so rows stream like any other tensor's.

use safetensors::tensor::{Dtype, TensorView};
use serde::de::{Deserializer, MapAccess, Visitor};

use super::{read_range, DType, TensorEntry, WeightsFile};
use crate::error::{Error, Result};
use crate::quant::{QuantFormat, GROUP};

/// The format's own bound on the JSON header (the `safetensors` crate's `MAX_HEADER_SIZE`).
const MAX_HEADER: u64 = 100_000_000;

fn bad(message: impl Into<String>) -> Error {
    Error::Safetensors(message.into())
}

/// Lists the tensors of a safetensors file from its header alone, in file order. The header is
/// parsed by the `safetensors` crate; the checks its whole-buffer reader makes (data offsets
/// contiguous from 0, sizes matching shapes, the data ending exactly at the end of the file) are
/// made here against the file's size, so the data need not be in memory.
pub fn index(file: &dyn WeightsFile) -> Result<Vec<TensorEntry>> {
    let size = file.size();
    if size < 8 {
        return Err(too_short(size));
    }
    let n = header_len(read_range(file, 0..8)?.try_into().unwrap_or_default(), Some(size))?;
    let entries = parse_header(&read_range(file, 8..8 + n)?)?;
    let end = entries.last().map_or(8 + n, |e| e.range.end);
    if end != size {
        return Err(data_size(end, size));
    }
    Ok(entries)
}

pub(super) fn too_short(size: u64) -> Error {
    bad(format!("{size}-byte file is too short for a header"))
}

/// The header length the first 8 bytes give, within the format's bound and the file's `size`
/// when it is known (a stream may not know it).
pub(super) fn header_len(first: [u8; 8], size: Option<u64>) -> Result<u64> {
    let n = u64::from_le_bytes(first);
    match size {
        Some(size) if n > MAX_HEADER || n > size - 8 => Err(header_past_end(n, size)),
        None if n > MAX_HEADER => Err(bad(format!("header of {n} bytes exceeds the format's {MAX_HEADER}-byte bound"))),
        _ => Ok(n),
    }
}

pub(super) fn header_past_end(n: u64, size: u64) -> Error {
    bad(format!("header of {n} bytes does not fit in the {size}-byte file"))
}

/// The data must end exactly at the end of the file.
pub(super) fn data_size(end: u64, size: u64) -> Error {
    bad(format!("the tensors end at byte {end} but the file has {size} bytes (truncated or padded)"))
}

/// The tensors a JSON header lists, in file order, with absolute byte ranges (the header is
/// `header.len()` bytes after the 8-byte length). Their data must be contiguous from the header on.
pub(super) fn parse_header(header: &[u8]) -> Result<Vec<TensorEntry>> {
    let mut de = serde_json::Deserializer::from_slice(header);
    let records = (&mut de).deserialize_map(HeaderVisitor).and_then(|r| de.end().map(|()| r));
    let records = records.map_err(|e| bad(format!("invalid header: {e}")))?;
    let data_start = 8 + header.len() as u64;
    let mut entries: Vec<TensorEntry> = Vec::new();
    for (name, record) in records {
        if name == "__metadata__" {
            if !record.as_object().is_some_and(|m| m.values().all(serde_json::Value::is_string)) {
                return Err(bad("__metadata__ must map strings to strings"));
            }
            continue;
        }
        if entries.iter().any(|e| e.name == name) {
            return Err(bad(format!("tensor name {name:?} appears twice")));
        }
        let info: RawTensorInfo =
            serde_json::from_value(record).map_err(|e| bad(format!("tensor {name:?}: invalid record: {e}")))?;
        let quant = quant_suffix(&name);
        let dtype = match (info.dtype.as_str(), quant) {
            ("F32", None) => DType::F32,
            ("F16", None) => DType::F16,
            ("BF16", None) => DType::BF16,
            ("U8", Some(QuantFormat::Q8)) => DType::Q8,
            ("U8", Some(QuantFormat::Q4)) => DType::Q4,
            (dtype, Some(format)) => {
                return Err(bad(format!("tensor {name:?}: {} blocks are stored as U8, not {dtype}", format.as_str())))
            }
            _ => return Err(Error::UnsupportedDtype { name, dtype: info.dtype }),
        };
        let [start, end] = info.data_offsets;
        let elem = if quant.is_some() { 1 } else { dtype.row_bytes(1) as u64 };
        let bytes = info.shape.iter().try_fold(elem, |acc, &d| acc.checked_mul(d));
        let shape: Option<Vec<usize>> = info.shape.iter().map(|&d| usize::try_from(d).ok()).collect();
        let (Some(mut shape), true) = (shape, end >= start && bytes == Some(end - start)) else {
            return Err(bad(format!("tensor {name:?}: shape {:?} does not match bytes {start}..{end}", info.shape)));
        };
        let mut name = name;
        if let Some(format) = quant {
            // [rows, bytes per row] -> [rows, values per row] (whole groups).
            let block = format.block_bytes();
            match shape[..] {
                [_, row_bytes] if row_bytes > 0 && row_bytes % block == 0 => shape[1] = row_bytes / block * GROUP,
                _ => {
                    return Err(bad(format!(
                        "tensor {name:?}: shape {shape:?} is not [rows, bytes per row] of whole {block}-byte {} \
                         blocks",
                        format.as_str()
                    )))
                }
            }
            name.truncate(name.len() - 3);
        }
        let range = data_start.checked_add(start).zip(data_start.checked_add(end)).map(|(a, b)| a..b);
        let range = range.ok_or_else(|| bad(format!("tensor {name:?}: bytes {start}..{end} overflow")))?;
        entries.push(TensorEntry { name, dtype, shape, range });
    }
    entries.sort_by_key(|e| e.range.start);
    let mut at = data_start;
    for e in &entries {
        if e.range.start != at {
            return Err(bad(format!("tensor {:?} starts at byte {} instead of {at}", e.name, e.range.start)));
        }
        at = e.range.end;
    }
    Ok(entries)
}

/// The name a quantized tensor is stored under: the matrix's, with `.q8` or `.q4` appended.
pub fn quantized_name(name: &str, format: QuantFormat) -> String {
    format!("{name}.{}", format.as_str())
}

/// The block format a quantized tensor's name ends with (`.q8`, `.q4`).
fn quant_suffix(name: &str) -> Option<QuantFormat> {
    name.rsplit_once('.').and_then(|(_, suffix)| QuantFormat::parse(suffix))
}

/// One tensor's record in the header, before any check (the `safetensors` crate's own parser
/// validates first and names no tensor in its errors).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensorInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header's entries in file order, duplicates kept (a JSON map would keep only the last).
struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Vec<(String, serde_json::Value)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of tensor records")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// One tensor's data as it is written.
pub enum Stored<'a> {
    F32(&'a [f32]),
    /// f32 values, rounded to f16 as they are written.
    F16(&'a [f32]),
    /// Rows of quantized blocks (the shape given is the matrix's, [rows, values per row]).
    Blocks(QuantFormat, &'a [u8]),
}

/// A tensor's name, dtype, shape and bytes as written.
type Encoded<'a> = (String, Dtype, Vec<usize>, std::borrow::Cow<'a, [u8]>);

/// Serialises tensors as one safetensors file; quantized ones as U8 tensors named `NAME.q8` or
/// `NAME.q4`, shape `[rows, bytes per row]`.
pub fn write<'a>(tensors: impl IntoIterator<Item = (String, Vec<usize>, Stored<'a>)>) -> Result<Vec<u8>> {
    let encoded: Vec<Encoded<'a>> = tensors
        .into_iter()
        .map(|(name, shape, data)| match data {
            Stored::F32(v) => (name, Dtype::F32, shape, v.iter().flat_map(|v| v.to_le_bytes()).collect()),
            Stored::F16(v) => {
                (name, Dtype::F16, shape, v.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect())
            }
            Stored::Blocks(format, bytes) => {
                let rows = shape.first().copied().unwrap_or(0);
                let row_bytes = bytes.len().checked_div(rows).unwrap_or(0);
                (quantized_name(&name, format), Dtype::U8, vec![rows, row_bytes], bytes.into())
            }
        })
        .collect();
    let mut views = Vec::with_capacity(encoded.len());
    for (name, dtype, shape, bytes) in &encoded {
        let view = TensorView::new(*dtype, shape.clone(), bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
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
        for f16 in [false, true] {
            let data = if f16 { Stored::F16(&a) } else { Stored::F32(&a) };
            let bytes = write([("a".to_string(), vec![2, 2], data)]).unwrap();
            let t = index(&&bytes[..]).unwrap();
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].shape, vec![2, 2]);
            let back = t[0].read_f32(&&bytes[..]).unwrap();
            for (x, y) in a.iter().zip(&back) {
                assert!((x - y).abs() <= if f16 { 1e-3 } else { 0.0 }, "{x} {y}");
            }
        }
    }

    fn read(file: &[u8]) -> Result<Vec<TensorEntry>> {
        index(&file)
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
        let full = write([("a".to_string(), vec![4], Stored::F32(&[1.0f32; 4]))]).unwrap();
        assert!(matches!(read(&full[..full.len() - 3]), Err(Error::Safetensors(_))));
        // Padded: bytes after the last tensor.
        let mut padded = full.clone();
        padded.push(0);
        assert!(matches!(read(&padded), Err(Error::Safetensors(_))));
        // A gap between tensors.
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        assert!(matches!(read(&file_with_header(h, &[0; 12])), Err(Error::Safetensors(_))));
    }
}
