//! Reader for PyTorch zip-format state dicts (`pytorch_model.bin`), without Python.
//!
//! `torch.save` writes a zip archive with one top folder holding `data.pkl` (a pickle
//! describing the tensors), `data/<key>` (raw storages), `byteorder`, `version`, ...
//! A pickle is a program, so `data.pkl` is run by a *restricted* interpreter: it knows
//! only the opcodes a state dict needs and an allow-list of five globals, calls nothing
//! but `OrderedDict()` and `_rebuild_tensor_v2(...)` (both emulated as plain data), and
//! bounds stack, memo, nesting depth and container sizes. Tensors are returned as byte ranges
//! into the original file, so the caller can use the data in place (e.g. from an mmap).
//!
//! What torch 2.x writes for `torch.save(state_dict)` (protocol 2): PROTO, GLOBAL,
//! BINPUT, BINGET, EMPTY_TUPLE, REDUCE, MARK, BINUNICODE, BININT1 (BININT/LONG1 for
//! bigger numbers), TUPLE/TUPLE1/TUPLE2, BINPERSID, NEWFALSE, SETITEMS, STOP; a module
//! `state_dict()` adds EMPTY_DICT, SETITEM and BUILD (its `_metadata` attribute). The
//! globals are `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and
//! `torch.{Float,Half,BFloat16}Storage`. Protocol 4 (`pickle_protocol=4`) adds FRAME,
//! SHORT_BINUNICODE, MEMOIZE and STACK_GLOBAL, which are accepted too.

