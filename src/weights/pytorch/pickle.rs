//! The restricted pickle machine that runs `data.pkl`: state-dict opcodes and five globals only.

use std::rc::Rc;

use super::{PytorchError, Result};
use crate::weights::DType;

// ---------------------------------------------------------------------------------------
// Restricted unpickler
// ---------------------------------------------------------------------------------------

// Generous for real checkpoints: a state dict uses about 12 memo entries and 20 container
// slots per tensor (so ~20k tensors fit; TokenFormer models have ~1k), and pickle batches
// SETITEMS by 1000 so the stack stays small. A hostile pickle that maxes out all three
// makes the reader hold about 100 MB at most.
pub(super) const MAX_STACK: usize = 1 << 18;
pub(super) const MAX_MEMO: usize = 1 << 18;
/// Values ever stored in containers (a dict pair counts 2), copies included. This also
/// bounds the cost of copy-on-write, the only super-linear operation.
pub(super) const MAX_SLOTS: usize = 1 << 19;
pub(super) const MAX_MARKS: usize = 64;
/// A state dict nests about 4 deep; the bound also keeps recursive drops shallow.
pub(super) const MAX_DEPTH: usize = 32;
pub(super) const MAX_GLOBAL_LINE: usize = 256;

#[derive(Clone, Copy, Debug)]
pub(super) enum Global {
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
pub(super) fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_GLOBAL_LINE) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[derive(Debug)]
pub(super) struct StorageRef {
    pub(super) dtype: DType,
    pub(super) key: Rc<str>,
    pub(super) numel: i64,
}

#[derive(Debug)]
pub(super) struct TensorRef {
    pub(super) storage: Rc<StorageRef>,
    pub(super) offset: i64,
    pub(super) shape: Vec<i64>,
    pub(super) stride: Vec<i64>,
}

#[derive(Clone, Debug)]
pub(super) struct Seq {
    items: Vec<Value>,
    depth: usize,
}

#[derive(Clone, Debug)]
pub(super) struct Map {
    pub(super) items: Vec<(Value, Value)>,
    depth: usize,
}

/// Pickle values. Containers are `Rc` so memo gets are O(1); they are mutated
/// copy-on-write, so values form a DAG (never a cycle) and copies are charged to the
/// slot budget. Unlike CPython, a memoized container does not see later mutations of
/// the copy on the stack; torch never reads a container back after filling it.
#[derive(Clone, Debug)]
pub(super) enum Value {
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

    pub(super) fn kind(&self) -> &'static str {
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

pub(super) struct Unpickler<'a> {
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
    pub(super) fn new(data: &'a [u8]) -> Self {
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

    pub(super) fn run(self) -> Result<Value> {
        Ok(self.run_to_stop()?.0)
    }

    /// Runs to STOP; returns the value and how many bytes the pickle took (a stream's data.pkl
    /// has no known length: it ends where its program does).
    pub(super) fn run_to_stop(mut self) -> Result<(Value, usize)> {
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
                    let value = self.pop()?;
                    return Ok((value, self.pos));
                }
                _ => {
                    return Err(PytorchError::UnsupportedOpcode { opcode: op, offset: self.op_at });
                }
            }
        }
    }
}
