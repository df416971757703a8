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

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::rc::Rc;

use crate::weights::{read_range, DType, WeightsFile};

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

/// `Read + Seek` over a [`WeightsFile`], for the zip reader.
struct FileCursor<'a> {
    file: &'a dyn WeightsFile,
    pos: u64,
}

impl std::io::Read for FileCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.file.size().saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.file.read_at(self.pos, &mut buf[..n]).map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for FileCursor<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let size = self.file.size();
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

// ---------------------------------------------------------------------------------------
// Zip archive
// ---------------------------------------------------------------------------------------

struct Archive {
    pickle: Range<usize>,
    /// Storage key -> byte range of its `data/<key>` entry in the file.
    storages: HashMap<String, Range<usize>>,
}

struct RawEntry {
    name: String,
    range: Range<usize>,
    stored: bool,
}

impl Archive {
    fn open(file: &dyn WeightsFile) -> Result<Archive> {
        // torch archives always start with a local file header; checking the magic first
        // gives a clear error for legacy (raw pickle) checkpoints and random files.
        if file.size() < 2 || read(file, &(0..2))? != b"PK" {
            return Err(PytorchError::NotZip);
        }
        let bad = |e: zip::result::ZipError| PytorchError::BadArchive(e.to_string());
        let mut zip = zip::ZipArchive::new(FileCursor { file, pos: 0 }).map_err(bad)?;
        // Duplicate names would let two readers see different contents.
        if zip.has_duplicate_names() {
            return Err(PytorchError::BadArchive("duplicate entry names".into()));
        }
        let mut entries = Vec::with_capacity(zip.len());
        for i in 0..zip.len() {
            // Raw access: we never decompress, we only need where the bytes are.
            let f = zip.by_index_raw(i).map_err(bad)?;
            let Ok(name) = std::str::from_utf8(f.name_raw()) else {
                continue; // cannot be one of the names we look for
            };
            let start = f
                .data_start()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| PytorchError::BadArchive(format!("entry {name} has no data offset")))?;
            let len = usize::try_from(f.compressed_size())
                .map_err(|_| PytorchError::BadArchive(format!("entry {name} is too large")))?;
            let end = start
                .checked_add(len)
                .filter(|&end| end as u64 <= file.size())
                .ok_or_else(|| PytorchError::BadArchive(format!("entry {name} extends past the end of the file")))?;
            let stored = f.compression() == zip::CompressionMethod::Stored && !f.encrypted();
            // A stored entry's two sizes must agree, or its length is ambiguous.
            if stored && f.compressed_size() != f.size() {
                return Err(PytorchError::BadArchive(format!("stored entry {name} has inconsistent sizes")));
            }
            entries.push(RawEntry { name: name.to_owned(), range: start..end, stored });
        }

        // The prefix is whatever single top folder holds data.pkl (`archive/`, `<stem>/`, ...).
        let mut pkls = entries
            .iter()
            .filter(|e| e.name.strip_suffix("/data.pkl").is_some_and(|top| !top.is_empty() && !top.contains('/')));
        let pkl = pkls.next().ok_or(PytorchError::NoDataPkl)?;
        if let Some(other) = pkls.next() {
            return Err(PytorchError::BadArchive(format!(
                "several data.pkl entries ({} and {})",
                pkl.name, other.name
            )));
        }
        let prefix = pkl.name.strip_suffix("data.pkl").unwrap_or_default();
        let data_prefix = format!("{prefix}data/");
        let byteorder_name = format!("{prefix}byteorder");

        let used =
            |e: &&RawEntry| std::ptr::eq(*e, pkl) || e.name == byteorder_name || e.name.starts_with(&data_prefix);
        if let Some(e) = entries.iter().filter(used).find(|e| !e.stored) {
            return Err(PytorchError::CompressedEntry(e.name.clone()));
        }

        // Old torch versions write no byteorder entry; they were little-endian only.
        if let Some(e) = entries.iter().find(|e| e.name == byteorder_name) {
            match read(file, &e.range)?.trim_ascii() {
                b"little" => {}
                b"big" => return Err(PytorchError::BigEndian),
                _ => return Err(PytorchError::BadArchive("unknown byteorder".into())),
            }
        }

        let storages = entries
            .iter()
            .filter_map(|e| {
                let key = e.name.strip_prefix(&data_prefix)?;
                Some((key.to_owned(), e.range.clone()))
            })
            .collect();
        Ok(Archive { pickle: pkl.range.clone(), storages })
    }
}

// ---------------------------------------------------------------------------------------
// Restricted unpickler
// ---------------------------------------------------------------------------------------

// Generous for real checkpoints: a state dict uses about 12 memo entries and 20 container
// slots per tensor (so ~20k tensors fit; TokenFormer models have ~1k), and pickle batches
// SETITEMS by 1000 so the stack stays small. A hostile pickle that maxes out all three
// makes the reader hold about 100 MB at most.
const MAX_STACK: usize = 1 << 18;
const MAX_MEMO: usize = 1 << 18;
/// Values ever stored in containers (a dict pair counts 2), copies included. This also
/// bounds the cost of copy-on-write, the only super-linear operation.
const MAX_SLOTS: usize = 1 << 19;
const MAX_MARKS: usize = 64;
/// A state dict nests about 4 deep; the bound also keeps recursive drops shallow.
const MAX_DEPTH: usize = 32;
const MAX_GLOBAL_LINE: usize = 256;