mod archive;
mod pickle;
pub(crate) mod stream;
#[cfg(test)]
mod tests;
pub mod write;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::weights::{read_range, DType, WeightsFile};
use archive::Archive;
use pickle::{clip, TensorRef, Unpickler, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct PickledTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range of this tensor's contiguous data inside the WHOLE .bin file (little-endian).
    pub data: Range<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum PytorchError {
    #[error("not a zip archive: expected a torch.save checkpoint in zip format (PyTorch >= 1.6)")]
    NotZip,
    #[error("malformed zip archive: {0}")]
    BadArchive(String),
    #[error("archive has no <folder>/data.pkl entry, so it is not a torch.save checkpoint")]
    NoDataPkl,
    #[error("zip entry {0} is compressed or encrypted; torch.save stores entries uncompressed")]
    CompressedEntry(String),
    #[error("checkpoint was written big-endian; only little-endian checkpoints are supported")]
    BigEndian,
    #[error("pickle references forbidden global {module}.{name}; only plain tensor state dicts are accepted")]
    ForbiddenGlobal { module: String, name: String },
    #[error("pickle calls {0}, which is not an allowed callable")]
    ForbiddenCall(String),
    #[error("unsupported pickle opcode 0x{opcode:02x} at offset {offset}")]
    UnsupportedOpcode { opcode: u8, offset: usize },
    #[error("pickle is truncated")]
    Truncated,
    #[error("malformed pickle at offset {offset}: {msg}")]
    BadPickle { offset: usize, msg: String },
    #[error("pickle exceeds a safety limit: {0}")]
    LimitExceeded(&'static str),
    #[error("pickle is not a state dict of tensors: {0}")]
    NotStateDict(String),
    #[error("tensor name {0:?} appears twice")]
    DuplicateName(String),
    #[error("storage {0:?} referenced by the pickle is not in the archive")]
    MissingStorage(String),
    #[error("storage {0:?} is referenced with two different dtypes")]
    StorageDtypeConflict(String),
    #[error("storage {key:?} declares {declared} bytes but its zip entry holds {actual}")]
    StorageTooShort { key: String, declared: usize, actual: usize },
    #[error("tensor {0:?} is not contiguous; only contiguous tensors are supported")]
    NonContiguous(String),
    #[error("tensor {name:?}: its size in bytes overflows usize")]
    SizeOverflow { name: String },
    #[error("tensor {name:?}: bytes {start}..{end} lie outside its storage of {storage_len} bytes")]
    OutOfBounds { name: String, start: usize, end: usize, storage_len: usize },
}

type Result<T> = std::result::Result<T, PytorchError>;

/// Parses the archive and the pickle and returns every tensor, in file order.
/// Only the zip directory, `data.pkl` and `byteorder` are read: tensor data stays in the file.
pub fn read_state_dict(file: &dyn WeightsFile) -> Result<Vec<PickledTensor>> {
    let archive = Archive::open(file)?;
    let pickle = read(file, &archive.pickle)?;
    let root = Unpickler::new(&pickle).run()?;
    collect_tensors(root, &archive.storages)
}

fn read(file: &dyn WeightsFile, range: &Range<usize>) -> Result<Vec<u8>> {
    read_range(file, range.start as u64..range.end as u64).map_err(|e| PytorchError::BadArchive(e.to_string()))
}

// ---------------------------------------------------------------------------------------
// From pickle values to tensors
// ---------------------------------------------------------------------------------------

fn collect_tensors(root: Value, storages: &HashMap<String, Range<usize>>) -> Result<Vec<PickledTensor>> {
    stored_tensors(root)?
        .into_iter()
        .map(|t| {
            let entry = storages.get(&t.key).ok_or_else(|| PytorchError::MissingStorage(t.key.clone()))?;
            t.check_entry(entry.len() as u64)?;
            // In bounds of the entry (checked), which lies inside the file.
            let data = entry.start + t.bytes.start..entry.start + t.bytes.end;
            Ok(PickledTensor { name: t.name, dtype: t.dtype, shape: t.shape, data })
        })
        .collect()
}

/// A tensor as the pickle describes it: a contiguous run of bytes in storage `key`.
#[derive(Debug, Clone, PartialEq)]
struct StoredTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub key: String,
    /// Byte range inside the storage.
    pub bytes: Range<usize>,
    /// The storage's size in bytes as the pickle declares it.
    pub storage_bytes: usize,
}

impl StoredTensor {
    /// Refuses a storage entry too short for what the pickle declares.
    pub(crate) fn check_entry(&self, entry_len: u64) -> Result<()> {
        if self.storage_bytes as u64 > entry_len {
            return Err(PytorchError::StorageTooShort {
                key: self.key.clone(),
                declared: self.storage_bytes,
                actual: usize::try_from(entry_len).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }
}

/// Every tensor of a state-dict pickle, in its order, refusing anything not plainly contiguous.
fn stored_tensors(root: Value) -> Result<Vec<StoredTensor>> {
    let Value::Dict(map) = root else {
        return Err(PytorchError::NotStateDict(format!("the top-level object is a {}, not a dict", root.kind())));
    };
    let mut names = HashSet::with_capacity(map.items.len());
    let mut dtypes: HashMap<&str, DType> = HashMap::new();
    let mut out = Vec::with_capacity(map.items.len());
    for (k, v) in &map.items {
        let Value::Str(name) = k else {
            return Err(PytorchError::NotStateDict(format!("a key is a {}", k.kind())));
        };
        let Value::Tensor(t) = v else {
            return Err(PytorchError::NotStateDict(format!("entry {:?} is a {}, not a tensor", clip(name), v.kind())));
        };
        if !names.insert(&**name) {
            return Err(PytorchError::DuplicateName(name.to_string()));
        }
        let key = &*t.storage.key;
        if *dtypes.entry(key).or_insert(t.storage.dtype) != t.storage.dtype {
            return Err(PytorchError::StorageDtypeConflict(key.to_owned()));
        }
        out.push(describe(name, t)?);
    }
    Ok(out)
}

fn describe(name: &str, t: &TensorRef) -> Result<StoredTensor> {
    let overflow = || PytorchError::SizeOverflow { name: name.to_owned() };
    let dtype = t.storage.dtype;
    let elem = dtype.row_bytes(1);
    let shape = t.shape.iter().map(|&d| usize::try_from(d).map_err(|_| overflow())).collect::<Result<Vec<usize>>>()?;
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
    let nbytes = numel.checked_mul(elem).ok_or_else(overflow)?;

    // Row-major contiguity; a dim of size 1 may carry any stride, an empty tensor has
    // no data to lay out.
    if numel > 0 {
        let mut expected = 1usize;
        for (&size, &stride) in shape.iter().zip(&t.stride).rev() {
            if size != 1 && usize::try_from(stride).ok() != Some(expected) {
                return Err(PytorchError::NonContiguous(name.to_owned()));
            }
            expected = expected.saturating_mul(size);
        }
    }

    let declared = usize::try_from(t.storage.numel).ok().and_then(|n| n.checked_mul(elem)).ok_or_else(overflow)?;
    let start = usize::try_from(t.offset).ok().and_then(|o| o.checked_mul(elem)).ok_or_else(overflow)?;
    let end = start.checked_add(nbytes).ok_or_else(overflow)?;
    if end > declared {
        return Err(PytorchError::OutOfBounds { name: name.to_owned(), start, end, storage_len: declared });
    }
    Ok(StoredTensor {
        name: name.to_owned(),
        dtype,
        shape,
        key: t.storage.key.to_string(),
        bytes: start..end,
        storage_bytes: declared,
    })
}
