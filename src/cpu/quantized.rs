//! The products with quantized weights (`crate::quant`): rows against rows of blocks, `a · bᵀ`,
//! which is every product of a quantized model (keys as stored, values as Vᵀ, the head).
//!
//! One token (decode) reads each block once, straight from memory: its quants widened to f32
//! lanes on the vector unit (AVX2's integer widening natively, simd128's in wasm), multiplied by
//! the token and summed per group, then scaled: `Σ_g d_g Σ_i q_i x_i + m_g Σ_i x_i`, the token's
//! group sums `Σ_i x_i` computed once for every row. This is the dequantized product
//! `Σ_i (d q_i + m) x_i` with f32 rounding in another order. Several tokens (prefill) dequantize
//! a piece of rows once into f32 and run the f32 tiles, which reuse each weight across tokens.

use super::parallel;
use super::simd::{BaselineVectors, Simd, Unit, LANES};
use crate::quant::{QuantFormat, QuantMatrix, GROUP};

/// `c[m×n] = a[m×k] · bᵀ`, b holding n rows of k values in blocks.
pub fn matmul_bt(a: &[f32], b: &QuantMatrix, m: usize, k: usize, n: usize, c: &mut [f32]) {
    matmul_bt_on(Unit::detect(), a, b, (m, k, n), c)
}

fn matmul_bt_on(unit: Unit, a: &[f32], b: &QuantMatrix, (m, k, n): (usize, usize, usize), c: &mut [f32]) {
    let row_bytes = b.row_bytes();
    assert!(a.len() >= m * k && b.cols == k && b.blocks.len() >= n * row_bytes && c.len() >= m * n);
    let rows = |first: usize, count: usize| &b.blocks[first * row_bytes..(first + count) * row_bytes];
    if m == 1 {
        // The token padded to whole groups, and its sum over each group.
        let mut x = vec![0f32; k.div_ceil(GROUP) * GROUP];
        x[..k].copy_from_slice(&a[..k]);
        let sums: Vec<f32> = x.chunks_exact(GROUP).map(|g| g.iter().sum()).collect();
        let len = parallel::chunk_len(n, 4, 16, 64);
        parallel::for_each(c[..n].chunks_mut(len).collect(), |piece, out| {
            unit.block_dots(b.format, &x, &sums, rows(piece * len, out.len()), out)
        });
        return;
    }
    let len = parallel::chunk_len(n, 4, 16, 64);
    super::products::split_columns(c, m, n, len, |first, out| {
        let wide = unit.widen_blocks(b.format, k, rows(first, out.len() / m));
        unit.row_dots(&a[..m * k], m, &wide, out);
    });
}

impl Unit {
    /// Rows of blocks as f32 rows of `cols` values: the dequantization rule (`d · q + m`, one
    /// rounding) on the vector unit.
    fn widen_blocks(self, format: QuantFormat, cols: usize, blocks: &[u8]) -> Vec<f32> {
        let mut out = vec![0f32; blocks.len() / format.row_bytes(cols).max(1) * cols];
        match (self, format) {
            // SAFETY (all four arms): detect() found these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            (Unit::Avx512, QuantFormat::Q8) => unsafe { x86::widen_avx512::<Q8>(cols, blocks, &mut out) },
            #[cfg(target_arch = "x86_64")]
            (Unit::Avx512, QuantFormat::Q4) => unsafe { x86::widen_avx512::<Q4>(cols, blocks, &mut out) },
            #[cfg(target_arch = "x86_64")]
            (Unit::Avx2, QuantFormat::Q8) => unsafe { x86::widen_avx2::<Q8>(cols, blocks, &mut out) },
            #[cfg(target_arch = "x86_64")]
            (Unit::Avx2, QuantFormat::Q4) => unsafe { x86::widen_avx2::<Q4>(cols, blocks, &mut out) },
            (Unit::Baseline, QuantFormat::Q8) => widen::<Q8, BaselineVectors>(cols, blocks, &mut out),
            (Unit::Baseline, QuantFormat::Q4) => widen::<Q4, BaselineVectors>(cols, blocks, &mut out),
        }
        out
    }

