//! The first half of a fused Pattention for one decoded token, and the head: an input row against
//! every row of a matrix, the input built in the kernel's prologue (the layer norm of the residual
//! stream, or attention's output combined from its splits) and the statistics the normalisation
//! needs left per workgroup by its epilogue (`shaders/scores.wgsl`; [`super::values`] applies them).

use std::sync::OnceLock;

use super::context::{Access, Encoder, GpuContext, Kernel};
use super::params::shader_params;
use super::weights::Matrix;
use crate::config::NormActivation;

shader_params!(ScoresParams for "scores.wgsl" {
    mode: u32, d: u32, k_octets: u32, n: u32, parts: u32, hd: u32, rows: u32, stat: u32, out_offset: u32, eps: f32,
});

/// Largest hidden size the decode kernels stage in workgroup memory (4 × 512 values).
pub(crate) const MAX_HIDDEN: usize = 2048;
/// Workgroups every decode product launches at least on a GPU, where it has that many rows:
/// enough to spread over a real GPU's compute units. A CPU adapter (lavapipe, SwiftShader) runs
/// workgroups one after another on its threads and pays for each one's prologue, so there the
/// products take the fewest workgroups instead ([`GpuOptions::min_workgroups`](super::GpuOptions)).
pub const MIN_WORKGROUPS: usize = 96;
/// Rows per workgroup, in groups of 8: from one group (all the workgroup's threads on it) to
/// [`DecodeShape::max_rows`].
const MIN_ROWS: usize = 8;
/// Most rows per workgroup on a GPU: 256 threads, 32 per group of 8 rows, reading 512 neighbouring
/// bytes of each row.
pub(crate) const GPU_MAX_ROWS: usize = 64;
/// On a CPU adapter: 16 threads, each walking 8 whole rows. Software Vulkan runs a workgroup's
/// threads as SIMD lanes, 8 at a time, and its workgroups one after another: a thread per 8 rows
/// needs no sums across lanes, and 128-row workgroups spread over a few cores.
pub(crate) const CPU_MAX_ROWS: usize = 128;

/// What the input row is.
#[derive(Clone, Copy)]
pub(crate) enum ScoresInput {
    /// Layer norm of the residual stream, held as `parts` partial rows.
    Residual { parts: usize },
    /// The same with the final norm's weight and bias.
    FinalNorm { parts: usize },
    /// Attention's output, from `splits` splits per head of `head_dim` values.
    Attention { splits: usize, head_dim: usize },
}

/// How the decode products are built for an adapter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeShape {
    pub dtype: crate::dtype::Dtype,
    /// Workgroups each product launches at least, where it has the rows.
    pub min_workgroups: usize,
    /// Lanes whose sums go through subgroup shuffles (the adapter's smallest subgroup), or None:
    /// all through workgroup memory.
    pub subgroup_lanes: Option<u32>,
    /// Most rows per workgroup: [`GPU_MAX_ROWS`] or [`CPU_MAX_ROWS`].
    pub max_rows: usize,
}

impl DecodeShape {
    /// Whether these are a GPU's kernel shapes rather than a CPU adapter's (the rows say which).
    pub fn for_gpu(&self) -> bool {
        self.max_rows == GPU_MAX_ROWS
    }

    /// Whether every thread of a subgroup reads the same input block, so the lanes can share its
    /// loads (`shaders/lib/block_input_shared.wgsl`): a CPU adapter's own shape (at one workgroup
    /// at least, [`rows_per_workgroup`] gives every product its most rows, a thread per 8 rows)
    /// with subgroups of at least a block's quads.
    pub fn shares_input(&self) -> bool {
        let block_quads = 2 * self.dtype.block_octets() as u32;
        !self.for_gpu() && self.min_workgroups == 1 && self.subgroup_lanes.is_some_and(|lanes| lanes >= block_quads)
    }

    /// Threads per workgroup: a CPU adapter's are one per 8 rows of its most.
    pub fn threads(&self) -> usize {
        if self.for_gpu() {
            256
        } else {
            CPU_MAX_ROWS / 8
        }
    }
}

