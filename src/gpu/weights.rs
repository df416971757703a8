//! Weight matrices on the device: rows padded to whole octets of 8 values, stored as f32 or as f16
//! packed two per u32, or quantized (q8, q4) in superblocks of groups with their scales ahead of
//! their quants, q4's superblocks interleaved in groups of 8 rows (the preludes
//! `shaders/weights_*.wgsl` and `shaders/lib/row_groups.wgsl` say how), and split into row chunks
//! that each fit one storage binding.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::quant::{QuantFormat, GROUP};

use super::context::GpuContext;
pub use crate::dtype::Dtype;

impl Dtype {
    /// The WGSL prelude declaring the weight binding and how kernels read it: `wo(i)`, the i-th octet
    /// of 8 values as two quads (mat2x4<f32>); `BLOCK_OCTETS` and `wb_dot(b, a)`, block b (an octet
    /// of floats, a group of 32 quantized values) against the activations `a` of its values; and
    /// `lib/octets.wgsl`'s `octet_dot` and `wo_dot(i, a0, a1)`.
    pub(crate) fn prelude(self) -> String {
        let weights = match self {
            Dtype::F32 => include_str!("../../shaders/weights_f32.wgsl"),
            Dtype::F16 => include_str!("../../shaders/weights_f16.wgsl"),
            Dtype::Q8 => include_str!("../../shaders/weights_q8.wgsl"),
            Dtype::Q4 => include_str!("../../shaders/weights_q4.wgsl"),
        };
        let layout = match self.quant() {
            Some(_) => include_str!("../../shaders/lib/row_groups.wgsl"),
            None => include_str!("../../shaders/lib/octet_blocks.wgsl"),
        };
        [weights, include_str!("../../shaders/lib/octets.wgsl"), layout].concat()
    }

    /// The decode products' `dot_8_rows()`: q4 reads a whole row group's block at once, the other
    /// dtypes a row at a time (`shaders/lib/rows.wgsl`).
    pub(crate) fn dot_8_rows(self) -> &'static str {
        if self == Dtype::Q4 {
            include_str!("../../shaders/weights_q4_rows.wgsl")
        } else {
            include_str!("../../shaders/lib/rows_each.wgsl")
        }
    }

    /// Octets per block of the decode products' loops (see [`Dtype::prelude`]).
    pub(crate) fn block_octets(self) -> usize {
        if self.quant().is_some() {
            GROUP / 8
        } else {
            1
        }
    }

    /// Values per superblock of a quantized dtype (see the preludes): rows are whole superblocks.
    fn superblock(self) -> Option<(QuantFormat, usize)> {
        self.quant().map(|format| match format {
            QuantFormat::Q8 => (format, 8 * GROUP),
            QuantFormat::Q4 => (format, 4 * GROUP),
        })
    }

    /// Rows stored together, their superblocks interleaved (`ROW_GROUP` in the prelude,
    /// `shaders/lib/row_groups.wgsl`): q4's groups of 8, the rows a decode product's thread walks
    /// together (`shaders/lib/rows.wgsl`); other rows stand alone.
    pub(crate) fn row_group(self) -> usize {
        if self == Dtype::Q4 {
            8
        } else {
            1
        }
    }
}

/// Bytes of a row's scales in a superblock (`superblocks()`): one `vec4<u32>`.
const SCALE_QUAD_BYTES: usize = 16;

/// Rows `row0..row0 + rows` of a matrix, in one buffer.
pub(crate) struct Chunk {
    pub buffer: wgpu::Buffer,
    pub row0: usize,
    pub rows: usize,
}

pub(crate) struct Matrix {
    pub rows: usize,
    pub cols: usize,
    /// Equal blocks of rows (q, k, v stacked) whose products read different inputs; chunks never
    /// split a block.
    pub groups: usize,
    pub chunks: Vec<Chunk>,
    label: String,
    dtype: Dtype,
    /// A quantized matrix's row groups that some rows of have arrived, by group: their
    /// interleaved bytes and which rows are in. Rows stream in any batches; a group is written once
    /// whole.
    pending: Mutex<HashMap<usize, PendingGroup>>,
}

