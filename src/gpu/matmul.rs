//! Products with a weight matrix, `c[m, j] (+)= a[m, :] · w[j, :]`: a matrix-vector kernel for
//! decoding (one activation row) and, for prefill, a kernel tiled in workgroup memory (GPUs) or a
//! register-blocked one without barriers (CPU adapters). They serve every product of
//! the model: Pattention scores (w = keys), weighted values (w = values stored transposed), and the
//! tied head (w = embedding). Stacked matrices (q, k, v) are grouped: group g reads its activations
//! `a_group_stride` further along and writes `c_group_stride` further along. With `accumulate` the
//! product is added to c: that is the residual add of the attention output and the FFN.

use super::context::{groups_for, Access, Encoder, GpuContext, Kernel};
use super::params::shader_params;
use super::weights::{Dtype, Matrix};

shader_params!(LinearParams for "linear_common.wgsl" {
    m: u32, k: u32, k_octets: u32, n: u32, lda: u32, ldc: u32, a_off: u32, a_group_stride: u32, c_col: u32,
    c_group_stride: u32, accumulate: u32,
});

/// Weight rows per matvec workgroup; weight rows and tokens per matmul workgroup (see the shaders).
const MATVEC_ROWS: usize = 64;
const REGISTERS_TILE: [usize; 2] = [8 * 64, 8];
const TILED_TILE: [usize; 2] = [64, 32];

pub(crate) struct Linear {
    matvec: Kernel,
    matmul: Kernel,
    /// Weight rows and tokens per workgroup of `matmul`.
    tile: [usize; 2],
}

/// A matrix bound to its input and output buffers, one bind group per chunk.
pub(crate) struct LinearBinding {
    chunks: Vec<(wgpu::BindGroup, usize, usize)>,
    /// The chunks' weight buffers, for kernels that read the matrix another way (search by token).
    pub weights: Vec<wgpu::Buffer>,
    pub rows: usize,
    pub cols: usize,
    /// Octets of a stored row.
    pub k_octets: usize,
    pub groups: usize,
}

impl LinearBinding {
    /// Each chunk's weight buffer with its first row and row count.
    pub fn weight_chunks(&self) -> impl Iterator<Item = (&wgpu::Buffer, usize, usize)> {
        self.weights.iter().zip(&self.chunks).map(|(w, &(_, row0, rows))| (w, row0, rows))
    }
}

/// The shape of one product. Columns of c beyond `limit` (rows of w) are not computed: the head
/// stops at the vocabulary.
pub(crate) struct LinearArgs {
    pub m: usize,
    pub lda: usize,
    pub ldc: usize,
    pub a_group_stride: usize,
    pub c_group_stride: usize,
    pub accumulate: bool,
    pub limit: usize,
}

impl LinearArgs {
    /// `c[m × rows] = a[m × k] · wᵀ` with packed rows.
    pub fn plain(m: usize, k: usize, rows: usize) -> LinearArgs {
        LinearArgs { m, lda: k, ldc: rows, a_group_stride: 0, c_group_stride: 0, accumulate: false, limit: rows }
    }

    /// Theta · V for q, k and v at once: `m` rows of three Theta groups of `n` slots each give
    /// three output groups of `d`.
    pub fn stacked_values(m: usize, n: usize, d: usize) -> LinearArgs {
        LinearArgs { m, lda: 3 * n, ldc: 3 * d, a_group_stride: n, c_group_stride: d, accumulate: false, limit: 3 * d }
    }
}

impl Linear {
    /// `tiled`: prefill in workgroup-memory tiles (for GPUs) rather than in registers.
    pub fn new(ctx: &GpuContext, dtype: Dtype, tiled: bool) -> Linear {
        let source =
            |body: &str| format!("{}\n{}\n{body}", dtype.prelude(), include_str!("../../shaders/linear_common.wgsl"));
        let matvec = Kernel::new(
            ctx,
            "matvec",
            &source(include_str!("../../shaders/matvec.wgsl")),
            &[Access::Read, Access::Read, Access::ReadWrite],
        );
        let (body, tile) = if tiled {
            (include_str!("../../shaders/matmul_tiled.wgsl"), TILED_TILE)
        } else {
            (include_str!("../../shaders/matmul.wgsl"), REGISTERS_TILE)
        };
        let matmul = matvec.sibling(ctx, "matmul", &source(body));
        Linear { matvec, matmul, tile }
    }