pub(crate) struct Scores {
    kernel: DecodeKernel,
    eps: f32,
    shape: DecodeShape,
}

/// A matrix bound to its input, output and statistics buffers, one bind group per chunk.
pub(crate) struct ScoresBinding {
    /// (bind group, first row, rows, weight bytes) of each chunk.
    chunks: Vec<(wgpu::BindGroup, usize, usize, u64)>,
    cols: usize,
    /// Octets of a stored row.
    k_octets: usize,
    groups: usize,
    group_rows: usize,
    /// See [`DecodeKernel::prepare`].
    whole_row_groups: bool,
}

/// Rows per workgroup for `rows` rows in each of `groups` groups: the most (a power of two from 8
/// to the shape's most) that still launches the shape's `min_workgroups` workgroups.
pub(crate) fn rows_per_workgroup(rows: usize, groups: usize, shape: &DecodeShape) -> usize {
    let mut r = shape.max_rows;
    while r > MIN_ROWS && groups * rows.div_ceil(r) < shape.min_workgroups {
        r /= 2;
    }
    r
}

/// The code of the statistic the epilogue writes (see the shader).
fn stat_code(norm: Option<NormActivation>) -> u32 {
    match norm {
        None => 0,
        Some(NormActivation::L2NormGelu) => 1,
        Some(NormActivation::GeluL2Norm) => 2,
        Some(NormActivation::Softmax) => 3,
    }
}

/// WGSL of a decode product: the workgroup size, whether its matrices' groups of rows start on
/// whole row groups, the dtype prelude and its `dot_8_rows()`, the shared row reductions (through
/// subgroups or workgroup memory) and GELU, how threads load an input block, the body.
fn decode_source(shape: DecodeShape, whole_row_groups: bool, body: &str) -> String {
    let reduce = match shape.subgroup_lanes {
        Some(lanes) => {
            format!("const SUBGROUP_LANES: u32 = {lanes}u;\n{}", include_str!("../../shaders/lib/reduce_subgroup.wgsl"))
        }
        None => include_str!("../../shaders/lib/reduce_workgroup.wgsl").to_string(),
    };
    let input = if shape.shares_input() {
        include_str!("../../shaders/lib/block_input_shared.wgsl")
    } else {
        include_str!("../../shaders/lib/block_input.wgsl")
    };
    let lib = [include_str!("../../shaders/lib/rows.wgsl"), include_str!("../../shaders/lib/gelu.wgsl")];
    let consts = format!("const WG: u32 = {}u;\nconst WHOLE_ROW_GROUPS: bool = {whole_row_groups};", shape.threads());
    let dtype = shape.dtype;
    format!("{consts}\n{}\n{}\n{}\n{reduce}\n{}\n{input}\n{body}", dtype.prelude(), dtype.dot_8_rows(), lib[0], lib[1])
}

/// A decode product's pipelines. A thread's 8 rows start on a row group of the dtype's
/// (`shaders/lib/row_groups.wgsl`) wherever a matrix's groups of rows (q, k, v) do: always in every
/// released shape, and then q4 reads a block of the 8 rows at once. A matrix whose groups of rows
/// do not (q4 only: groups of rows not a multiple of 8, as in the test fixtures) takes a second
/// pipeline that reads a row at a time, made when such a matrix is first bound. A branch on it
/// in the shader would not do: software Vulkan runs both sides of a branch.
pub(crate) struct DecodeKernel {
    label: &'static str,
    shape: DecodeShape,
    body: &'static str,
    whole_row_groups: Kernel,
    rows_apart: OnceLock<Kernel>,
}

impl DecodeKernel {
    pub fn new(
        ctx: &GpuContext,
        label: &'static str,
        shape: DecodeShape,
        body: &'static str,
        bindings: &[Access],
    ) -> Self {
        let whole_row_groups = Kernel::new(ctx, label, &decode_source(shape, true, body), bindings);
        DecodeKernel { label, shape, body, whole_row_groups, rows_apart: OnceLock::new() }
    }