    /// `out[j] = x · (row j of blocks)`, for as many rows as `out` holds (see the module).
    fn block_dots(self, format: QuantFormat, x: &[f32], sums: &[f32], blocks: &[u8], out: &mut [f32]) {
        match (self, format) {
            // SAFETY (all four arms): detect() found these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            (Unit::Avx512, QuantFormat::Q8) => unsafe { x86::block_dots_avx512::<Q8>(x, sums, blocks, out) },
            #[cfg(target_arch = "x86_64")]
            (Unit::Avx512, QuantFormat::Q4) => unsafe { x86::block_dots_avx512::<Q4>(x, sums, blocks, out) },
            #[cfg(target_arch = "x86_64")]
            (Unit::Avx2, QuantFormat::Q8) => unsafe { x86::block_dots_avx2::<Q8>(x, sums, blocks, out) },
            #[cfg(target_arch = "x86_64")]
            (Unit::Avx2, QuantFormat::Q4) => unsafe { x86::block_dots_avx2::<Q4>(x, sums, blocks, out) },
            // One row at a time: a vector is four 128-bit registers here, and with more rows the
            // accumulators and the token's group overflow the 16 that wasm engines use on x86.
            (Unit::Baseline, QuantFormat::Q8) => block_dots::<Q8, BaselineVectors, 1>(x, sums, blocks, out),
            (Unit::Baseline, QuantFormat::Q4) => block_dots::<Q4, BaselineVectors, 1>(x, sums, blocks, out),
        }
    }
}

/// A block format as the loops read it.
trait Block {
    const FORMAT: QuantFormat;
    /// Whether blocks have a minimum (q4), which multiplies the token's group sum.
    const HAS_MIN: bool;
    /// The block's 32 quants as two vectors of f32 lanes.
    fn quants<S: Simd>(block: &[u8]) -> [S::V; 2];
}

struct Q8;
struct Q4;

impl Block for Q8 {
    const FORMAT: QuantFormat = QuantFormat::Q8;
    const HAS_MIN: bool = false;

    #[inline(always)]
    fn quants<S: Simd>(block: &[u8]) -> [S::V; 2] {
        [S::load_q8(&block[2..]), S::load_q8(&block[2 + LANES..])]
    }
}

impl Block for Q4 {
    const FORMAT: QuantFormat = QuantFormat::Q4;
    const HAS_MIN: bool = true;

    #[inline(always)]
    fn quants<S: Simd>(block: &[u8]) -> [S::V; 2] {
        S::load_q4(&block[4..])
    }
}

/// How far ahead of a block the decode loop prefetches (bytes).
const PREFETCH: usize = 320;

/// [`Unit::block_dots`] `NR` rows at a time (then one), so each group of the token is loaded once
/// for `NR` rows.
#[inline(always)]
fn block_dots<B: Block, S: Simd, const NR: usize>(x: &[f32], sums: &[f32], blocks: &[u8], out: &mut [f32]) {
    let row_bytes = sums.len() * B::FORMAT.block_bytes();
    let row = |j: usize| &blocks[j * row_bytes..(j + 1) * row_bytes];
    let mut j = 0;
    while j < out.len() {
        if out.len() - j >= NR {
            let dots = dot_rows::<B, S, NR>(x, sums, std::array::from_fn(|r| row(j + r)));
            out[j..j + NR].copy_from_slice(&dots);
            j += NR;
        } else {
            out[j] = dot_rows::<B, S, 1>(x, sums, [row(j)])[0];
            j += 1;
        }
    }
}

/// The token against `NR` rows of blocks: per group, the quants times the token on the lanes,
/// scaled by the group's `d` into each row's lane accumulator; the minimums times the token's group
/// sums on the side. A block's `d` (and `m`) are its first 4 bytes, widened in one conversion.
#[inline(always)]
fn dot_rows<B: Block, S: Simd, const NR: usize>(x: &[f32], sums: &[f32], rows: [&[u8]; NR]) -> [f32; NR] {
    let bytes = B::FORMAT.block_bytes();
    assert!(x.len() == sums.len() * GROUP && rows.iter().all(|r| r.len() == sums.len() * bytes));
    let mut acc = [S::zero(); NR];
    let mut offsets = [0f32; NR];
    for (g, &sum) in sums.iter().enumerate() {
        let xs = [S::load(&x[g * GROUP..]), S::load(&x[g * GROUP + LANES..])];
        for r in 0..NR {
            // Rows are short (a few hundred bytes to a few KB) and read NR at a time: the
            // hardware's prefetchers start late on each, so ask for the bytes PREFETCH ahead.
            S::prefetch(rows[r].as_ptr().wrapping_add(g * bytes + PREFETCH));
            // SAFETY: every row holds sums.len() blocks (asserted above).
            let block = unsafe { rows[r].get_unchecked(g * bytes..(g + 1) * bytes) };
            let [d, m] = S::widen_pair(u32::from_le_bytes([block[0], block[1], block[2], block[3]]));
            let [q0, q1] = B::quants::<S>(block);
            let group = S::madd(q1, xs[1], S::madd(q0, xs[0], S::zero()));
            acc[r] = S::madd(group, S::splat(d), acc[r]);
            if B::HAS_MIN {
                offsets[r] += m * sum;
            }
        }
    }
    std::array::from_fn(|r| S::sum(acc[r]) + offsets[r])
}

