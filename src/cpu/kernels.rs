//! Numeric building blocks of the CPU backend. Loops are written so LLVM vectorises them
//! (fixed-width lane accumulators), which keeps matrix-vector work near memory bandwidth
//! in wasm32 and on each core; natively the products are split across cores by output.

use super::parallel;
use crate::config::NormActivation;

const LANES: usize = 16;

/// Dot product with 16 independent accumulators (vectorises to SIMD, hides add latency).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x`
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `c[m×n] = a[m×k] · b[n×k]ᵀ`: every row of `a` against every row of `b`
/// (scores against parameter keys, logits against the embedding).
pub fn matmul_bt(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    if m == 1 {
        // Rows of b split across threads; each output is one whole dot product.
        let len = parallel::chunk_len(n, 4, 16, 64);
        parallel::for_each(c[..n].chunks_mut(len).collect(), |piece, out| {
            let rows = b[piece * len * k..].chunks_exact(k);
            for (ci, row) in out.iter_mut().zip(rows) {
                *ci = dot(&a[..k], row);
            }
        });
        return;
    }
    // bᵀ[i][j] = b[j * k + i]
    sgemm(a, b, (m, k, n), (1, k as isize), c);
}

/// `c[m×n] = a[m×k] · b[k×n]` (weighted sums of parameter values).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 1 {
        // Columns split across threads, one long run of each row of b per thread; each output
        // still sums over k in order.
        let len = parallel::chunk_len(n, 1, 16, 64);
        parallel::for_each(c[..n].chunks_mut(len).collect(), |piece, out| {
            let first = piece * len;
            out.fill(0.0);
            for (ai, row) in a[..k].iter().zip(b.chunks_exact(n)) {
                axpy(out, *ai, &row[first..first + out.len()]);
            }
        });
        return;
    }
    sgemm(a, b, (m, k, n), (n as isize, 1), c);
}

/// Blocked `c = a · B` for row-major `a` and `c`, with `B`'s (row, column) strides given, split
/// by columns of `c` across threads (each thread packs only its share of `B`).
/// Callers have asserted the slice lengths for their layout.
fn sgemm(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), (rsb, csb): (isize, isize), c: &mut [f32]) {
    let len = parallel::chunk_len(n, 1, 16, 64);
    // Raw addresses cross the thread boundary: each piece writes only its own columns of c.
    let (b_addr, c_addr) = (b.as_ptr() as usize, c.as_mut_ptr() as usize);
    parallel::for_each(vec![(); n.div_ceil(len)], |piece, ()| {
        let first = piece * len;
        let cols = len.min(n - first);
        // SAFETY: both callers assert a has m·k, b has k·n and c has m·n elements, which bounds
        // every index sgemm touches for these strides; column ranges [first, first + cols) of
        // different pieces are disjoint, so no two threads write the same element of c.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                cols,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                (b_addr as *const f32).offset(first as isize * csb),
                rsb,
                csb,
                0.0,
                (c_addr as *mut f32).add(first),
                n as isize,
                1,
            );
        }
    });
}