struct PendingGroup {
    bytes: Vec<u8>,
    arrived: u8,
}

/// Where and how a matrix is stored: the dtype, and the largest buffer allowed for one chunk.
#[derive(Clone, Copy)]
pub(crate) struct Store {
    pub dtype: Dtype,
    pub max_chunk_bytes: u64,
}

/// Workgroup counts are limited to 65,535 per dimension; the matrix kernels cover 16 rows per
/// workgroup at least, so a chunk of at most this many rows is always dispatchable.
const MAX_CHUNK_ROWS: usize = 65_535 * 16;

impl Matrix {
    /// A `rows × cols` matrix whose values are still to be written ([`Matrix::write_rows`]).
    pub(crate) fn create(
        ctx: &GpuContext,
        label: &str,
        rows: usize,
        cols: usize,
        groups: usize,
        store: Store,
    ) -> Result<Matrix> {
        let Store { dtype, max_chunk_bytes } = store;
        let row_bytes = row_bytes(cols, dtype);
        let fit = chunk_rows(rows, cols, groups, store);
        if fit == 0 {
            let step = chunk_step(rows, groups, dtype);
            return Err(Error::Gpu(format!(
                "{label}: a block of {step} rows of {cols} values ({} bytes) exceeds the device's \
                 largest storage binding ({max_chunk_bytes} bytes)",
                step * row_bytes
            )));
        }
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = fit.min(rows - row0);
            let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (n.next_multiple_of(dtype.row_group()) * row_bytes) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            chunks.push(Chunk { buffer, row0, rows: n });
            row0 += n;
        }
        Ok(Matrix { rows, cols, groups, chunks, label: label.to_string(), dtype, pending: Mutex::default() })
    }

    /// Octets in one stored row (see [`row_octets`]): the decode products' `k_octets`.
    pub(crate) fn row_octets(&self) -> usize {
        row_octets(self.cols, self.dtype)
    }

    /// Writes rows `row0..` from `values` (whole rows of `cols` values) in the device format,
    /// quantized here for a quantized matrix, through the queue: the host holds only the encoded
    /// block being written.
    pub(crate) fn write_rows(&self, ctx: &GpuContext, row0: usize, values: &[f32]) -> Result<()> {
        if let Some((format, _)) = self.dtype.superblock() {
            let mut blocks = Vec::with_capacity(values.len() / self.cols.max(1) * format.row_bytes(self.cols));
            for (r, row) in values.chunks(self.cols.max(1)).enumerate() {
                format
                    .quantize_row(row, &mut blocks)
                    .map_err(|e| Error::Gpu(format!("{}: row {}: {e}", self.label, row0 + r)))?;
            }
            return self.write_blocks(ctx, row0, &blocks);
        }
        let mut padded = vec![0f32; row_octets(self.cols, self.dtype) * 8];
        self.write_encoded(ctx, row0, values.len() / self.cols, |row, out| {
            padded[..self.cols].copy_from_slice(&values[row * self.cols..][..self.cols]);
            encode_row(&padded, self.dtype == Dtype::F16, out).then_some(()).ok_or_else(|| {
                Error::Gpu(format!(
                    "{}: row {} holds a value beyond the f16 range (±65504); use f32 weights",
                    self.label,
                    row0 + row
                ))
            })
        })
    }

    /// Writes rows `row0..` of a quantized matrix from their blocks (as `crate::quant` stores
    /// them), rearranged into superblocks.
    pub(crate) fn write_blocks(&self, ctx: &GpuContext, row0: usize, blocks: &[u8]) -> Result<()> {
        let Some((format, superblock)) = self.dtype.superblock() else {
            return Err(Error::Gpu(format!("{}: quantized rows for a {} matrix", self.label, self.dtype)));
        };
        let file_row_bytes = format.row_bytes(self.cols);
        let stored = row_bytes(self.cols, self.dtype);
        let superblock_bytes = format.row_bytes(superblock);
        let group_rows = self.dtype.row_group();
        let mut row = Vec::with_capacity(stored);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut run = GroupRun::default();
        for (i, blocks) in blocks.chunks_exact(file_row_bytes).enumerate() {
            let r = row0 + i;
            if r >= self.rows {
                return Err(Error::Gpu(format!("{}: row {r} is past its {} rows", self.label, self.rows)));
            }
            row.clear();
            superblocks(format, superblock, blocks, &mut row);
            let (g, lane) = (r / group_rows, r % group_rows);
            let group =
                pending.entry(g).or_insert_with(|| PendingGroup { bytes: vec![0; group_rows * stored], arrived: 0 });
            // Superblock s of the group's rows: their scale quads side by side, then their quants.
            for (s, sb) in row.chunks_exact(superblock_bytes).enumerate() {
                let (scales, quants) = sb.split_at(SCALE_QUAD_BYTES);
                let at = s * group_rows * superblock_bytes;
                for (w, word) in scales.chunks_exact(4).enumerate() {
                    group.bytes[at + (w * group_rows + lane) * 4..][..4].copy_from_slice(word);
                }
                let at = at + group_rows * SCALE_QUAD_BYTES + lane * quants.len();
                group.bytes[at..at + quants.len()].copy_from_slice(quants);
            }
            group.arrived |= 1 << lane;
            let real = (self.rows - g * group_rows).min(group_rows);
            if group.arrived.count_ones() as usize == real {
                let done = pending.remove(&g).map(|p| p.bytes).unwrap_or_default();
                self.add_group(ctx, &mut run, g, &done);
            }
        }
        self.flush_groups(ctx, &mut run);
        Ok(())
    }

    /// Adds whole group `g` to `run` (groups written in one go), writing the run first if `g` does
    /// not follow it in the same chunk.
    fn add_group(&self, ctx: &GpuContext, run: &mut GroupRun, g: usize, bytes: &[u8]) {
        let chunk = self.chunks.iter().position(|c| (c.row0..c.row0 + c.rows).contains(&(g * self.dtype.row_group())));
        if run.bytes.is_empty() || run.chunk != chunk || run.first + run.groups != g {
            self.flush_groups(ctx, run);
            *run = GroupRun { chunk, first: g, groups: 0, bytes: Vec::new() };
        }
        run.bytes.extend_from_slice(bytes);
        run.groups += 1;
    }

    fn flush_groups(&self, ctx: &GpuContext, run: &mut GroupRun) {
        if let Some(chunk) = run.chunk.map(|c| &self.chunks[c]).filter(|_| !run.bytes.is_empty()) {
            let offset = (run.first * self.dtype.row_group() - chunk.row0) * row_bytes(self.cols, self.dtype);
            ctx.queue.write_buffer(&chunk.buffer, offset as u64, &run.bytes);
        }
        run.bytes.clear();
    }

    /// Writes `n` rows from `row0`, each appended in the device format by `encode(i, out)` (row
    /// `row0 + i`), chunk by chunk.
    fn write_encoded(
        &self,
        ctx: &GpuContext,
        row0: usize,
        n: usize,
        mut encode: impl FnMut(usize, &mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let row_bytes = row_bytes(self.cols, self.dtype);
        let mut block = Vec::new();
        let mut r = row0;
        for chunk in &self.chunks {
            let end = (chunk.row0 + chunk.rows).min(row0 + n);
            if r >= end || r < chunk.row0 {
                continue;
            }
            block.clear();
            for row in r..end {
                encode(row - row0, &mut block)?;
            }
            ctx.queue.write_buffer(&chunk.buffer, ((r - chunk.row0) * row_bytes) as u64, &block);
            r = end;
        }
        Ok(())
    }
}