/// [`Unit::widen_blocks`] on the unit `S`.
#[inline(always)]
fn widen<B: Block, S: Simd>(cols: usize, blocks: &[u8], out: &mut [f32]) {
    let bytes = B::FORMAT.block_bytes();
    let mut group = [0f32; GROUP];
    for (row, values) in blocks.chunks_exact(B::FORMAT.row_bytes(cols)).zip(out.chunks_exact_mut(cols)) {
        for (block, values) in row.chunks_exact(bytes).zip(values.chunks_mut(GROUP)) {
            let [d, m] = S::widen_pair(u32::from_le_bytes([block[0], block[1], block[2], block[3]]));
            let [q0, q1] = B::quants::<S>(block);
            let (d, m) = (S::splat(d), S::splat(if B::HAS_MIN { m } else { 0.0 }));
            S::store(S::madd(q0, d, m), &mut group[..LANES]);
            S::store(S::madd(q1, d, m), &mut group[LANES..]);
            values.copy_from_slice(&group[..values.len()]);
        }
    }
}

/// The same loops compiled with the x86-64 extensions enabled.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd::x86::{Avx2, Avx512};
    use super::{block_dots, widen, Block};

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn block_dots_avx512<B: Block>(x: &[f32], sums: &[f32], blocks: &[u8], out: &mut [f32]) {
        block_dots::<B, Avx512, 4>(x, sums, blocks, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block_dots_avx2<B: Block>(x: &[f32], sums: &[f32], blocks: &[u8], out: &mut [f32]) {
        block_dots::<B, Avx2, 4>(x, sums, blocks, out)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn widen_avx512<B: Block>(cols: usize, blocks: &[u8], out: &mut [f32]) {
        widen::<B, Avx512>(cols, blocks, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn widen_avx2<B: Block>(cols: usize, blocks: &[u8], out: &mut [f32]) {
        widen::<B, Avx2>(cols, blocks, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::tests::pseudo_random;

    /// The product in f64 over the dequantized weights: the rule every backend follows.
    fn reference(a: &[f32], b: &QuantMatrix, m: usize, k: usize) -> Vec<f64> {
        let w = b.dequantize();
        let n = b.rows();
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|t| a[i * k + t] as f64 * w[j * k + t] as f64).sum();
            }
        }
        c
    }

    #[test]
    fn products_equal_the_dequantized_weights_product_on_awkward_sizes() {
        for format in [QuantFormat::Q8, QuantFormat::Q4] {
            for (m, k, n) in [(1, 32, 1), (1, 70, 9), (3, 70, 9), (1, 300, 70), (5, 17, 6), (1, 1, 3), (7, 96, 130)] {
                let mut b = QuantMatrix::new(format, k);
                for row in pseudo_random(n * k, 2).chunks(k) {
                    format.quantize_row(row, &mut b.blocks).unwrap();
                }
                let a = pseudo_random(m * k, 1);
                let want = reference(&a, &b, m, k);
                for unit in [Unit::Baseline, Unit::detect()] {
                    // Widened on the unit exactly as the rule says (one rounding of d · q + m).
                    assert_eq!(unit.widen_blocks(format, k, &b.blocks), b.dequantize(), "{format:?} {unit:?} {k}");
                    let mut c = vec![0f32; m * n];
                    matmul_bt_on(unit, &a, &b, (m, k, n), &mut c);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((*x as f64 - y).abs() < 1e-5, "{format:?} {unit:?} {m}x{k}x{n}: {x} vs {y}");
                    }
                }
            }
        }
    }
}