/// Mean and 1/sqrt(biased variance + eps) of a row, accumulated in f64.
fn moments(x: &[f32], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Layer norm without weight or bias, in place on one row.
pub fn layer_norm(x: &mut [f32], eps: f64) {
    let (mean, inv_std) = moments(x, eps);
    for v in x.iter_mut() {
        *v = ((*v as f64 - mean) * inv_std) as f32;
    }
}

/// Layer norm with weight and bias (the final norm), in place on one row.
pub fn layer_norm_affine(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f64) {
    let (mean, inv_std) = moments(x, eps);
    for ((v, w), b) in x.iter_mut().zip(weight).zip(bias) {
        *v = ((*v as f64 - mean) * inv_std * *w as f64 + *b as f64) as f32;
    }
}

/// Exact (erf) GELU.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// Pattention's row-wise normalisation `Theta = f(S)` over the `n` scores of one token, in place.
///
/// The authors add no epsilon to the L2 norm; a row whose norm is zero (all scores zero, or for
/// gelu_l2_norm all GELU outputs zero) would be 0/0 = NaN there. We define it as an all-zero row:
/// the token then takes nothing from the parameter values, which is also the limit of a tiny norm
/// for l2_norm_gelu (gelu(0) = 0).
pub fn normalize_scores(s: &mut [f32], activation: NormActivation) {
    let n = s.len() as f64;
    let l2 = |row: &[f32]| row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
    match activation {
        NormActivation::L2NormGelu => {
            let norm = l2(s);
            if norm == 0.0 {
                return s.fill(0.0);
            }
            let scale = n.sqrt() / norm;
            map_in_place(s, |v| gelu(v as f64 * scale) as f32);
        }
        NormActivation::GeluL2Norm => {
            let mut g = vec![0f64; s.len()];
            let len = parallel::chunk_len(s.len(), 1, 64, ELEMENTWISE_MIN);
            parallel::for_each(g.chunks_mut(len).zip(s.chunks(len)).collect(), |_, (g, s)| {
                g.iter_mut().zip(s).for_each(|(gi, &v)| *gi = gelu(v as f64));
            });
            let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm == 0.0 {
                return s.fill(0.0);
            }
            let scale = n.sqrt() / norm;
            for (v, gi) in s.iter_mut().zip(&g) {
                *v = (gi * scale) as f32;
            }
        }
        NormActivation::Softmax => softmax_scaled(s, n),
    }
}

/// Rows shorter than this are mapped on one thread: the erf-based GELU costs ~10 ns an element,
/// so only the wide rows of large models (the FFN's thousands of slots) repay a split.
const ELEMENTWISE_MIN: usize = 1024;

/// `x = f(x)` for every element, split across threads for long rows. The row's norm, a sum, is
/// always taken on one thread, so the result does not depend on the split.
fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    let len = parallel::chunk_len(x.len(), 1, 64, ELEMENTWISE_MIN);
    parallel::for_each(x.chunks_mut(len).collect(), |_, part| part.iter_mut().for_each(|v| *v = f(*v)));
}

/// `scale * softmax(x)` in place, with max subtraction.
pub fn softmax_scaled(x: &mut [f32], scale: f64) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f64;
    for v in x.iter_mut() {
        let e = ((*v - max) as f64).exp();
        sum += e;
        *v = e as f32;
    }
    let k = scale / sum;
    for v in x.iter_mut() {
        *v = (*v as f64 * k) as f32;
    }
}

/// GPT-NeoX partial rotary embedding ("rotate half", not interleaved) on the first `inv_freq.len() * 2`
/// dims of one head vector at position `pos`; the remaining dims pass through.
pub fn apply_rope(head: &mut [f32], pos: usize, inv_freq: &[f64]) {
    let half = inv_freq.len();
    for (j, &f) in inv_freq.iter().enumerate() {
        let (sin, cos) = (pos as f64 * f).sin_cos();
        let (x1, x2) = (head[j] as f64, head[j + half] as f64);
        head[j] = (x1 * cos - x2 * sin) as f32;
        head[j + half] = (x2 * cos + x1 * sin) as f32;
    }
}

