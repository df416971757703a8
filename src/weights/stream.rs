//! Weights read as a stream: the file's bytes arrive in order, in chunks of any size (a download,
//! a file read front to back), and each tensor's rows reach a [`TensorSink`] as soon as they are
//! whole. Only the header (safetensors) or `data.pkl` (pytorch_model.bin) and one partial row per
//! tensor are ever held, so a checkpoint larger than memory loads as easily as a small one.

use super::pytorch::stream::ZipStream;
use super::safetensors;
use super::{DType, WeightsFormat};
use crate::error::{Error, Result};

/// A tensor as the file describes it, before its data.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Values per row: the last dimension (a scalar is one row of one).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn rows(&self) -> usize {
        match self.shape.split_last() {
            Some((_, lead)) => lead.iter().product(),
            None => 1,
        }
    }
}

/// Where a stream's tensors go: a model in memory, GPU buffers, a converted copy.
pub trait TensorSink {
    /// Every tensor of the file, in file order, before any data: check names and shapes here.
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()>;
    /// Rows `row0..` of tensor `index` (of `begin`'s list), decoded to f32: `values.len()` is a
    /// whole number of rows. Each tensor's rows arrive in order, each exactly once.
    fn rows(&mut self, index: usize, row0: usize, values: &[f32]) -> Result<()>;
    /// Rows `row0..` of a quantized tensor (dtype Q8 or Q4), as stored: whole rows of blocks,
    /// whose scales are finite. Arrive as `rows` do.
    fn blocks(&mut self, index: usize, row0: usize, blocks: &[u8]) -> Result<()>;
}

/// Rows are decoded and handed over in blocks of about this many bytes of f32.
const BLOCK_BYTES: usize = 1 << 20;

/// Puts each tensor's bytes together into whole rows for the sink.
pub(crate) struct Router {
    tensors: Vec<Assembly>,
    decoded: Vec<f32>,
}

struct Assembly {
    name: String,
    dtype: DType,
    row_bytes: usize,
    cols: usize,
    rows: usize,
    next_row: usize,
    partial: Vec<u8>,
}

impl Router {
    /// Announces `tensors` to the sink.
    pub(crate) fn begin(tensors: &[TensorInfo], sink: &mut dyn TensorSink) -> Result<Router> {
        sink.begin(tensors)?;
        let tensors = tensors
            .iter()
            .map(|t| Assembly {
                name: t.name.clone(),
                dtype: t.dtype,
                row_bytes: t.dtype.row_bytes(t.cols()),
                cols: t.cols(),
                rows: if t.cols() == 0 { 0 } else { t.rows() },
                next_row: 0,
                partial: Vec::new(),
            })
            .collect();
        Ok(Router { tensors, decoded: Vec::new() })
    }

    /// The next bytes of tensor `index`.
    pub(crate) fn feed(&mut self, index: usize, mut bytes: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
        let a = &mut self.tensors[index];
        if a.row_bytes == 0 {
            return Ok(());
        }
        if !a.partial.is_empty() {
            let take = (a.row_bytes - a.partial.len()).min(bytes.len());
            a.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if a.partial.len() < a.row_bytes {
                return Ok(());
            }
            let row = std::mem::take(&mut a.partial);
            deliver(a, index, &row, &mut self.decoded, sink)?;
            a.partial = row;
            a.partial.clear();
        }
        let whole = bytes.len() / a.row_bytes * a.row_bytes;
        let block = (BLOCK_BYTES / (4 * a.cols)).max(1) * a.row_bytes;
        for rows in bytes[..whole].chunks(block) {
            deliver(a, index, rows, &mut self.decoded, sink)?;
        }
        a.partial.extend_from_slice(&bytes[whole..]);
        Ok(())
    }

    /// The first tensor whose rows have not all arrived.
    pub(crate) fn incomplete(&self) -> Option<&str> {
        self.tensors.iter().find(|a| a.next_row < a.rows).map(|a| a.name.as_str())
    }
}