#[derive(Clone, Copy, Debug)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    Storage(DType),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Global> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch", "FloatStorage") => Global::Storage(DType::F32),
            ("torch", "HalfStorage") => Global::Storage(DType::F16),
            ("torch", "BFloat16Storage") => Global::Storage(DType::BF16),
            _ => {
                return Err(PytorchError::ForbiddenGlobal { module: clip(module), name: clip(name) });
            }
        })
    }

    fn describe(self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Global::Storage(d) => format!("torch storage class ({d:?})"),
        }
    }
}

/// Error messages quote attacker-chosen names; keep them short.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_GLOBAL_LINE) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[derive(Debug)]
struct StorageRef {
    dtype: DType,
    key: Rc<str>,
    numel: i64,
}

#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: i64,
    shape: Vec<i64>,
    stride: Vec<i64>,
}

#[derive(Clone, Debug)]
struct Seq {
    items: Vec<Value>,
    depth: usize,
}

#[derive(Clone, Debug)]
struct Map {
    items: Vec<(Value, Value)>,
    depth: usize,
}

/// Pickle values. Containers are `Rc` so memo gets are O(1); they are mutated
/// copy-on-write, so values form a DAG (never a cycle) and copies are charged to the
/// slot budget. Unlike CPython, a memoized container does not see later mutations of
/// the copy on the stack; torch never reads a container back after filling it.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// BINFLOAT is accepted as data; no state dict field needs its value.
    Float,
    Str(Rc<str>),
    Tuple(Rc<Seq>),
    List(Rc<Seq>),
    Dict(Rc<Map>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(s) | Value::List(s) => s.depth,
            Value::Dict(m) => m.depth,
            _ => 0,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

fn charge(slots_left: usize, n: usize) -> Result<usize> {
    slots_left.checked_sub(n).ok_or(PytorchError::LimitExceeded("too many container items"))
}

/// Depth of a container holding `items`, refused past `MAX_DEPTH`.
fn child_depth(items: &[Value]) -> Result<usize> {
    let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
    if depth > MAX_DEPTH {
        return Err(PytorchError::LimitExceeded("nesting too deep"));
    }
    Ok(depth)
}

/// `Rc::make_mut`, charging the copy (if the container is shared) to the slot budget.
fn make_mut<'v, T: Clone>(rc: &'v mut Rc<T>, len: impl Fn(&T) -> usize, slots_left: &mut usize) -> Result<&'v mut T> {
    if Rc::get_mut(rc).is_none() {
        *slots_left = charge(*slots_left, len(rc))?;
    }
    Ok(Rc::make_mut(rc))
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for error messages.
    op_at: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    /// Indexed by memo key; torch numbers keys densely from 0, so a capped table suffices.
    memo: Vec<Option<Value>>,
    /// Filled memo entries, which MEMOIZE uses as its next key (CPython's `len(memo)`).
    memo_len: usize,
    /// Container slots still allowed (see `MAX_SLOTS`).
    slots_left: usize,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            op_at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Vec::new(),
            memo_len: 0,
            slots_left: MAX_SLOTS,
        }
    }

    fn bad<T>(&self, msg: impl Into<String>) -> Result<T> {
        Err(PytorchError::BadPickle { offset: self.op_at, msg: msg.into() })
    }

    fn charge(&mut self, slots: usize) -> Result<()> {
        self.slots_left = charge(self.slots_left, slots)?;
        Ok(())
    }

    // --- input ---

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(PytorchError::Truncated)?;
        let bytes = self.data.get(self.pos..end).ok_or(PytorchError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn str_of_len(&mut self, len: usize) -> Result<Value> {
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(s.into())),
            Err(_) => self.bad("string is not valid UTF-8"),
        }
    }

    /// A newline-terminated GLOBAL argument.
    fn line(&mut self) -> Result<&'a str> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let Some(nl) = rest.iter().take(MAX_GLOBAL_LINE + 1).position(|&b| b == b'\n') else {
            return if rest.len() <= MAX_GLOBAL_LINE {
                Err(PytorchError::Truncated)
            } else {
                self.bad("GLOBAL name too long")
            };
        };
        let line = self.take(nl + 1)?;
        match std::str::from_utf8(&line[..nl]) {
            Ok(s) => Ok(s),
            Err(_) => self.bad("GLOBAL name is not valid UTF-8"),
        }
    }

    // --- stack ---

    /// Height below which the current frame may not pop (CPython keeps a stack per MARK).
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(PytorchError::LimitExceeded("stack too large"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return self.bad("stack underflow");
        }
        self.stack.pop().map_or_else(|| self.bad("stack underflow"), Ok)
    }

    fn top(&self) -> Result<&Value> {
        if self.stack.len() <= self.floor() {
            return self.bad("stack underflow");
        }
        self.stack.last().map_or_else(|| self.bad("stack underflow"), Ok)
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>> {
        if self.stack.len() < self.floor() + n {
            return self.bad("stack underflow");
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let Some(mark) = self.marks.pop() else {
            return self.bad("no MARK to pop to");
        };
        // Marks never sit above the stack: pops are bounded by the top mark.
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn seq(&mut self, items: Vec<Value>) -> Result<Rc<Seq>> {
        self.charge(items.len())?;
        let depth = child_depth(&items)?;
        Ok(Rc::new(Seq { items, depth }))
    }

    fn memo_put(&mut self, idx: u32) -> Result<()> {
        let i = idx as usize;
        if i >= MAX_MEMO {
            return Err(PytorchError::LimitExceeded("memo index too large"));
        }
        let v = self.top()?.clone();
        if i >= self.memo.len() {
            self.memo.resize(i + 1, None);
        }
        if let Some(slot) = self.memo.get_mut(i) {
            if slot.replace(v).is_none() {
                self.memo_len += 1;
            }
        }
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<()> {
        match self.memo.get(idx as usize) {
            Some(Some(v)) => {
                let v = v.clone();
                self.push(v)
            }
            _ => self.bad(format!("memo entry {idx} is missing")),
        }
    }

    /// The container on top of the stack, which SETITEM(S)/APPEND(S)/BUILD act on.
    fn top_mut(&mut self) -> Result<&mut Value> {
        if self.stack.len() <= self.floor() {
            return self.bad("stack underflow");
        }
        let op_at = self.op_at;
        self.stack.last_mut().ok_or(PytorchError::BadPickle { offset: op_at, msg: "stack underflow".into() })
    }

    fn set_items(&mut self, kv: Vec<Value>) -> Result<()> {
        if !kv.len().is_multiple_of(2) {
            return self.bad("odd number of items for SETITEMS");
        }
        let depth = child_depth(&kv)?;
        let mut slots_left = charge(self.slots_left, kv.len())?;
        let Value::Dict(rc) = self.top_mut()? else {
            return self.bad("SETITEM(S) target is not a dict");
        };
        let map = make_mut(rc, |m| 2 * m.items.len(), &mut slots_left)?;
        map.depth = map.depth.max(depth);
        let mut it = kv.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            // Duplicate keys are kept here and rejected by name in `collect_tensors`.
            map.items.push((k, v));
        }
        self.slots_left = slots_left;
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        let depth = child_depth(&items)?;
        let mut slots_left = charge(self.slots_left, items.len())?;
        let Value::List(rc) = self.top_mut()? else {
            return self.bad("APPEND(S) target is not a list");
        };
        let seq = make_mut(rc, |s| s.items.len(), &mut slots_left)?;
        seq.depth = seq.depth.max(depth);
        seq.items.extend(items);
        self.slots_left = slots_left;
        Ok(())
    }

    // --- the allowed calls, emulated as data ---

    fn reduce(&mut self, func: Value, args: Value) -> Result<Value> {
        let Value::Global(g) = func else {
            return Err(PytorchError::ForbiddenCall(format!("a {}", func.kind())));
        };
        let Value::Tuple(args) = args else {
            return self.bad("REDUCE arguments are not a tuple");
        };
        match g {
            Global::OrderedDict if args.items.is_empty() => {
                Ok(Value::Dict(Rc::new(Map { items: Vec::new(), depth: 1 })))
            }
            Global::OrderedDict => self.bad("OrderedDict called with arguments"),
            Global::RebuildTensorV2 => self.rebuild_tensor(&args.items),
            Global::Storage(_) => Err(PytorchError::ForbiddenCall(g.describe())),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`: records where the data is, nothing else.
    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value> {
        let [storage, offset, size, stride, requires_grad, hooks, rest @ ..] = args else {
            return self.bad("_rebuild_tensor_v2 needs 6 or 7 arguments");
        };
        let Value::Storage(storage) = storage else {
            return self.bad("_rebuild_tensor_v2: first argument is not a storage");
        };
        let Value::Int(offset) = *offset else {
            return self.bad("_rebuild_tensor_v2: storage offset is not an int");
        };
        let shape = self.int_tuple(size, "size")?;
        let stride = self.int_tuple(stride, "stride")?;
        if offset < 0 || shape.iter().chain(&stride).any(|&d| d < 0) {
            return self.bad("_rebuild_tensor_v2: negative offset, size or stride");
        }
        if shape.len() != stride.len() {
            return self.bad("_rebuild_tensor_v2: size and stride lengths differ");
        }
        if !matches!(requires_grad, Value::Bool(_)) {
            return self.bad("_rebuild_tensor_v2: requires_grad is not a bool");
        }
        // Hooks are never serialized: torch writes an empty OrderedDict.
        match hooks {
            Value::Dict(m) if m.items.is_empty() => {}
            Value::None => {}
            _ => return self.bad("_rebuild_tensor_v2: backward hooks are not empty"),
        }
        match rest {
            [] => {}
            // Metadata only carries conj/neg bits; a set bit would change the values.
            [Value::Dict(m)]
                if m.items.iter().all(|(k, v)| matches!(k, Value::Str(_)) && matches!(v, Value::Bool(false))) => {}
            _ => return self.bad("_rebuild_tensor_v2: unsupported tensor metadata"),
        }
        Ok(Value::Tensor(Rc::new(TensorRef { storage: storage.clone(), offset, shape, stride })))
    }

    fn int_tuple(&self, v: &Value, what: &str) -> Result<Vec<i64>> {
        let Value::Tuple(t) = v else {
            return self.bad(format!("_rebuild_tensor_v2: {what} is not a tuple"));
        };
        t.items
            .iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                _ => self.bad(format!("_rebuild_tensor_v2: {what} holds a non-int")),
            })
            .collect()
    }

    /// `('storage', <storage class>, key, location, numel)`, as torch writes it.
    fn persistent_load(&self, pid: Value) -> Result<Value> {
        let Value::Tuple(t) = pid else {
            return self.bad("persistent id is not a tuple");
        };
        match &t.items[..] {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel)]
                if &**tag == "storage" && *numel >= 0 =>
            {
                Ok(Value::Storage(Rc::new(StorageRef { dtype: *dtype, key: key.clone(), numel: *numel })))
            }
            _ => self.bad("unsupported persistent id (expected a torch storage reference)"),
        }
    }

    fn run(mut self) -> Result<Value> {
        loop {
            self.op_at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    if self.u8()? > 5 {
                        return self.bad("unknown pickle protocol");
                    }
                }
                0x95 => {
                    // FRAME: only a buffering hint; its length must fit the input.
                    let len = u64::from_le_bytes(self.array()?);
                    let left = self.data.len() - self.pos.min(self.data.len());
                    if usize::try_from(len).map_or(true, |l| l > left) {
                        return Err(PytorchError::Truncated);
                    }
                }
                b'}' => self.push(Value::Dict(Rc::new(Map { items: Vec::new(), depth: 1 })))?,
                b')' => {
                    let v = self.seq(Vec::new())?;
                    self.push(Value::Tuple(v))?;
                }
                b']' => {
                    let v = self.seq(Vec::new())?;
                    self.push(Value::List(v))?;
                }
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(PytorchError::LimitExceeded("too many nested MARKs"));
                    }
                    self.marks.push(self.stack.len());
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let v = self.seq(items)?;
                    self.push(Value::Tuple(v))?;
                }
                0x85..=0x87 => {
                    // TUPLE1, TUPLE2, TUPLE3
                    let items = self.pop_n(usize::from(op - 0x84))?;
                    let v = self.seq(items)?;
                    self.push(Value::Tuple(v))?;
                }
                b'X' => {
                    let len = self.u32()? as usize;
                    let s = self.str_of_len(len)?;
                    self.push(s)?;
                }
                0x8c => {
                    let len = usize::from(self.u8()?);
                    let s = self.str_of_len(len)?;
                    self.push(s)?;
                }
                0x8d => {
                    let len = u64::from_le_bytes(self.array()?);
                    let len = usize::try_from(len).map_err(|_| PytorchError::Truncated)?;
                    let s = self.str_of_len(len)?;
                    self.push(s)?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                0x8a => {
                    // LONG1: little-endian two's complement; we only need i64.
                    let n = usize::from(self.u8()?);
                    let bytes = self.take(n)?;
                    if n > 8 {
                        return self.bad("integer wider than 64 bits");
                    }
                    let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) { 0xff } else { 0 };
                    let mut buf = [fill; 8];
                    buf[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(buf)))?;
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float)?;
                }
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'N' => self.push(Value::None)?,
                b'q' => {
                    let idx = self.u8()?;
                    self.memo_put(idx.into())?;
                }
                b'r' => {
                    let idx = self.u32()?;
                    self.memo_put(idx)?;
                }
                0x94 => {
                    // MEMOIZE: next index is the memo's size, as in CPython.
                    let idx =
                        u32::try_from(self.memo_len).map_err(|_| PytorchError::LimitExceeded("memo too large"))?;
                    self.memo_put(idx)?;
                }
                b'h' => {
                    let idx = self.u8()?;
                    self.memo_get(idx.into())?;
                }
                b'j' => {
                    let idx = self.u32()?;
                    self.memo_get(idx)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(Global::resolve(module, name)?))?;
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return self.bad("STACK_GLOBAL arguments are not strings");
                    };
                    self.push(Value::Global(Global::resolve(&module, &name)?))?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.push(v)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)?;
                }
                b's' => {
                    let kv = self.pop_n(2)?;
                    self.set_items(kv)?;
                }
                b'u' => {
                    let kv = self.pop_mark()?;
                    self.set_items(kv)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'b' => {
                    // BUILD sets instance attributes; on a state dict that is `_metadata`
                    // (per-module versions), which we drop. Anything else is refused.
                    let state = self.pop()?;
                    if !matches!(self.top()?, Value::Dict(_)) {
                        return self.bad("BUILD target is not a dict");
                    }
                    match state {
                        Value::None => {}
                        Value::Dict(m) if m.items.iter().all(|(k, _)| matches!(k, Value::Str(_))) => {}
                        _ => return self.bad("BUILD state is not an attribute dict"),
                    }
                }
                b'.' => {
                    if !self.marks.is_empty() || self.stack.len() != 1 {
                        return self.bad("STOP with a MARK open or extra stack items");
                    }
                    return self.pop();
                }
                _ => {
                    return Err(PytorchError::UnsupportedOpcode { opcode: op, offset: self.op_at });
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// From pickle values to tensors
// ---------------------------------------------------------------------------------------

fn collect_tensors(root: Value, storages: &HashMap<String, Range<usize>>) -> Result<Vec<PickledTensor>> {
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
        out.push(locate(name, t, storages)?);
    }
    Ok(out)
}

/// Computes the tensor's byte range in the file, refusing anything not plainly contiguous.
fn locate(name: &str, t: &TensorRef, storages: &HashMap<String, Range<usize>>) -> Result<PickledTensor> {
    let overflow = || PytorchError::SizeOverflow { name: name.to_owned() };
    let dtype = t.storage.dtype;
    let elem = dtype.size();
    let key = &*t.storage.key;
    let entry = storages.get(key).ok_or_else(|| PytorchError::MissingStorage(key.to_owned()))?;

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
    if declared > entry.len() {
        return Err(PytorchError::StorageTooShort { key: key.to_owned(), declared, actual: entry.len() });
    }
    let start = usize::try_from(t.offset).ok().and_then(|o| o.checked_mul(elem)).ok_or_else(overflow)?;
    let end = start.checked_add(nbytes).ok_or_else(overflow)?;
    if end > declared {
        return Err(PytorchError::OutOfBounds { name: name.to_owned(), start, end, storage_len: declared });
    }
    // In bounds of the entry (checked above), which lies inside the file.
    let file_start = entry.start + start;
    Ok(PickledTensor { name: name.to_owned(), dtype, shape, data: file_start..file_start + nbytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read_state_dict(file: &[u8]) -> Result<Vec<PickledTensor>> {
        super::read_state_dict(&file)
    }
    use std::io::Write;

    macro_rules! testdata {
        ($file:literal) => {
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pytorch/", $file))
                .expect(concat!("missing test file ", $file))
        };
    }

    // --- decoding helpers ---

    fn f32s(file: &[u8], t: &PickledTensor) -> Vec<f32> {
        assert_eq!(t.dtype, DType::F32);
        file[t.data.clone()].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    fn f16_to_f32(h: u16) -> f32 {
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let exp = i32::from((h >> 10) & 0x1f);
        let man = f32::from(h & 0x3ff);
        sign * match exp {
            0 => man * 2f32.powi(-24),
            31 if man == 0.0 => f32::INFINITY,
            31 => f32::NAN,
            _ => (1.0 + man / 1024.0) * 2f32.powi(exp - 15),
        }
    }

    fn halves(file: &[u8], t: &PickledTensor) -> Vec<f32> {
        file[t.data.clone()]
            .chunks_exact(2)
            .map(|c| {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                match t.dtype {
                    DType::F16 => f16_to_f32(bits),
                    DType::BF16 => f32::from_bits(u32::from(bits) << 16),
                    DType::F32 => panic!("not a half type"),
                }
            })
            .collect()
    }

    fn find<'t>(ts: &'t [PickledTensor], name: &str) -> &'t PickledTensor {
        ts.iter().find(|t| t.name == name).expect(name)
    }

    // --- builders for hand-made archives and pickles ---

    fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// A torch-like archive under `archive/`, with `storages` as `archive/data/<key>`.
    fn archive(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
        let mut entries: Vec<(String, &[u8])> =
            vec![("archive/data.pkl".into(), pkl), ("archive/byteorder".into(), b"little")];
        for (k, d) in storages {
            entries.push((format!("archive/data/{k}"), d));
        }
        entries.push(("archive/version".into(), b"3\n"));
        let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        zip(&refs)
    }

    /// Emits protocol-2 pickles shaped like torch's.
    struct P(Vec<u8>);

    impl P {
        fn new() -> P {
            P(vec![0x80, 2])
        }
        fn op(&mut self, bytes: &[u8]) -> &mut P {
            self.0.extend_from_slice(bytes);
            self
        }
        fn global(&mut self, module: &str, name: &str) -> &mut P {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
        fn str(&mut self, s: &str) -> &mut P {
            self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
        }
        fn int(&mut self, v: i64) -> &mut P {
            self.op(&[0x8a, 8]).op(&v.to_le_bytes())
        }
        fn ints(&mut self, vs: &[i64]) -> &mut P {
            self.op(b"(");
            for &v in vs {
                self.int(v);
            }
            self.op(b"t")
        }
        fn storage(&mut self, class: &str, key: &str, numel: i64) -> &mut P {
            self.op(b"(").str("storage").global("torch", class).str(key).str("cpu").int(numel).op(b"tQ")
        }
        #[allow(clippy::too_many_arguments)]
        fn tensor(&mut self, class: &str, key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> &mut P {
            self.global("torch._utils", "_rebuild_tensor_v2")
                .op(b"(")
                .storage(class, key, numel)
                .int(offset)
                .ints(size)
                .ints(stride)
                .op(&[0x89])
                .global("collections", "OrderedDict")
                .op(b")R")
                .op(b"tR")
        }
        fn dict_start(&mut self) -> &mut P {
            self.global("collections", "OrderedDict").op(b")R(")
        }
        fn dict_end(&mut self) -> Vec<u8> {
            self.op(b"u.").done()
        }
        fn done(&mut self) -> Vec<u8> {
            self.0.clone()
        }
    }

    /// `{name: f32 tensor over storage "0"}`.
    fn one_tensor(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
        P::new().dict_start().str("w").tensor("FloatStorage", "0", numel, offset, size, stride).dict_end()
    }

    fn f32_bytes(vs: &[f32]) -> Vec<u8> {
        vs.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    // --- real torch.save files (tools/make_pytorch_testdata.py) ---

    fn check_mixed(file: &[u8]) {
        let ts = read_state_dict(file).unwrap();
        let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w_f32", "w_f16", "w_bf16", "scalar", "view_a", "view_b", "empty"]);

        let t = find(&ts, "w_f32");
        assert_eq!((t.dtype, t.shape.as_slice()), (DType::F32, &[2, 3][..]));
        assert_eq!(f32s(file, t), [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);

        let t = find(&ts, "w_f16");
        assert_eq!((t.dtype, t.shape.as_slice()), (DType::F16, &[3][..]));
        assert_eq!(halves(file, t), [1.5, -2.0, 0.25]);

        let t = find(&ts, "w_bf16");
        assert_eq!((t.dtype, t.shape.as_slice()), (DType::BF16, &[2, 2][..]));
        assert_eq!(halves(file, t), [1.0, -1.5, 3.0, 0.125]);

        let t = find(&ts, "scalar");
        assert_eq!((t.dtype, t.shape.as_slice()), (DType::F32, &[][..]));
        assert_eq!(f32s(file, t), [3.25]);

        // Two views of one arange(10) storage, at element offsets 2 and 5.
        let a = find(&ts, "view_a");
        let b = find(&ts, "view_b");
        assert_eq!(a.shape, [4]);
        assert_eq!(b.shape, [2, 2]);
        assert_eq!(f32s(file, a), [2.0, 3.0, 4.0, 5.0]);
        assert_eq!(f32s(file, b), [5.0, 6.0, 7.0, 8.0]);
        assert_eq!(b.data.start - a.data.start, 3 * 4);

        let t = find(&ts, "empty");
        assert_eq!(t.shape, [0, 3]);
        assert!(t.data.is_empty());
    }

    #[test]
    fn real_mixed_dtypes_scalar_shared_storage() {
        check_mixed(&testdata!("mixed.bin"));
    }

    #[test]
    fn real_protocol4_pickle() {
        check_mixed(&testdata!("mixed_proto4.bin"));
    }

    #[test]
    fn real_module_state_dict_with_metadata_build() {
        let file = testdata!("module_f16.bin");
        let ts = read_state_dict(&file).unwrap();
        let got: Vec<(&str, DType, &[usize])> =
            ts.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice())).collect();
        assert_eq!(
            got,
            [
                ("0.weight", DType::F16, &[3, 2][..]),
                ("0.bias", DType::F16, &[3][..]),
                ("1.weight", DType::F16, &[3][..]),
                ("1.bias", DType::F16, &[3][..]),
            ]
        );
        assert_eq!(halves(&file, &ts[0]), [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]);
        assert_eq!(halves(&file, &ts[1]), [-1.0, 0.0, 1.0]);
        assert_eq!(halves(&file, &ts[2]), [2.0, 4.0, 8.0]);
        assert_eq!(halves(&file, &ts[3]), [0.5, 0.75, 1.0]);
    }

    #[test]
    fn real_transposed_tensor_is_refused() {
        let err = read_state_dict(&testdata!("transposed.bin")).unwrap_err();
        assert!(matches!(&err, PytorchError::NonContiguous(n) if n == "t"), "{err}");
    }

    #[test]
    fn real_deflated_archive_is_refused() {
        let err = read_state_dict(&testdata!("deflated.bin")).unwrap_err();
        assert!(matches!(&err, PytorchError::CompressedEntry(n) if n.starts_with("mixed/")), "{err}");
    }

    #[test]
    fn legacy_non_zip_format_is_refused() {
        let err = read_state_dict(&testdata!("legacy.bin")).unwrap_err();
        assert!(matches!(err, PytorchError::NotZip), "{err}");
    }

    // --- archive-level errors ---

    #[test]
    fn empty_and_random_files_are_not_zip() {
        assert!(matches!(read_state_dict(&[]), Err(PytorchError::NotZip)));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(matches!(read_state_dict(&random), Err(PytorchError::NotZip)));
        // Zip magic followed by garbage.
        let mut fake = b"PK\x03\x04".to_vec();
        fake.extend_from_slice(&random);
        assert!(matches!(read_state_dict(&fake), Err(PytorchError::BadArchive(_))));
    }

    #[test]
    fn zip_without_data_pkl() {
        let file = zip(&[("archive/version", b"3\n"), ("archive/data/0", &[0; 4])]);
        assert!(matches!(read_state_dict(&file), Err(PytorchError::NoDataPkl)));
        // data.pkl must sit in a top folder, not at the root.
        let file = zip(&[("data.pkl", b"\x80\x02}.")]);
        assert!(matches!(read_state_dict(&file), Err(PytorchError::NoDataPkl)));
    }

    #[test]
    fn two_data_pkl_entries_are_ambiguous() {
        let pkl = P::new().dict_start().dict_end();
        let file = zip(&[("a/data.pkl", &pkl), ("b/data.pkl", &pkl)]);
        assert!(matches!(read_state_dict(&file), Err(PytorchError::BadArchive(_))));
    }

    #[test]
    fn big_endian_is_refused() {
        let pkl = P::new().dict_start().dict_end();
        let file = zip(&[("archive/data.pkl", &pkl), ("archive/byteorder", b"big")]);
        assert!(matches!(read_state_dict(&file), Err(PytorchError::BigEndian)));
    }

    #[test]
    fn any_top_folder_name_and_no_byteorder() {
        let pkl = one_tensor(2, 0, &[2], &[1]);
        let data = f32_bytes(&[7.0, 8.0]);
        let file = zip(&[("pytorch_model/data.pkl", &pkl), ("pytorch_model/data/0", &data)]);
        let ts = read_state_dict(&file).unwrap();
        assert_eq!(ts.len(), 1);
        assert_eq!(f32s(&file, &ts[0]), [7.0, 8.0]);
    }

    // --- malicious pickles ---

    fn forbidden(pkl: &[u8], module: &str, name: &str) {
        let err = read_state_dict(&archive(pkl, &[])).unwrap_err();
        assert!(
            matches!(&err, PytorchError::ForbiddenGlobal { module: m, name: n } if m == module && n == name),
            "{err}"
        );
    }

    #[test]
    fn python_reduce_exploits_are_refused() {
        // pickle.dumps(obj, protocol=2) where obj.__reduce__ returns (os.system, ("echo pwned",)).
        forbidden(b"\x80\x02cposix\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.", "posix", "system");
        // Same with builtins.eval (protocol 2 spells it __builtin__).
        forbidden(
            b"\x80\x02c__builtin__\neval\nq\x00X%\x00\x00\x00__import__('os').system('echo pwned')q\x01\x85q\x02Rq\x03.",
            "__builtin__",
            "eval",
        );
        forbidden(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.", "os", "system");
        forbidden(b"\x80\x02csubprocess\nPopen\nX\x02\x00\x00\x00id\x85R.", "subprocess", "Popen");
        // Protocol 4 STACK_GLOBAL route.
        forbidden(b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x85R.", "builtins", "eval");
        // Not needed by plain state dicts, so not allowed either.
        forbidden(
            &P::new().global("torch._utils", "_rebuild_parameter").op(b")R.").done(),
            "torch._utils",
            "_rebuild_parameter",
        );
        // Inside an otherwise valid state dict: refused at the GLOBAL, before any call.
        let pkl = P::new().dict_start().str("w").global("os", "system").str("id").op(&[0x85]).op(b"R").dict_end();
        forbidden(&pkl, "os", "system");
    }

    #[test]
    fn allowed_but_wrong_callables_are_refused() {
        // A storage class is allowed as a type tag, never as a function.
        let pkl = P::new().global("torch", "FloatStorage").op(b")R.").done();
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::ForbiddenCall(_)), "{err}");
        // Calling a non-global (a string).
        let pkl = P::new().str("os.system").op(b")R.").done();
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::ForbiddenCall(_)), "{err}");
        // OrderedDict with arguments is not what torch writes.
        let pkl = P::new().global("collections", "OrderedDict").op(b"]").op(&[0x85]).op(b"R.").done();
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
    }

    #[test]
    fn unsupported_opcode_is_named() {
        // INST (`i`) can instantiate arbitrary classes.
        let pkl = b"\x80\x02(ios\nsystem\n.";
        let err = read_state_dict(&archive(pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::UnsupportedOpcode { opcode: b'i', offset: 3 }), "{err}");
    }

    #[test]
    fn truncated_pickles_are_errors() {
        let data = f32_bytes(&[1.0, 2.0]);
        let pkl = one_tensor(2, 0, &[2], &[1]);
        assert!(read_state_dict(&archive(&pkl, &[("0", &data)])).is_ok());
        for cut in 0..pkl.len() {
            let err = read_state_dict(&archive(&pkl[..cut], &[("0", &data)])).unwrap_err();
            assert!(matches!(err, PytorchError::Truncated), "cut {cut}: {err}");
        }
        // A string length running past the end.
        let err = read_state_dict(&archive(b"\x80\x02X\xff\xff\xff\x7fab", &[])).unwrap_err();
        assert!(matches!(err, PytorchError::Truncated), "{err}");
    }

    #[test]
    fn top_level_must_be_a_dict_of_tensors() {
        let err = read_state_dict(&archive(b"\x80\x02]q\x00(K\x01K\x02e.", &[])).unwrap_err();
        assert!(matches!(&err, PytorchError::NotStateDict(m) if m.contains("list")), "{err}");
        let pkl = P::new().dict_start().str("w").int(3).dict_end();
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(&err, PytorchError::NotStateDict(m) if m.contains("int")), "{err}");
        // A training checkpoint ({'model': {...}}) is not a state dict either.
        let pkl = P::new().dict_start().str("model").op(b"}").dict_end();
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::NotStateDict(_)), "{err}");
    }

    #[test]
    fn missing_storage() {
        let pkl = P::new().dict_start().str("w").tensor("FloatStorage", "7", 1, 0, &[1], &[1]).dict_end();
        let data = f32_bytes(&[1.0]);
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(matches!(&err, PytorchError::MissingStorage(k) if k == "7"), "{err}");
    }

    #[test]
    fn size_overflow() {
        let data = f32_bytes(&[1.0]);
        let big = 1i64 << 62;
        let pkl = one_tensor(1, 0, &[big, big], &[big, 1]);
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(matches!(&err, PytorchError::SizeOverflow { name } if name == "w"), "{err}");
        // numel fits but bytes do not.
        let pkl = one_tensor(1, 0, &[big], &[1]);
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(matches!(err, PytorchError::SizeOverflow { .. }), "{err}");
        // Storage offset in bytes overflows.
        let pkl = one_tensor(1, i64::MAX, &[1], &[1]);
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(matches!(err, PytorchError::SizeOverflow { .. }), "{err}");
        // Negative sizes never reach the arithmetic.
        let pkl = one_tensor(1, 0, &[-1], &[1]);
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
    }

    #[test]
    fn storage_too_short_for_tensor() {
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
        // Storage of 4 floats, tensor wants elements 2..6.
        let pkl = one_tensor(4, 2, &[4], &[1]);
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(
            matches!(&err, PytorchError::OutOfBounds { name, start: 8, end: 24, storage_len: 16 } if name == "w"),
            "{err}"
        );
        // The pickle claims 100 floats but the entry holds 4.
        let pkl = one_tensor(100, 0, &[4], &[1]);
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(
            matches!(&err, PytorchError::StorageTooShort { key, declared: 400, actual: 16 } if key == "0"),
            "{err}"
        );
        // In bounds at the very end is fine.
        let pkl = one_tensor(4, 2, &[2], &[1]);
        let file = archive(&pkl, &[("0", &data)]);
        let ts = read_state_dict(&file).unwrap();
        assert_eq!(f32s(&file, &ts[0]), [3.0, 4.0]);
    }

    #[test]
    fn strides_contiguity() {
        let data = f32_bytes(&[0.0; 6]);
        let ok =
            |size: &[i64], stride: &[i64]| read_state_dict(&archive(&one_tensor(6, 0, size, stride), &[("0", &data)]));
        assert!(ok(&[2, 3], &[3, 1]).is_ok());
        // Size-1 dims may have any stride (torch writes such strides for unsqueezed views).
        assert!(ok(&[2, 1, 3], &[3, 99, 1]).is_ok());
        assert!(ok(&[], &[]).is_ok());
        assert!(matches!(ok(&[2, 3], &[1, 2]), Err(PytorchError::NonContiguous(_))));
        assert!(matches!(ok(&[3, 2], &[2, 2]), Err(PytorchError::NonContiguous(_))));
        assert!(matches!(ok(&[2, 3], &[3]), Err(PytorchError::BadPickle { .. })));
    }

    #[test]
    fn views_with_conflicting_dtypes_or_names() {
        let data = f32_bytes(&[1.0, 2.0]);
        let pkl = P::new()
            .dict_start()
            .str("a")
            .tensor("FloatStorage", "0", 2, 0, &[2], &[1])
            .str("b")
            .tensor("HalfStorage", "0", 4, 0, &[4], &[1])
            .dict_end();
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(matches!(err, PytorchError::StorageDtypeConflict(_)), "{err}");

        let pkl = P::new()
            .dict_start()
            .str("a")
            .tensor("FloatStorage", "0", 2, 0, &[1], &[1])
            .str("a")
            .tensor("FloatStorage", "0", 2, 1, &[1], &[1])
            .dict_end();
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(matches!(&err, PytorchError::DuplicateName(n) if n == "a"), "{err}");
    }

    #[test]
    fn bad_persistent_ids_and_build_states() {
        // A persistent id that is not a storage reference.
        let pkl = P::new().str("storage").op(b"Q.").done();
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
        // BUILD with a tuple state (slot state) is not something a state dict needs.
        let pkl = P::new().dict_start().op(b"u").op(b")b.").done();
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
        // Tensor metadata with the neg bit set would change the values.
        let pkl = P::new()
            .dict_start()
            .str("w")
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(")
            .storage("FloatStorage", "0", 1)
            .int(0)
            .ints(&[1])
            .ints(&[1])
            .op(&[0x89])
            .op(b"}")
            .op(b"}")
            .str("neg")
            .op(&[0x88])
            .op(b"s")
            .op(b"tR")
            .dict_end();
        let data = f32_bytes(&[1.0]);
        let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
        assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
    }

    #[test]
    fn limits_hold() {
        // Deep nesting: () wrapped in TUPLE1 again and again.
        let mut pkl = b"\x80\x02)".to_vec();
        pkl.extend(std::iter::repeat_n(0x85u8, 100));
        pkl.push(b'.');
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::LimitExceeded(_)), "{err}");

        // Too many open MARKs.
        let mut pkl = b"\x80\x02".to_vec();
        pkl.extend(std::iter::repeat_n(b'(', 1000));
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::LimitExceeded(_)), "{err}");

        // Memoizing a dict before every SETITEM forces a copy each time: quadratic work,
        // which the slot budget stops.
        let mut pkl = b"\x80\x02}".to_vec();
        for i in 0..5000u16 {
            pkl.extend_from_slice(b"q\x00M");
            pkl.extend_from_slice(&i.to_le_bytes());
            pkl.extend_from_slice(b"Ns");
        }
        pkl.push(b'.');
        let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
        assert!(matches!(err, PytorchError::LimitExceeded(_)), "{err}");

        // Memo gets of a missing index, underflow past a MARK.
        let err = read_state_dict(&archive(b"\x80\x02h\x05.", &[])).unwrap_err();
        assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
        let err = read_state_dict(&archive(b"\x80\x02N(\x85.", &[])).unwrap_err();
        assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
        // Absolute caps, each reached with a small input (unzipped, to keep debug runs fast).
        let mut pkl = b"\x80\x02".to_vec();
        pkl.extend(std::iter::repeat_n(b'N', MAX_STACK + 1));
        let err = Unpickler::new(&pkl).run().unwrap_err();
        assert!(matches!(err, PytorchError::LimitExceeded(m) if m.contains("stack")), "{err}");
        let mut pkl = b"\x80\x02N".to_vec();
        pkl.extend(std::iter::repeat_n(0x94, MAX_MEMO + 1));
        let err = Unpickler::new(&pkl).run().unwrap_err();
        assert!(matches!(err, PytorchError::LimitExceeded(m) if m.contains("memo")), "{err}");
        let mut pkl = b"\x80\x02]".to_vec();
        for _ in 0..=MAX_SLOTS / 1000 {
            pkl.push(b'(');
            pkl.extend(std::iter::repeat_n(b'N', 1000));
            pkl.push(b'e');
        }
        let err = Unpickler::new(&pkl).run().unwrap_err();
        assert!(matches!(err, PytorchError::LimitExceeded(m) if m.contains("items")), "{err}");

        // A sparse memo key cannot inflate the memo table.
        let err = Unpickler::new(b"\x80\x02Nr\xff\xff\xff\xff.").run().unwrap_err();
        assert!(matches!(err, PytorchError::LimitExceeded(_)), "{err}");

        // Over-wide LONG1.
        let err = read_state_dict(&archive(b"\x80\x02\x8a\x09123456789.", &[])).unwrap_err();
        assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
    }

    #[test]
    fn mutated_files_never_panic() {
        let originals = [testdata!("mixed.bin"), testdata!("module_f16.bin")];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut ok, mut err) = (0, 0);
        for i in 0..2000 {
            let mut file = originals[i % 2].clone();
            let pkl = Archive::open(&&file[..]).unwrap().pickle;
            for _ in 0..1 + next() % 8 {
                // Half the hits go into data.pkl so the unpickler sees most of them.
                let pos = if next() % 2 == 0 {
                    pkl.start + (next() as usize) % pkl.len()
                } else {
                    (next() as usize) % file.len()
                };
                file[pos] = match next() % 3 {
                    0 => file[pos] ^ (1 << (next() % 8)),
                    1 => next() as u8,
                    _ => [0x00, 0x7f, 0x80, 0xff][(next() % 4) as usize],
                };
            }
            if next() % 8 == 0 {
                file.truncate((next() as usize) % file.len());
            }
            match read_state_dict(&file) {
                Ok(ts) => {
                    ok += 1;
                    for t in ts {
                        assert!(t.data.end <= file.len());
                    }
                }
                Err(_) => err += 1,
            }
        }
        // Both outcomes must occur, or the mutations are not reaching anything.
        assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
    }
}