/// `inv_freq[j] = base^(-2j / r)` for j < r/2.
pub fn rope_inv_freq(rotary_dims: usize, base: f64) -> Vec<f64> {
    (0..rotary_dims / 2).map(|j| base.powf(-((2 * j) as f64) / rotary_dims as f64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_bt(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|t| a[i * k + t] as f64 * b[j * k + t] as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| (crate::sampling::pcg_hash(seed ^ i.wrapping_mul(2654435761)) as f32 / u32::MAX as f32) - 0.5)
            .collect()
    }

    #[test]
    fn matmuls_match_naive_on_awkward_sizes() {
        for (m, k, n) in [(1, 37, 29), (3, 37, 29), (5, 17, 1), (1, 1, 1), (7, 83, 72)] {
            let a = pseudo_random(m * k, 1);
            let b = pseudo_random(n * k, 2);
            let mut c = vec![0f32; m * n];
            matmul_bt(&a, &b, m, k, n, &mut c);
            for (x, y) in c.iter().zip(naive_bt(&a, &b, m, k, n)) {
                assert!((x - y).abs() < 1e-5, "bt {m}x{k}x{n}: {x} vs {y}");
            }
            // matmul(a, bᵀ) must equal matmul_bt(a, b).
            let mut bt = vec![0f32; k * n];
            for j in 0..n {
                for t in 0..k {
                    bt[t * n + j] = b[j * k + t];
                }
            }
            let mut c2 = vec![0f32; m * n];
            matmul(&a, &bt, m, k, n, &mut c2);
            for (x, y) in c2.iter().zip(&c) {
                assert!((x - y).abs() < 1e-5, "plain {m}x{k}x{n}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn normalisations_follow_the_formulas() {
        let s = [0.5f32, -1.0, 2.0, 0.0];
        let n = 4f64;
        let norm = (0.25f64 + 1.0 + 4.0).sqrt();
        let mut t = s;
        normalize_scores(&mut t, NormActivation::L2NormGelu);
        for (x, v) in t.iter().zip(s) {
            assert!((*x as f64 - gelu(v as f64 / norm * n.sqrt())).abs() < 1e-6);
        }
        let mut t = s;
        normalize_scores(&mut t, NormActivation::Softmax);
        assert!((t.iter().map(|&v| v as f64).sum::<f64>() - n).abs() < 1e-5);
        let mut t = s;
        normalize_scores(&mut t, NormActivation::GeluL2Norm);
        let l2: f64 = t.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((l2 - n.sqrt()).abs() < 1e-5);
        assert!((gelu(1.0) - 0.841_344_746_068_542_9).abs() < 1e-12);
    }

    #[test]
    fn wide_rows_normalise_the_same_on_any_number_of_threads() {
        let row: Vec<f32> = pseudo_random(5000, 3).iter().map(|v| v * 8.0).collect();
        let on = |threads: usize, act: NormActivation| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut t = row.clone();
            pool.install(|| normalize_scores(&mut t, act));
            t
        };
        for act in [NormActivation::L2NormGelu, NormActivation::GeluL2Norm, NormActivation::Softmax] {
            let one = on(1, act);
            let norm = (row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()).sqrt();
            if act == NormActivation::L2NormGelu {
                let scale = (row.len() as f64).sqrt() / norm;
                assert!(one.iter().zip(&row).all(|(t, &v)| *t == gelu(v as f64 * scale) as f32));
            }
            for threads in [2, 3, 4] {
                assert!(one.iter().zip(on(threads, act)).all(|(a, b)| a.to_bits() == b.to_bits()), "{act:?} {threads}");
            }
        }
    }

    #[test]
    fn zero_rows_give_zero_theta() {
        for act in [NormActivation::L2NormGelu, NormActivation::GeluL2Norm] {
            let mut t = [0f32; 5];
            normalize_scores(&mut t, act);
            assert!(t.iter().all(|&v| v == 0.0), "{act:?}: {t:?}");
        }
        let mut t = [0f32; 5];
        normalize_scores(&mut t, NormActivation::Softmax);
        assert!(t.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn rope_rotates_half_pairs() {
        let inv = rope_inv_freq(4, 10000.0);
        assert_eq!(inv, vec![1.0, 0.01]);
        let mut h = [1.0f32, 0.0, 0.0, 0.0, 7.0];
        apply_rope(&mut h, 1, &inv);
        // Pair (0, 2) rotates by angle 1; dim 4 is past the rotary dims and passes through.
        assert!((h[0] - 1f32.cos()).abs() < 1e-6 && (h[2] - 1f32.sin()).abs() < 1e-6);
        assert_eq!(h[4], 7.0);
    }
}
