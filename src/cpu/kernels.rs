//! Numeric building blocks of the CPU backend: attention's dot and axpy, f16 widening, layer norm,
//! Pattention's normalisations, RoPE. Loops are written so LLVM vectorises them (fixed-width lane
//! accumulators). The weight products are in `products`.

use half::f16;

use super::parallel;
use crate::config::NormActivation;

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

/// The erf GELU, `0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(-x/√2)`, within 1.2e-7 of it relatively for
/// every x (so within about one f32 ulp once rounded), with no branch or library call, so that the
/// loops over thousands of Pattention slots vectorise. erfc is the Chebyshev fit of Numerical
/// Recipes (`erfcc`, fractional error < 1.2e-7 everywhere), evaluated in f64.
#[inline(always)]
pub fn gelu(x: f64) -> f64 {
    const C: [f64; 10] = [
        -1.26551223,
        1.00002368,
        0.37409196,
        0.09678418,
        -0.18628806,
        0.27886807,
        -1.13520398,
        1.48851587,
        -0.82215223,
        0.17087277,
    ];
    let z = x * std::f64::consts::FRAC_1_SQRT_2;
    let az = z.abs();
    let t = 1.0 / (1.0 + 0.5 * az);
    let poly = C.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    let erfc_az = t * exp_nonpositive(poly - az * az); // erfc(|z|)
    let erfc_minus_z = if z > 0.0 { 2.0 - erfc_az } else { erfc_az };
    0.5 * x * erfc_minus_z
}

/// 1/k! for k = 0..=9.
const INVERSE_FACTORIALS: [f64; 10] = {
    let mut c = [1.0; 10];
    let mut k = 1;
    while k < 10 {
        c[k] = c[k - 1] / k as f64;
        k += 1;
    }
    c
};

/// `e^x` for x ≤ 0 (relative error below 1e-10; 0 below e^-708), branch-free for vectorising:
/// x = n·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor series, 2^n put into the exponent bits.
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const LN2_HI: f64 = 0.693_147_180_369_123_8; // ln 2 split so that n·LN2_HI is exact
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5·2^52: adding it rounds to an integer in the low bits
    let x = x.max(-708.0);
    let shifted = x * std::f64::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let taylor = INVERSE_FACTORIALS.iter().rev().fold(0.0, |acc, &c| acc * r + c);
    // The low bits of `shifted` hold n (≥ -1022 here); n + 1023 is the biased exponent of 2^n.
    let two_to_n = f64::from_bits((shifted.to_bits().wrapping_add(1023)) << 52);
    taylor * two_to_n
}

/// Pattention's row-wise normalisation `Theta = f(S)` over the `n` scores of one token, in place.
///
/// The authors add no epsilon to the L2 norm; a row whose norm is zero (all scores zero, or for
/// gelu_l2_norm all GELU outputs zero) would be 0/0 = NaN there. We define it as an all-zero row:
/// the token then takes nothing from the parameter values, which is also the limit of a tiny norm
/// for l2_norm_gelu (gelu(0) = 0).
pub fn normalize_scores(s: &mut [f32], activation: NormActivation) {
    let n = s.len() as f64;
    match activation {
        NormActivation::L2NormGelu => {
            let norm = sum_of_squares(s, |v| v as f64).sqrt();
            if norm == 0.0 {
                return s.fill(0.0);
            }
            let scale = n.sqrt() / norm;
            let len = parallel::chunk_len(s.len(), 1, 64, ELEMENTWISE_MIN);
            parallel::for_each(s.chunks_mut(len).collect(), |_, part| gelu_row(part, scale));
        }
        NormActivation::GeluL2Norm => {
            let mut g = vec![0f64; s.len()];
            let len = parallel::chunk_len(s.len(), 1, 64, ELEMENTWISE_MIN);
            parallel::for_each(g.chunks_mut(len).zip(s.chunks(len)).collect(), |_, (g, s)| {
                g.iter_mut().zip(s).for_each(|(gi, &v)| *gi = gelu(v as f64));
            });
            let norm = sum_of_squares(&g, |v| v).sqrt();
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

/// `Σ f(v)²` in f64 over 8 interleaved partial sums (so it vectorises; the order is fixed).
#[inline(always)]
fn sum_of_squares<T: Copy>(row: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v) * f(v)).sum();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v) * f(v);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Rows shorter than this are mapped on one thread: GELU costs about a nanosecond an element, so
/// only rows far wider than the released models' (6144 slots at most) would repay a split.
const ELEMENTWISE_MIN: usize = 16384;

/// `x = gelu(x · scale)` along a row, compiled for AVX-512 and AVX2 too and chosen at run time (8 or
/// 4 lanes of f64 instead of 2; no FMA, so the numbers are the same either way).
fn gelu_row(x: &mut [f32], scale: f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { gelu_row_avx512(x, scale) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { gelu_row_avx2(x, scale) };
    }
    gelu_row_body(x, scale)
}

#[inline(always)]
fn gelu_row_body(x: &mut [f32], scale: f64) {
    x.iter_mut().for_each(|v| *v = gelu(*v as f64 * scale) as f32);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_row_avx512(x: &mut [f32], scale: f64) {
    gelu_row_body(x, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_row_avx2(x: &mut [f32], scale: f64) {
    gelu_row_body(x, scale)
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
pub(crate) mod tests {
    use super::*;

    /// Values in [-0.5, 0.5), the same for the same seed (also used by the products' tests).
    pub(crate) fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| (crate::sampling::pcg_hash(seed ^ i.wrapping_mul(2654435761)) as f32 / u32::MAX as f32) - 0.5)
            .collect()
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
    }

    #[test]
    fn gelu_is_within_1_2e_7_of_the_erf_gelu() {
        let exact = |x: f64| 0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2);
        let mut worst = 0f64;
        for i in -400_000..=400_000 {
            let x = i as f64 * 5e-5; // [-20, 20]
            let want = exact(x);
            if want != 0.0 {
                worst = worst.max(((gelu(x) - want) / want).abs());
            }
        }
        assert!(worst < 1.2e-7, "largest relative error {worst:e}");
        assert!((gelu(1.0) - 0.841_344_746_068_542_9).abs() < 1e-7);
        assert_eq!(gelu(0.0), 0.0);
        assert!(gelu(-40.0).abs() < 1e-300);
        assert_eq!(gelu(40.0), 40.0);
    }

    #[test]
    fn exp_is_within_1e_10_where_gelu_uses_it() {
        for i in 0..=70_800 {
            let x = -(i as f64) * 0.01;
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!(((got - want) / want).abs() < 1e-10, "exp({x}) = {got:e}, want {want:e}");
        }
    }

    #[test]
    fn wide_rows_normalise_the_same_on_any_number_of_threads() {
        let row: Vec<f32> = pseudo_random(40_000, 3).iter().map(|v| v * 8.0).collect();
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