    pub fn bind(&self, ctx: &GpuContext, w: &Matrix, a: &wgpu::Buffer, c: &wgpu::Buffer) -> LinearBinding {
        let chunks = w.chunks.iter().map(|ch| (self.matvec.bind(ctx, &[a, &ch.buffer, c]), ch.row0, ch.rows)).collect();
        let weights = w.chunks.iter().map(|ch| ch.buffer.clone()).collect();
        LinearBinding { chunks, weights, rows: w.rows, cols: w.cols, k_octets: w.row_octets(), groups: w.groups }
    }

    pub fn encode(&self, enc: &mut Encoder, b: &LinearBinding, args: &LinearArgs) {
        let grouped = b.groups > 1;
        let group_rows = b.rows / b.groups;
        for (bind, row0, rows) in &b.chunks {
            let (row0, rows) = (*row0, *rows);
            if row0 >= args.limit {
                break;
            }
            // A chunk of a grouped matrix holds whole groups (see weights::chunk_rows).
            let (n, groups, first_group) = if grouped {
                (group_rows, rows / group_rows, row0 / group_rows)
            } else {
                (rows.min(args.limit - row0), 1, 0)
            };
            let (a_off, c_col) = if grouped {
                (first_group * args.a_group_stride, first_group * args.c_group_stride)
            } else {
                (0, row0)
            };
            let u = |v: usize| v as u32;
            let params = LinearParams {
                m: u(args.m),
                k: u(b.cols),
                k_octets: u(b.k_octets),
                n: u(n),
                lda: u(args.lda),
                ldc: u(args.ldc),
                a_off: u(a_off),
                a_group_stride: u(args.a_group_stride),
                c_col: u(c_col),
                c_group_stride: u(args.c_group_stride),
                accumulate: args.accumulate as u32,
            };
            if args.m == 1 {
                enc.dispatch(&self.matvec, bind, &params, [groups_for(n, MATVEC_ROWS), 1, groups as u32]);
            } else {
                let grid = [groups_for(n, self.tile[0]), groups_for(args.m, self.tile[1]), groups as u32];
                enc.dispatch(&self.matmul, bind, &params, grid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::products::matmul_bt;
    use crate::gpu::testing::stored;
    use crate::gpu::testing::{assert_close, random, read_f32, test_context};
    use crate::gpu::weights::{row_bytes, Matrix, Store};

    /// Runs c = a · wᵀ (+ c0) on the device, w uploaded with a chunk size limit.
    #[allow(clippy::too_many_arguments)]
    fn run(
        dtype: Dtype,
        w: &[f32],
        rows: usize,
        k: usize,
        groups: usize,
        a: &[f32],
        c0: &[f32],
        args: &LinearArgs,
        max_chunk_bytes: u64,
        tiled: bool,
    ) -> Vec<f32> {
        let ctx = test_context();
        let m = Matrix::create(&ctx, "w", rows, k, groups, Store { dtype, max_chunk_bytes }).unwrap();
        m.write_rows(&ctx, 0, &w[..rows * k]).unwrap();
        let linear = Linear::new(&ctx, dtype, tiled);
        let a_buf = ctx.storage_init("a", &crate::gpu::context::f32_bytes(a));
        let c_buf = ctx.storage_init("c", &crate::gpu::context::f32_bytes(c0));
        let bind = linear.bind(&ctx, &m, &a_buf, &c_buf);
        let mut params = crate::gpu::context::ParamPages::default();
        let mut enc = Encoder::new(&ctx, &mut params);
        linear.encode(&mut enc, &bind, args);
        enc.submit();
        read_f32(&ctx, &c_buf, c0.len())
    }

    #[test]
    fn plain_products_match_the_cpu_on_awkward_sizes() {
        for (dtype, tiled) in Dtype::ALL.into_iter().flat_map(|d| [(d, false), (d, true)]) {
            // m = 1 takes the matvec kernel, m > 1 the tiled or the register-blocked one; k not a
            // multiple of 4 or of a tile's step, m and n past several tiles.
            for (m, k, n) in [(1, 37, 29), (1, 72, 83), (3, 37, 29), (70, 83, 130), (5, 3, 1), (40, 257, 70)] {
                let a = random(m * k, 1);
                let w = random(n * k, 2);
                let mut want = vec![0f32; m * n];
                matmul_bt(&a, &stored(dtype, &w, k), m, k, n, &mut want);
                // A chunk limit of 9 rows splits w into several buffers (of 8 rows when quantized:
                // whole row groups).
                for chunk_bytes in [1 << 30, 9 * row_bytes(k, dtype) as u64] {
                    let args = LinearArgs::plain(m, k, n);
                    let got = run(dtype, &w, n, k, 1, &a, &vec![0.0; m * n], &args, chunk_bytes, tiled);
                    let what = format!("{dtype:?} tiled {tiled} {m}x{k}x{n} chunks {chunk_bytes}");
                    assert_close(&got, &want, 2e-5, &what);
                }
            }
        }
    }

    #[test]
    fn rows_written_in_any_batches_and_order_land_in_place() {
        // Rows arrive as a file streams them: batches that cut row groups (a quantized matrix
        // interleaves groups of 8 rows in q4), here last batch first, over two chunks.
        let (k, n) = (200, 37);
        let a = random(k, 6);
        let w = random(n * k, 7);
        for dtype in Dtype::ALL {
            let mut want = vec![0f32; n];
            matmul_bt(&a, &stored(dtype, &w, k), 1, k, n, &mut want);
            let ctx = test_context();
            let store = Store { dtype, max_chunk_bytes: 17 * row_bytes(k, dtype) as u64 };
            let m = Matrix::create(&ctx, "w", n, k, 1, store).unwrap();
            assert!(m.chunks.len() > 1);
            let batches: Vec<_> = (0..n).step_by(3).collect();
            for &r0 in batches.iter().rev() {
                let r1 = (r0 + 3).min(n);
                m.write_rows(&ctx, r0, &w[r0 * k..r1 * k]).unwrap();
            }
            let linear = Linear::new(&ctx, dtype, false);
            let a_buf = ctx.storage_init("a", &crate::gpu::context::f32_bytes(&a));
            let c_buf = ctx.storage_init("c", &crate::gpu::context::f32_bytes(&vec![0.0; n]));
            let bind = linear.bind(&ctx, &m, &a_buf, &c_buf);
            let mut params = crate::gpu::context::ParamPages::default();
            let mut enc = Encoder::new(&ctx, &mut params);
            linear.encode(&mut enc, &bind, &LinearArgs::plain(1, k, n));
            enc.submit();
            assert_close(&read_f32(&ctx, &c_buf, n), &want, 2e-5, &format!("{dtype:?} in batches"));
        }
    }

    #[test]
    fn grouped_products_accumulate_and_respect_the_limit() {
        // Three groups of 5 rows over k = 6, each reading its own 6 columns of a [m × 18].
        let (groups, group_rows, k) = (3, 5, 6);
        for m in [1, 4] {
            let a = random(m * groups * k, 3);
            let w = random(groups * group_rows * k, 4);
            let c0 = random(m * groups * group_rows, 5);
            let mut want = c0.clone();
            for g in 0..groups {
                for i in 0..m {
                    for j in 0..group_rows {
                        let row = &w[(g * group_rows + j) * k..][..k];
                        let x = &a[i * groups * k + g * k..][..k];
                        want[i * groups * group_rows + g * group_rows + j] +=
                            row.iter().zip(x).map(|(p, q)| p * q).sum::<f32>();
                    }
                }
            }
            let args = LinearArgs {
                m,
                lda: groups * k,
                ldc: groups * group_rows,
                a_group_stride: k,
                c_group_stride: group_rows,
                accumulate: true,
                limit: groups * group_rows,
            };
            // Chunks of one group each, then all in one.
            for (chunk_bytes, tiled) in
                [group_rows as u64 * 32, 1 << 30].into_iter().flat_map(|c| [(c, false), (c, true)])
            {
                let got = run(Dtype::F32, &w, groups * group_rows, k, groups, &a, &c0, &args, chunk_bytes, tiled);
                assert_close(&got, &want, 1e-5, &format!("grouped m={m} chunk {chunk_bytes} tiled {tiled}"));
            }
        }
        // The head computes only the first `limit` rows: the rest of c keeps its value.
        let (m, k, n, limit) = (2, 8, 40, 33);
        let a = random(m * k, 6);
        let w = random(n * k, 7);
        let args = LinearArgs { ldc: n, limit, ..LinearArgs::plain(m, k, n) };
        let mut want = vec![0f32; m * n];
        matmul_bt(&a, &w, m, k, n, &mut want);
        for tiled in [false, true] {
            let got = run(Dtype::F32, &w, n, k, 1, &a, &vec![9.0; m * n], &args, 10 * 32, tiled);
            for i in 0..m {
                assert_close(&got[i * n..i * n + limit], &want[i * n..i * n + limit], 1e-5, "limited head");
                assert!(got[i * n + limit..(i + 1) * n].iter().all(|&v| v == 9.0));
            }
        }
    }
}
