//! Weight matrices on the device: rows padded to whole octets of 8 values, stored as f32 or as f16
//! packed two per u32, and split into row chunks that each fit one storage binding.

use crate::error::{Error, Result};

use super::context::GpuContext;

/// How weights are stored on the device. Activations and accumulation are always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    /// Half the bytes; unpacked with WGSL's `unpack2x16float`, so no shader-f16 feature is needed.
    F16,
}

impl WeightDtype {
    pub fn bytes(self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::F16 => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
        }
    }

    /// The WGSL prelude declaring the weight binding, `wo(i)`, the i-th octet of 8 values as two
    /// quads (mat2x4<f32>), and `lib/octets.wgsl`'s `octet_dot` and `wo_dot(i, a0, a1)`.
    pub(crate) fn prelude(self) -> &'static str {
        match self {
            WeightDtype::F32 => {
                concat!(include_str!("../../shaders/weights_f32.wgsl"), include_str!("../../shaders/lib/octets.wgsl"))
            }
            WeightDtype::F16 => {
                concat!(include_str!("../../shaders/weights_f16.wgsl"), include_str!("../../shaders/lib/octets.wgsl"))
            }
        }
    }
}

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
    dtype: WeightDtype,
}

/// Where and how a matrix is stored: the dtype, and the largest buffer allowed for one chunk.
#[derive(Clone, Copy)]
pub(crate) struct Store {
    pub dtype: WeightDtype,
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
        let group_rows = if groups > 1 { rows / groups } else { 1 };
        let fit = chunk_rows(rows, cols, groups, store);
        if fit == 0 {
            return Err(Error::Gpu(format!(
                "{label}: a block of {group_rows} rows of {cols} values ({} bytes) exceeds the device's \
                 largest storage binding ({max_chunk_bytes} bytes)",
                group_rows * row_bytes
            )));
        }
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = fit.min(rows - row0);
            let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (n * row_bytes) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            chunks.push(Chunk { buffer, row0, rows: n });
            row0 += n;
        }
        Ok(Matrix { rows, cols, groups, chunks, label: label.to_string(), dtype })
    }

    /// Writes rows `row0..` from `values` (whole rows of `cols` values) in the device format,
    /// through the queue: the host holds only the encoded block being written.
    pub(crate) fn write_rows(&self, ctx: &GpuContext, row0: usize, values: &[f32]) -> Result<()> {
        let n = values.len() / self.cols;
        let row_bytes = row_bytes(self.cols, self.dtype);
        let mut padded = vec![0f32; row_bytes / self.dtype.bytes()];
        let mut block = Vec::new();
        let mut r = row0;
        for chunk in &self.chunks {
            let end = (chunk.row0 + chunk.rows).min(row0 + n);
            if r >= end || r < chunk.row0 {
                continue;
            }
            block.clear();
            for row in r..end {
                padded[..self.cols].copy_from_slice(&values[(row - row0) * self.cols..][..self.cols]);
                if !encode_row(&padded, self.dtype, &mut block) {
                    return Err(Error::Gpu(format!(
                        "{}: row {row} holds a value beyond the f16 range (±65504); use f32 weights",
                        self.label
                    )));
                }
            }
            ctx.queue.write_buffer(&chunk.buffer, ((r - chunk.row0) * row_bytes) as u64, &block);
            r = end;
        }
        Ok(())
    }
}

/// Rows per chunk of a `rows × cols` matrix of `groups` blocks: whole blocks that fit one binding
/// (0 when not even one does).
pub(crate) fn chunk_rows(rows: usize, cols: usize, groups: usize, store: Store) -> usize {
    let group_rows = if groups > 1 { rows / groups } else { 1 };
    (store.max_chunk_bytes as usize / row_bytes(cols, store.dtype)).min(MAX_CHUNK_ROWS) / group_rows * group_rows
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

/// Bytes of one row on the device.
fn row_bytes(cols: usize, dtype: WeightDtype) -> usize {
    padded(cols) * dtype.bytes()
}

/// Appends one row in the device format; false if a value does not fit (f16 overflow).
fn encode_row(values: &[f32], dtype: WeightDtype, out: &mut Vec<u8>) -> bool {
    match dtype {
        WeightDtype::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        WeightDtype::F16 => {
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