    /// Whether a matrix of `groups` groups of `group_rows` rows each keeps its groups on whole row
    /// groups (so the first pipeline serves it); if not, makes the second pipeline.
    pub fn prepare(&self, ctx: &GpuContext, group_rows: usize, groups: usize) -> bool {
        let whole = groups == 1 || group_rows.is_multiple_of(self.shape.dtype.row_group());
        if !whole {
            self.rows_apart.get_or_init(|| {
                self.whole_row_groups.sibling(ctx, self.label, &decode_source(self.shape, false, self.body))
            });
        }
        whole
    }

    /// The pipeline for a matrix [`DecodeKernel::prepare`] answered `whole` for.
    pub fn get(&self, whole: bool) -> &Kernel {
        match self.rows_apart.get() {
            Some(kernel) if !whole => kernel,
            _ => &self.whole_row_groups,
        }
    }

    /// A bind group (the pipelines share their layout).
    pub fn bind(&self, ctx: &GpuContext, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        self.whole_row_groups.bind(ctx, buffers)
    }
}

impl Scores {
    pub fn new(ctx: &GpuContext, shape: DecodeShape, eps: f64) -> Scores {
        use Access::{Read, ReadWrite};
        let body = include_str!("../../shaders/scores.wgsl");
        let kernel = DecodeKernel::new(ctx, "scores", shape, body, &[Read, Read, ReadWrite, ReadWrite, Read, Read]);
        Scores { kernel, eps: eps as f32, shape }
    }

    pub fn shape(&self) -> &DecodeShape {
        &self.shape
    }