/// Decodes whole rows and hands them to the sink.
fn deliver(
    a: &mut Assembly,
    index: usize,
    bytes: &[u8],
    decoded: &mut Vec<f32>,
    sink: &mut dyn TensorSink,
) -> Result<()> {
    let n = bytes.len() / a.row_bytes;
    if a.next_row + n > a.rows {
        return Err(Error::Usage(format!("tensor {} received more rows than its shape holds", a.name)));
    }
    if let Some(format) = a.dtype.quant() {
        for (r, row) in bytes.chunks_exact(a.row_bytes).enumerate() {
            format.check_row(row).map_err(|e| Error::BadBlocks {
                name: super::safetensors::quantized_name(&a.name, format),
                message: format!("row {}: {e}", a.next_row + r),
            })?;
        }
        sink.blocks(index, a.next_row, bytes)?;
        a.next_row += n;
        return Ok(());
    }
    decoded.clear();
    a.dtype.decode(bytes, a.cols, decoded);
    // No TokenFormer tensor may hold NaN or infinity: refused as it arrives, in either format.
    if decoded.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite { name: a.name.clone() });
    }
    sink.rows(index, a.next_row, decoded)?;
    a.next_row += n;
    Ok(())
}

/// A weights file (either format) parsed as its bytes arrive: [`WeightStream::push`] each chunk,
/// then [`WeightStream::finish`]. Errors are the same as reading the whole file would give, and
/// once one is returned the stream refuses further bytes.
pub struct WeightStream {
    /// The file's size when known (an HTTP Content-Length, a file's length): lets errors name it.
    size: Option<u64>,
    pos: u64,
    state: State,
    router: Option<Router>,
    /// CRC-32 of every byte taken, so a copy (a cache entry) can be checked against the original.
    crc: crc32fast::Hasher,
}

enum State {
    /// The first bytes, until the format is known.
    Detect(Vec<u8>),
    Safetensors(SafetensorsStream),
    Pytorch(Box<ZipStream>),
    Failed,
}

impl WeightStream {
    pub fn new(size: Option<u64>) -> Self {
        WeightStream { size, pos: 0, state: State::Detect(Vec::new()), router: None, crc: crc32fast::Hasher::new() }
    }

    /// CRC-32 of the bytes taken so far.
    pub fn checksum(&self) -> u32 {
        self.crc.clone().finalize()
    }