/// Consecutive whole row groups of one chunk, written together.
#[derive(Default)]
struct GroupRun {
    chunk: Option<usize>,
    first: usize,
    groups: usize,
    bytes: Vec<u8>,
}

/// One row's blocks in the device layout: superblocks of `superblock` values, each its groups'
/// scales (q8: their `d`; q4: their `d` and `m`, a word a group) and then their quants; groups past
/// the row's are zero.
fn superblocks(format: QuantFormat, superblock: usize, blocks: &[u8], out: &mut Vec<u8>) {
    let bytes = format.block_bytes();
    let head = match format {
        QuantFormat::Q8 => 2,
        QuantFormat::Q4 => 4,
    };
    let per = superblock / GROUP;
    let groups = blocks.len() / bytes;
    for first in (0..groups).step_by(per) {
        let group = |j: usize| blocks.get((first + j) * bytes..(first + j + 1) * bytes);
        for j in 0..per {
            out.extend_from_slice(group(j).map_or(&[0u8; 4][..head], |b| &b[..head]));
        }
        for j in 0..per {
            match group(j) {
                Some(b) => out.extend_from_slice(&b[head..]),
                None => out.resize(out.len() + bytes - head, 0),
            }
        }
    }
}

/// Rows per chunk of a `rows × cols` matrix of `groups` blocks: whole blocks that fit one binding
/// (0 when not even one does).
pub(crate) fn chunk_rows(rows: usize, cols: usize, groups: usize, store: Store) -> usize {
    let step = chunk_step(rows, groups, store.dtype);
    (store.max_chunk_bytes as usize / row_bytes(cols, store.dtype)).min(MAX_CHUNK_ROWS) / step * step
}

