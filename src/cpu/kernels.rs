//! Numeric building blocks of the CPU backend. Loops are written so LLVM vectorises them
//! (fixed-width lane accumulators), which keeps matrix-vector work near memory bandwidth
//! in wasm32 and on each core; natively the products are split across cores by output.

use half::f16;

use super::parallel;
use crate::config::NormActivation;
use crate::model::WeightData;

const LANES: usize = 16;

/// Dot product with 16 independent accumulators (vectorises to SIMD, hides add latency).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let whole = a.len() - a.len() % LANES;
    let mut acc = [0f32; LANES];
    accumulate(&mut acc, &a[..whole], &b[..whole]);
    finish(acc, &a[whole..], &b[whole..])
}

/// `acc[j] += Σ a[i·16 + j] · b[i·16 + j]`, for lengths that are multiples of 16.
#[inline(always)]
fn accumulate(acc: &mut [f32; LANES], a: &[f32], b: &[f32]) {
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
}

/// The lanes summed, plus the products of the last `len % 16` elements.
#[inline(always)]
fn finish(acc: [f32; LANES], a_tail: &[f32], b_tail: &[f32]) -> f32 {
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x`
#[inline(always)]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// An f16 weight widened to f32, exactly and without branches, so the loops around it vectorise
/// (AVX2 natively, wasm SIMD in browsers), each target with the form its vector unit runs fastest.
/// Weights are finite (checked when converted to f16).
#[inline(always)]
pub fn widen(h: f16) -> f32 {
    #[cfg(target_arch = "wasm32")]
    return widen_by_scaling(h);
    #[cfg(not(target_arch = "wasm32"))]
    return widen_by_select(h);
}

/// The magnitude bits moved into f32 position and rescaled by 2^112, which also turns f16
/// subnormals into the right f32 (the fastest form in wasm SIMD).
#[inline(always)]
pub fn widen_by_scaling(h: f16) -> f32 {
    let bits = h.to_bits() as u32;
    let magnitude = f32::from_bits((bits & 0x7fff) << 13) * f32::from_bits(0x7780_0000); // 2^112
    f32::from_bits(magnitude.to_bits() | ((bits & 0x8000) << 16))
}

/// Normal halves by moving the bits and rebiasing the exponent, subnormal ones (and zero) as an
/// integer times 2^-24, never through f32 subnormal arithmetic (slow on x86).
#[inline(always)]
pub fn widen_by_select(h: f16) -> f32 {
    let bits = h.to_bits() as u32;
    let magnitude = bits & 0x7fff;
    let normal = f32::from_bits((magnitude << 13) + (112 << 23));
    let subnormal = magnitude as f32 * f32::from_bits(0x3380_0000); // 2^-24
    let wide = if magnitude < 0x0400 { subnormal } else { normal };
    f32::from_bits(wide.to_bits() | ((bits & 0x8000) << 16))
}

/// f16 weights are widened this many at a time into a buffer on the stack.
const BLOCK: usize = 256;

/// A weight type the products read: f32 as stored, or f16 widened on the fly. f16 results equal
/// f32 ones on the widened weights bit for bit: the same products, summed in the same order.
pub trait Weight: Copy + Send + Sync + 'static {
    /// `Σ a[i] · b[i]`, as [`dot`] sums it.
    fn dot(a: &[f32], b: &[Self]) -> f32;
    /// `y += a * x`
    fn axpy(y: &mut [f32], a: f32, x: &[Self]);
    /// The weights themselves when they are f32 (no copy needed).
    fn as_f32(b: &[Self]) -> Option<&[f32]>;
    /// Widens `src` into `dst` (same length).
    fn widen_into(src: &[Self], dst: &mut [f32]);
}

impl Weight for f32 {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot(a, b)
    }

    #[inline(always)]
    fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        axpy(y, a, x)
    }

    fn as_f32(b: &[f32]) -> Option<&[f32]> {
        Some(b)
    }

    fn widen_into(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl Weight for f16 {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f16]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        let whole = a.len() - a.len() % LANES;
        let (mut acc, mut buf) = ([0f32; LANES], [0f32; BLOCK]);
        for (x, y) in a[..whole].chunks(BLOCK).zip(b[..whole].chunks(BLOCK)) {
            let wide = &mut buf[..y.len()];
            Self::widen_into(y, wide);
            accumulate(&mut acc, x, wide);
        }
        let tail: Vec<f32> = b[whole..].iter().map(|&h| widen(h)).collect();
        finish(acc, &a[whole..], &tail)
    }

    #[inline(always)]
    fn axpy(y: &mut [f32], a: f32, x: &[f16]) {
        debug_assert_eq!(y.len(), x.len());
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi += a * widen(xi);
        }
    }

    fn as_f32(_: &[f16]) -> Option<&[f32]> {
        None
    }

    #[inline(always)]
    fn widen_into(src: &[f16], dst: &mut [f32]) {
        dst.iter_mut().zip(src).for_each(|(d, &h)| *d = widen(h));
    }
}

/// `c[m×n] = a[m×k] · b[n×k]ᵀ`: every row of `a` against every row of `b`
/// (scores against parameter keys, logits against the embedding).
pub fn matmul_bt<W: Weight>(a: &[f32], b: &[W], m: usize, k: usize, n: usize, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    if m == 1 {
        // Rows of b split across threads; each output is one whole dot product.
        let len = parallel::chunk_len(n, 4, 16, 64);
        parallel::for_each(c[..n].chunks_mut(len).collect(), |piece, out| {
            wide_vectors::row_dots(&a[..k], &b[piece * len * k..], out);
        });
        return;
    }
    sgemm(a, b, (m, k, n), true, c);
}

/// `c[m×n] = a[m×k] · b[k×n]` (weighted sums of parameter values).
pub fn matmul<W: Weight>(a: &[f32], b: &[W], m: usize, k: usize, n: usize, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 1 {
        // Columns split across threads, one long run of each row of b per thread; each output
        // still sums over k in order.
        let len = parallel::chunk_len(n, 1, 16, 64);
        parallel::for_each(c[..n].chunks_mut(len).collect(), |piece, out| {
            wide_vectors::column_sums(&a[..k], b, n, piece * len, out);
        });
        return;
    }
    sgemm(a, b, (m, k, n), false, c);
}

/// The matrix-vector loops, compiled twice on x86-64: as built (SSE2) and for AVX2, chosen at run
/// time. Without FMA the AVX2 code does the same operations in the same order, 8 lanes at a time,
/// so results are bit-identical on any CPU; only the speed differs.
mod wide_vectors {
    use super::Weight;

    /// `out[r] = a · row r of rows` ([r × a.len()] row-major).
    pub fn row_dots<W: Weight>(a: &[f32], rows: &[W], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { row_dots_avx2(a, rows, out) };
        }
        row_dots_body(a, rows, out)
    }

    /// `out[j] = Σ_r a[r] · b[r][first + j]` for b [a.len() × n] row-major.
    pub fn column_sums<W: Weight>(a: &[f32], b: &[W], n: usize, first: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { column_sums_avx2(a, b, n, first, out) };
        }
        column_sums_body(a, b, n, first, out)
    }

    #[inline(always)]
    fn row_dots_body<W: Weight>(a: &[f32], rows: &[W], out: &mut [f32]) {
        for (ci, row) in out.iter_mut().zip(rows.chunks_exact(a.len())) {
            *ci = W::dot(a, row);
        }
    }

    #[inline(always)]
    fn column_sums_body<W: Weight>(a: &[f32], b: &[W], n: usize, first: usize, out: &mut [f32]) {
        out.fill(0.0);
        for (ai, row) in a.iter().zip(b.chunks_exact(n)) {
            W::axpy(out, *ai, &row[first..first + out.len()]);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_dots_avx2<W: Weight>(a: &[f32], rows: &[W], out: &mut [f32]) {
        row_dots_body(a, rows, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn column_sums_avx2<W: Weight>(a: &[f32], b: &[W], n: usize, first: usize, out: &mut [f32]) {
        column_sums_body(a, b, n, first, out)
    }
}

/// [`matmul_bt`] with `b` in the dtype the model stores.
pub fn matmul_bt_weights(a: &[f32], b: &WeightData, m: usize, k: usize, n: usize, c: &mut [f32]) {
    match b {
        WeightData::F32(b) => matmul_bt(a, b, m, k, n, c),
        WeightData::F16(b) => matmul_bt(a, b, m, k, n, c),
    }
}

/// [`matmul`] with `b` in the dtype the model stores.
pub fn matmul_weights(a: &[f32], b: &WeightData, m: usize, k: usize, n: usize, c: &mut [f32]) {
    match b {
        WeightData::F32(b) => matmul(a, b, m, k, n, c),
        WeightData::F16(b) => matmul(a, b, m, k, n, c),
    }
}

/// Blocked `c = a · B` for row-major `a` and `c`; `B` is `b` [k×n], or `b`ᵀ when `transposed`
/// (b is [n×k]). Split by columns of `c` across threads: each thread packs only its share of `B`
/// (f16 weights are widened into an f32 copy of that share first). Callers have asserted the
/// slice lengths for their layout.
fn sgemm<W: Weight>(a: &[f32], b: &[W], (m, k, n): (usize, usize, usize), transposed: bool, c: &mut [f32]) {
    let len = parallel::chunk_len(n, 1, 16, 64);
    // The output's address crosses the thread boundary: each piece writes only its own columns.
    let c_addr = c.as_mut_ptr() as usize;
    parallel::for_each(vec![(); n.div_ceil(len)], |piece, ()| {
        let first = piece * len;
        let cols = len.min(n - first);
        // The share of B for columns [first, first + cols) and its (row, column) strides.
        let widened: Vec<f32>;
        let (share, rsb, csb): (&[f32], isize, isize) = match (W::as_f32(b), transposed) {
            (Some(b), true) => (&b[first * k..(first + cols) * k], 1, k as isize),
            (Some(b), false) => (&b[first..], n as isize, 1),
            (None, true) => {
                let mut w = vec![0f32; cols * k];
                W::widen_into(&b[first * k..(first + cols) * k], &mut w);
                widened = w;
                (&widened, 1, k as isize)
            }
            (None, false) => {
                let mut w = vec![0f32; k * cols];
                for (dst, row) in w.chunks_exact_mut(cols).zip(b.chunks_exact(n)) {
                    W::widen_into(&row[first..first + cols], dst);
                }
                widened = w;
                (&widened, cols as isize, 1)
            }
        };
        // SAFETY: a has m·k elements; `share` holds every element of B's columns
        // [first, first + cols) at the given strides (k rows of them); c has m·n elements and
        // pieces write disjoint column ranges, so no two threads write the same element.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                cols,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                share.as_ptr(),
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
    fn f16_widening_is_exact_for_every_finite_half() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            if h.is_finite() {
                for (form, wide) in
                    [("widen", widen(h)), ("scaling", widen_by_scaling(h)), ("select", widen_by_select(h))]
                {
                    assert_eq!(wide.to_bits(), h.to_f32().to_bits(), "{form} {bits:#06x}");
                }
            }
        }
    }

    #[test]
    fn f16_products_equal_f32_products_on_the_widened_weights() {
        for (m, k, n) in [(1, 37, 29), (1, 300, 70), (3, 37, 29), (5, 529, 71), (1, 16, 1)] {
            let a = pseudo_random(m * k, 4);
            let halves: Vec<f16> = pseudo_random(n * k, 5).iter().map(|&v| f16::from_f32(v)).collect();
            let wide: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
            let (mut c16, mut c32) = (vec![0f32; m * n], vec![0f32; m * n]);
            matmul_bt(&a, &halves, m, k, n, &mut c16);
            matmul_bt(&a, &wide, m, k, n, &mut c32);
            assert_eq!(c16, c32, "bt {m}x{k}x{n}");
            let a = pseudo_random(m * n, 6);
            let (mut c16, mut c32) = (vec![0f32; m * k], vec![0f32; m * k]);
            matmul(&a, &halves, m, n, k, &mut c16);
            matmul(&a, &wide, m, n, k, &mut c32);
            assert_eq!(c16, c32, "plain {m}x{n}x{k}");
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