    /// Binds `w`, whose rows are `groups` stacked Pattentions (q, k, v: each has its own
    /// statistics), with its input, output and statistics; `norm` holds the final norm's weight
    /// and bias (read only for [`ScoresInput::FinalNorm`]).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        ctx: &GpuContext,
        w: &Matrix,
        groups: usize,
        input: &wgpu::Buffer,
        out: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        norm: [&wgpu::Buffer; 2],
    ) -> ScoresBinding {
        let chunks = w
            .chunks
            .iter()
            .map(|ch| {
                let bind = self.kernel.bind(ctx, &[input, &ch.buffer, out, stats, norm[0], norm[1]]);
                (bind, ch.row0, ch.rows, ch.buffer.size())
            })
            .collect();
        let group_rows = w.rows / groups;
        let whole_row_groups = self.kernel.prepare(ctx, group_rows, groups);
        ScoresBinding { chunks, cols: w.cols, k_octets: w.row_octets(), groups, group_rows, whole_row_groups }
    }

    /// Workgroups per group of the binding's matrix (where its statistics go), if it has one chunk.
    pub fn blocks(&self, b: &ScoresBinding) -> usize {
        b.group_rows.div_ceil(rows_per_workgroup(b.group_rows, b.groups, &self.shape))
    }

    /// Records the product, counted as `kind`; `norm` selects the statistic (none for the head).
    /// A grouped matrix is one chunk (the decode path is used only then), so the statistics of
    /// group g, block b land at `g * blocks + b`.
    pub fn encode(
        &self,
        enc: &mut Encoder,
        kind: &'static str,
        b: &ScoresBinding,
        input: ScoresInput,
        norm: Option<NormActivation>,
    ) {
        let (mode, parts, head_dim) = match input {
            ScoresInput::Residual { parts } => (0, parts, 1),
            ScoresInput::FinalNorm { parts } => (1, parts, 1),
            ScoresInput::Attention { splits, head_dim } => (2, splits, head_dim),
        };
        for (bind, row0, rows, bytes) in &b.chunks {
            let (n, groups) = if b.groups > 1 { (b.group_rows, b.groups) } else { (*rows, 1) };
            let r = rows_per_workgroup(n, groups, &self.shape);
            let params = ScoresParams {
                mode,
                d: b.cols as u32,
                k_octets: b.k_octets as u32,
                n: n as u32,
                parts: parts as u32,
                hd: head_dim as u32,
                rows: r as u32,
                stat: stat_code(norm),
                out_offset: *row0 as u32,
                eps: self.eps,
            };
            let grid = [n.div_ceil(r) as u32, groups as u32, 1];
            enc.dispatch_product(kind, *bytes, self.kernel.get(b.whole_row_groups), bind, &params, grid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::layer_norm_affine;
    use crate::cpu::products::matmul_bt;
    use crate::gpu::context::{f32_bytes, ParamPages};
    use crate::gpu::testing::{assert_close, decode_shapes, random, read_f32, stored, test_context};
    use crate::gpu::weights::{padded, row_bytes, Store};
    use crate::Dtype;

    /// The head: the final norm (weight and bias) of a residual stream in partial rows, against a
    /// matrix split into chunks, each chunk writing its own rows of the logits.
    #[test]
    fn the_head_matches_the_cpu_across_chunks() {
        let ctx = test_context();
        let mut pages = ParamPages::default();
        let shapes = Dtype::ALL.into_iter().flat_map(|dtype| decode_shapes(&ctx, dtype));
        for shape in shapes {
            let dtype = shape.dtype;
            let (d, vocab, parts): (usize, usize, usize) = (70, 301, 3);
            let dq = padded(d);
            let rows = random(parts * dq, 81);
            let x: Vec<f32> = (0..d).map(|c| (0..parts).map(|s| rows[s * dq + c]).sum()).collect();
            let (weight, bias) = (random(d, 82), random(d, 83));
            let table = random(vocab * d, 84);
            let store = Store { dtype, max_chunk_bytes: 100 * row_bytes(d, dtype) as u64 };
            let m = Matrix::create(&ctx, "embedding", vocab, d, 1, store).unwrap();
            m.write_rows(&ctx, 0, &table).unwrap();
            assert!(m.chunks.len() > 1);
            let input = ctx.storage_init("residual", &f32_bytes(&rows));
            let (w, b) = (ctx.storage_init("w", &f32_bytes(&weight)), ctx.storage_init("b", &f32_bytes(&bias)));
            let logits = ctx.storage("logits", vocab as u64 * 4);
            let stats = ctx.storage("stats", 16);
            let scores = Scores::new(&ctx, shape, 1e-5);
            let bind = scores.bind(&ctx, &m, 1, &input, &logits, &stats, [&w, &b]);
            let mut enc = Encoder::new(&ctx, &mut pages);
            scores.encode(&mut enc, "head", &bind, ScoresInput::FinalNorm { parts }, None);
            assert_eq!(enc.recorded.len(), m.chunks.len());
            enc.submit();
            let mut a = x.clone();
            layer_norm_affine(&mut a, &weight, &bias, 1e-5);
            let mut want = vec![0f32; vocab];
            matmul_bt(&a, &stored(dtype, &table, d), 1, d, vocab, &mut want);
            assert_close(&read_f32(&ctx, &logits, vocab), &want, 2e-5, &format!("{shape:?}"));
        }
    }

    #[test]
    fn released_shapes_launch_the_workgroup_target() {
        // (rows per group, groups): q|k|v, proj, FFN at 150M and 1.5B.
        let gpu = DecodeShape {
            dtype: Dtype::F16,
            min_workgroups: MIN_WORKGROUPS,
            subgroup_lanes: None,
            max_rows: GPU_MAX_ROWS,
        };
        let cpu = DecodeShape { min_workgroups: 1, max_rows: CPU_MAX_ROWS, ..gpu };
        for (rows, groups) in [(768, 3), (768, 1), (3072, 1), (1536, 3), (1536, 1), (6144, 1)] {
            let r = rows_per_workgroup(rows, groups, &gpu);
            assert!(groups * rows.div_ceil(r) >= MIN_WORKGROUPS, "{rows} x {groups}: {r} rows per workgroup");
            assert!(r.is_power_of_two() && (MIN_ROWS..=GPU_MAX_ROWS).contains(&r));
            assert_eq!(rows_per_workgroup(rows, groups, &cpu), CPU_MAX_ROWS);
        }
    }
}