/// The rows a chunk is a multiple of: whole blocks and whole row groups.
fn chunk_step(rows: usize, groups: usize, dtype: Dtype) -> usize {
    let group_rows = if groups > 1 { rows / groups } else { 1 };
    let row_group = dtype.row_group();
    group_rows / gcd(group_rows, row_group) * row_group
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A row of `cols` values padded to whole octets, as weight rows (and the decode path's activation
/// rows) are stored: a decode kernel reads 8 values of a row in one load (a vec4<u32> of f16 pairs;
/// software Vulkan pays per load and lane more than per byte).
pub(crate) fn padded(cols: usize) -> usize {
    octets(cols) * 8
}

/// Octets in a padded row of `cols` values.
pub(crate) fn octets(cols: usize) -> usize {
    cols.div_ceil(8)
}

/// Octets in a stored row of `cols` values: whole octets for floats, whole superblocks for the
/// quantized dtypes.
pub(crate) fn row_octets(cols: usize, dtype: Dtype) -> usize {
    match dtype.superblock() {
        Some((_, superblock)) => cols.div_ceil(superblock) * superblock / 8,
        None => octets(cols),
    }
}

/// Bytes of one row on the device.
pub(crate) fn row_bytes(cols: usize, dtype: Dtype) -> usize {
    // A superblock is its groups' blocks (the scales gathered ahead of the quants): the bytes of
    // the row's groups, as stored anywhere.
    dtype.row_bytes(row_octets(cols, dtype) * 8)
}

/// Appends one row of floats as f32 or as f16 pairs; false if a value does not fit (f16 overflow).
fn encode_row(values: &[f32], f16: bool, out: &mut Vec<u8>) -> bool {
    match f16 {
        false => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        true => {
            for pair in values.chunks_exact(2) {
                let (lo, hi) = (half::f16::from_f32(pair[0]), half::f16::from_f32(pair[1]));
                if lo.is_infinite() || hi.is_infinite() {
                    return false;
                }
                // unpack2x16float takes the first value from the low 16 bits.
                out.extend((lo.to_bits() as u32 | (hi.to_bits() as u32) << 16).to_le_bytes());
            }
        }
    }
    true
}