    /// Bytes taken so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next bytes of the file.
    pub fn push(&mut self, bytes: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
        self.crc.update(bytes);
        let result = self.step(bytes, sink);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn step(&mut self, mut bytes: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
        if let State::Detect(head) = &mut self.state {
            let take = (9 - head.len()).min(bytes.len());
            head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if head.len() < 9 {
                return Ok(());
            }
            let head = std::mem::take(head);
            self.state = match WeightsFormat::detect(&head, self.size.unwrap_or(u64::MAX))? {
                WeightsFormat::Safetensors => State::Safetensors(SafetensorsStream::default()),
                WeightsFormat::Pytorch => State::Pytorch(Box::default()),
            };
            self.feed(&head, sink)?;
        }
        self.feed(bytes, sink)
    }

    fn feed(&mut self, bytes: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
        let at = self.pos;
        self.pos += bytes.len() as u64;
        match &mut self.state {
            State::Safetensors(s) => s.push(at, bytes, self.size, &mut self.router, sink),
            State::Pytorch(z) => Ok(z.push(at, bytes, &mut self.router, sink)?),
            State::Detect(_) => Ok(()),
            State::Failed => Err(Error::Usage("the weights stream already failed".into())),
        }
    }

    /// The end of the file: refuses a file that ended early (or went on past its tensors).
    pub fn finish(self) -> Result<()> {
        let size = self.pos;
        match self.state {
            State::Detect(head) => {
                let size = head.len() as u64;
                WeightsFormat::detect(&head, size)?;
                // Fewer than 9 bytes, but a known format's start: too short either way.
                Err(safetensors::too_short(size))
            }
            State::Safetensors(s) => s.finish(size, self.router.as_ref()),
            State::Pytorch(z) => Ok(z.finish(size, self.router.as_ref())?),
            State::Failed => Err(Error::Usage("the weights stream already failed".into())),
        }?;
        match self.router.as_ref().and_then(Router::incomplete) {
            Some(name) => Err(Error::Usage(format!("the weights file ended before the data of tensor {name}"))),
            None => Ok(()),
        }
    }
}

/// safetensors: an 8-byte length, a JSON header, then every tensor's data back to back.
#[derive(Default)]
struct SafetensorsStream {
    header: Vec<u8>,
    header_len: Option<u64>,
    /// Tensor ranges in file order, once the header is read.
    ranges: Vec<std::ops::Range<u64>>,
    /// The tensor the next data byte belongs to.
    next: usize,
}

impl SafetensorsStream {
    fn push(
        &mut self,
        mut at: u64,
        mut bytes: &[u8],
        size: Option<u64>,
        router: &mut Option<Router>,
        sink: &mut dyn TensorSink,
    ) -> Result<()> {
        if router.is_none() {
            let want = 8 + self.header_len.unwrap_or(0) as usize;
            let take = (want - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            (at, bytes) = (at + take as u64, &bytes[take..]);
            if self.header.len() < want {
                return Ok(());
            }
            if self.header_len.is_none() {
                let n = safetensors::header_len(self.header[..8].try_into().unwrap_or_default(), size)?;
                self.header_len = Some(n);
                return self.push(at, bytes, size, router, sink);
            }
            let entries = safetensors::parse_header(&self.header[8..])?;
            self.header = Vec::new();
            let infos: Vec<TensorInfo> = entries
                .iter()
                .map(|e| TensorInfo { name: e.name.clone(), dtype: e.dtype, shape: e.shape.clone() })
                .collect();
            self.ranges = entries.into_iter().map(|e| e.range).collect();
            *router = Some(Router::begin(&infos, sink)?);
        }
        let Some(router) = router.as_mut() else { return Ok(()) };
        while !bytes.is_empty() {
            // Bytes past the last tensor are counted (the position grows) and refused at the end.
            let Some(range) = self.ranges.get(self.next) else { return Ok(()) };
            let take = (range.end - at).min(bytes.len() as u64) as usize;
            router.feed(self.next, &bytes[..take], sink)?;
            (at, bytes) = (at + take as u64, &bytes[take..]);
            if at == range.end {
                self.next += 1;
            }
        }
        Ok(())
    }

    fn finish(&self, size: u64, router: Option<&Router>) -> Result<()> {
        match (self.header_len, router) {
            _ if size < 8 => Err(safetensors::too_short(size)),
            (Some(n), None) => Err(safetensors::header_past_end(n, size)),
            (_, Some(_)) => {
                let end = self.ranges.last().map_or(8 + self.header_len.unwrap_or(0), |r| r.end);
                if end != size {
                    return Err(safetensors::data_size(end, size));
                }
                Ok(())
            }
            (None, None) => Err(safetensors::too_short(size)),
        }
    }
}

/// Streams a whole in-memory (or mapped) file through `sink` in blocks: the path native loading
/// and tests share with the browser's download.
pub fn stream_file(bytes: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
    let mut stream = WeightStream::new(Some(bytes.len() as u64));
    for chunk in bytes.chunks(16 << 20) {
        stream.push(chunk, sink)?;
    }
    stream.finish()
}

/// Reads a whole weights file as a stream of `chunk`-byte pieces, making every check the reader
/// makes (not the model's: any names and shapes pass), and returns its tensors.
pub fn verify(bytes: &[u8], chunk: usize) -> Result<Vec<TensorInfo>> {
    struct Listing(Vec<TensorInfo>);
    impl TensorSink for Listing {
        fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
            self.0 = tensors.to_vec();
            Ok(())
        }
        fn rows(&mut self, _: usize, _: usize, _: &[f32]) -> Result<()> {
            Ok(())
        }
        fn blocks(&mut self, _: usize, _: usize, _: &[u8]) -> Result<()> {
            Ok(())
        }
    }
    let mut listing = Listing(Vec::new());
    let mut stream = WeightStream::new(Some(bytes.len() as u64));
    for piece in bytes.chunks(chunk.max(1)) {
        stream.push(piece, &mut listing)?;
    }
    stream.finish()?;
    Ok(listing.0)
}
