//! The matrix products of Pattention and the head, for one token (decode) or many (prefill):
//! - `matmul_bt`, rows against rows (`a · bᵀ`: scores against the parameter keys, logits against
//!   the embedding), and
//! - `matmul`, weighted sums of rows (`a · b`: Theta times the parameter values).
//!
//! Both read the weights where they lie, with no packed copy, in register tiles of a few tokens by
//! a few weight rows (or columns): prefill then takes each weight from cache once per tile of
//! tokens, and decode streams several weight rows at once. f16 weights are widened exactly as they
//! are loaded.
//!
//! Each output is summed in one fixed order whatever the tile, the token count or the thread
//! split (row dots: 16 lanes along k, then a tree over the lanes; weighted sums: along k in order), so
//! the thread count never changes a result. The loops are compiled for the best vector unit the
//! CPU has, chosen at run time on x86-64 (AVX-512 or AVX2, with FMA), and for simd128 in wasm.
//! With FMA a multiply-add rounds once, so x86-64 CPUs with and without FMA differ in the last bits
//! (both are checked against the reference within the same tolerance).

use std::array::from_fn;

use half::f16;

use super::kernels::widen;
use super::parallel;
use super::simd::{BaselineVectors, Simd, Unit, LANES};
use crate::model::WeightData;

/// Weights packed per panel of a multi-token weighted sum: at most 32 KiB, an L1 data cache.
const PANEL: usize = 8192;
/// Weights packed per block of rows of a multi-token weighted sum: 256 KiB, in L2.
const BLOCK: usize = 65536;

/// A stored weight type: f32, or f16 widened exactly on load.
pub trait Weight: Copy + Send + Sync + 'static {
    /// `src[0..16]` as one vector of the unit `S`.
    fn lanes<S: Simd>(src: &[Self]) -> S::V;
    /// `src[0]` as f32.
    fn scalar(src: &[Self]) -> f32;
    /// The weights themselves when they are f32.
    fn as_f32(src: &[Self]) -> Option<&[f32]>;
    /// `src` widened into `dst` (same length).
    fn widen_into(src: &[Self], dst: &mut [f32]);
}

impl Weight for f32 {
    #[inline(always)]
    fn lanes<S: Simd>(src: &[f32]) -> S::V {
        S::load(src)
    }

    #[inline(always)]
    fn scalar(src: &[f32]) -> f32 {
        src[0]
    }

    fn as_f32(src: &[f32]) -> Option<&[f32]> {
        Some(src)
    }

    #[inline(always)]
    fn widen_into(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl Weight for f16 {
    #[inline(always)]
    fn lanes<S: Simd>(src: &[f16]) -> S::V {
        S::load_half(src)
    }

    #[inline(always)]
    fn scalar(src: &[f16]) -> f32 {
        widen(src[0])
    }

    fn as_f32(_: &[f16]) -> Option<&[f32]> {
        None
    }

    #[inline(always)]
    fn widen_into(src: &[f16], dst: &mut [f32]) {
        dst.iter_mut().zip(src).for_each(|(d, &h)| *d = widen(h));
    }
}

/// `c[m×n] = a[m×k] · b[n×k]ᵀ`: every row of `a` against every row of `b`.
pub fn matmul_bt<W: Weight>(a: &[f32], b: &[W], m: usize, k: usize, n: usize, c: &mut [f32]) {
    matmul_bt_on(Unit::detect(), a, b, (m, k, n), c)
}

fn matmul_bt_on<W: Weight>(unit: Unit, a: &[f32], b: &[W], (m, k, n): (usize, usize, usize), c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    // Pieces of b's rows; each computes its columns of c for every token.
    let len = parallel::chunk_len(n, 4, 16, 64);
    split_columns(c, m, n, len, |first, out| {
        let cols = out.len() / m;
        unit.row_dots(&a[..m * k], m, &b[first * k..(first + cols) * k], out);
    });
}

/// `c[m×n] = a[m×k] · b[k×n]`: for each token, the rows of `b` weighted by its row of `a`.
pub fn matmul<W: Weight>(a: &[f32], b: &[W], m: usize, k: usize, n: usize, c: &mut [f32]) {
    matmul_on(Unit::detect(), a, b, (m, k, n), c)
}

fn matmul_on<W: Weight>(unit: Unit, a: &[f32], b: &[W], (m, k, n): (usize, usize, usize), c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // Pieces of b's columns: one long run of every row of b per thread.
    let len = parallel::chunk_len(n, 1, 16, 64);
    split_columns(c, m, n, len, |first, out| unit.row_sums(&a[..m * k], m, &b[..k * n], n, first, out));
}

/// [`matmul_bt`] with `b` in the dtype the model stores.
pub fn matmul_bt_weights(a: &[f32], b: &WeightData, m: usize, k: usize, n: usize, c: &mut [f32]) {
    match b {
        WeightData::F32(b) => matmul_bt(a, b, m, k, n, c),
        WeightData::F16(b) => matmul_bt(a, b, m, k, n, c),
        WeightData::Quant(b) => super::quantized::matmul_bt(a, b, m, k, n, c),
    }
}

/// [`matmul`] with `b` in the dtype the model stores.
/// Quantized matrices are multiplied as rows (quantized values are stored transposed, so
/// `Theta · V` is a [`matmul_bt_weights`]); here one is dequantized first.
pub fn matmul_weights(a: &[f32], b: &WeightData, m: usize, k: usize, n: usize, c: &mut [f32]) {
    match b {
        WeightData::F32(b) => matmul(a, b, m, k, n, c),
        WeightData::F16(b) => matmul(a, b, m, k, n, c),
        WeightData::Quant(b) => matmul(a, &b.dequantize(), m, k, n, c),
    }
}

/// Runs `work(first, out)` over pieces of `len` columns of `c` [m×n] in parallel; `out` is the
/// piece's [m × cols] block. One token's columns are contiguous and are written in place; for
/// several tokens each piece fills its own block, copied into `c` afterwards.
pub(super) fn split_columns(
    c: &mut [f32],
    m: usize,
    n: usize,
    len: usize,
    work: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if m == 1 {
        parallel::for_each(c[..n].chunks_mut(len).collect(), |piece, out| work(piece * len, out));
        return;
    }
    let blocks = parallel::map(n.div_ceil(len), |piece| {
        let first = piece * len;
        let mut out = vec![0f32; m * len.min(n - first)];
        work(first, &mut out);
        out
    });
    for (piece, block) in blocks.iter().enumerate() {
        let cols = block.len() / m;
        for (row, part) in c.chunks_exact_mut(n).zip(block.chunks_exact(cols)) {
            row[piece * len..piece * len + cols].copy_from_slice(part);
        }
    }
}

impl Unit {
    /// `out[i×cols + j] = a_i · b_j` for the `cols` rows of `b` (each `a.len() / m` long).
    /// Tiles: tokens × weight rows, sized to the unit's registers; one token streams 4 rows at once.
    pub(super) fn row_dots<W: Weight>(self, a: &[f32], m: usize, b: &[W], out: &mut [f32]) {
        match self {
            // SAFETY (both arms): detect() found these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            Unit::Avx512 => unsafe { x86::row_dots_avx512(a, m, b, out) },
            #[cfg(target_arch = "x86_64")]
            Unit::Avx2 => unsafe { x86::row_dots_avx2(a, m, b, out) },
            Unit::Baseline if m == 1 => row_dots::<W, BaselineVectors, 1, 3>(a, m, b, out),
            Unit::Baseline => row_dots::<W, BaselineVectors, 1, 1>(a, m, b, out),
        }
    }

    /// `out[i×cols + j] = Σ_r a[i][r] · b[r][first + j]` for b [k×n].
    fn row_sums<W: Weight>(self, a: &[f32], m: usize, b: &[W], n: usize, first: usize, out: &mut [f32]) {
        match self {
            // SAFETY (both arms): detect() found these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            Unit::Avx512 => unsafe { x86::row_sums_avx512(a, m, b, n, first, out) },
            #[cfg(target_arch = "x86_64")]
            Unit::Avx2 => unsafe { x86::row_sums_avx2(a, m, b, n, first, out) },
            Unit::Baseline if m == 1 => row_sums::<W, BaselineVectors, 1, 3>(a, m, b, n, first, out),
            Unit::Baseline => row_sums::<W, BaselineVectors, 2, 1>(a, m, b, n, first, out),
        }
    }
}

/// [`Unit::row_dots`] with tiles of `MR` tokens × `NR` weight rows (and 1 × 1 for the edges).
/// f16 weights are widened ahead into f32 when several tokens reuse each weight (the whole piece),
/// or where the unit widens slowly (64 rows at a time, so they stay in cache).
#[inline(always)]
fn row_dots<W: Weight, S: Simd, const MR: usize, const NR: usize>(a: &[f32], m: usize, b: &[W], out: &mut [f32]) {
    if W::as_f32(b).is_none() && (m > 1 || S::WIDEN_AHEAD) {
        let k = a.len() / m;
        let rows = if m > 1 { b.len() / k } else { 8 };
        let mut wide = vec![0f32; rows * k];
        // One token's outputs are contiguous, so a group of rows fills its own part of `out`.
        for (b, out) in b.chunks(rows * k).zip(out.chunks_mut(rows * m)) {
            let wide = &mut wide[..b.len()];
            W::widen_into(b, wide);
            row_dots::<f32, S, MR, NR>(a, m, wide, out);
        }
        return;
    }
    let k = a.len() / m;
    let cols = b.len() / k;
    let a_row = |i: usize| &a[i * k..(i + 1) * k];
    let b_row = |j: usize| &b[j * k..(j + 1) * k];
    let mut j = 0;
    while j < cols {
        let nr = if cols - j >= NR { NR } else { 1 };
        let mut i = 0;
        while i < m {
            let mr = if m - i >= MR { MR } else { 1 };
            let mut put = |r: usize, s: usize, v: f32| out[(i + r) * cols + j + s] = v;
            match (mr == MR, nr == NR) {
                (true, true) => {
                    each(dot_tile::<W, S, MR, NR>(from_fn(|r| a_row(i + r)), from_fn(|s| b_row(j + s))), &mut put)
                }
                (true, false) => each(dot_tile::<W, S, MR, 1>(from_fn(|r| a_row(i + r)), [b_row(j)]), &mut put),
                (false, true) => each(dot_tile::<W, S, 1, NR>([a_row(i)], from_fn(|s| b_row(j + s))), &mut put),
                (false, false) => each(dot_tile::<W, S, 1, 1>([a_row(i)], [b_row(j)]), &mut put),
            }
            i += mr;
        }
        j += nr;
    }
}

/// Calls `put(r, s, tile[r][s])` for every element of a tile.
#[inline(always)]
fn each<const R: usize, const S: usize>(tile: [[f32; S]; R], put: &mut impl FnMut(usize, usize, f32)) {
    for (r, row) in tile.iter().enumerate() {
        for (s, &v) in row.iter().enumerate() {
            put(r, s, v);
        }
    }
}

/// `MR × NR` dot products at once: each token's chunk of 16 and each weight row's chunk are loaded
/// once for the whole tile. Each product sums 16 lanes along k, then the lanes (`Simd::sum`), then
/// the last `k % 16` terms.
#[inline(always)]
fn dot_tile<W: Weight, S: Simd, const MR: usize, const NR: usize>(a: [&[f32]; MR], b: [&[W]; NR]) -> [[f32; NR]; MR] {
    let k = a[0].len();
    assert!(a.iter().all(|row| row.len() == k) && b.iter().all(|row| row.len() == k));
    let whole = k - k % LANES;
    let mut acc = [[S::zero(); NR]; MR];
    let mut kk = 0;
    while kk < whole {
        // SAFETY: every row is k long (asserted) and kk + LANES <= whole <= k. Unchecked, so no
        // bounds-check exit holds the accumulators in memory.
        let wide: [S::V; NR] = from_fn(|s| W::lanes::<S>(unsafe { b[s].get_unchecked(kk..kk + LANES) }));
        for r in 0..MR {
            let x = S::load(unsafe { a[r].get_unchecked(kk..kk + LANES) });
            for s in 0..NR {
                acc[r][s] = S::madd(x, wide[s], acc[r][s]);
            }
        }
        kk += LANES;
    }
    let mut out = [[0f32; NR]; MR];
    for r in 0..MR {
        for s in 0..NR {
            let mut tail = 0f32;
            for t in whole..k {
                tail = S::madd_scalar(a[r][t], W::scalar(&b[s][t..]), tail);
            }
            out[r][s] = S::sum(acc[r][s]) + tail;
        }
    }
    out
}

/// [`Unit::row_sums`] with tiles of `MR` tokens × `NV` vectors of 16 columns (one vector, then
/// single columns, at the edges), over blocks of rows of `b`. One token takes 8 rows at a time
/// straight from `b` (8 streams, each read in long runs). Several tokens pack a block of rows of
/// their columns (an L2's worth, read row by row, widened once) into panels of the tile's width,
/// each of which then stays in L1 for every tile of tokens; one token with f16 weights on a unit
/// that widens slowly packs 8 rows at a time. Each output sums along k in order.
#[inline(always)]
fn row_sums<W: Weight, S: Simd, const MR: usize, const NV: usize>(
    a: &[f32],
    m: usize,
    b: &[W],
    n: usize,
    first: usize,
    out: &mut [f32],
) {
    let (k, cols) = (a.len() / m, out.len() / m);
    out.fill(0.0);
    if m == 1 && (W::as_f32(b).is_some() || !S::WIDEN_AHEAD) {
        for r0 in (0..k).step_by(8) {
            let rows = r0..(r0 + 8).min(k);
            sum_block::<W, S, MR, NV>(Tile { a, k, i: 0, b, n, col: first, b_row0: 0, out, cols, c: 0, rows }, cols);
        }
        return;
    }
    // Blocks of rows of the piece, read row by row in long runs and packed panel by panel (a
    // panel: the block's rows of one tile's columns, contiguous, widened once), so each panel
    // stays in L1 while every tile of tokens uses it. One token: 8 rows, one panel.
    let (block_rows, width) = match m {
        1 => (8, cols),
        _ => ((BLOCK / cols).clamp(16, PANEL / (NV * LANES)), NV * LANES),
    };
    let panels = || (0..cols).step_by(width).map(|c0| (c0, width.min(cols - c0)));
    let mut block = vec![0f32; block_rows * cols.next_multiple_of(width)];
    for r0 in (0..k).step_by(block_rows) {
        let rows = r0..(r0 + block_rows).min(k);
        for (i, row) in rows.clone().enumerate() {
            let src = &b[row * n + first..row * n + first + cols];
            for (p, (c0, w)) in panels().enumerate() {
                pack::<W, S>(&src[c0..c0 + w], &mut block[p * block_rows * width + i * w..][..w]);
            }
        }
        for (p, (c0, w)) in panels().enumerate() {
            let panel = &block[p * block_rows * width..][..rows.len() * w];
            let t = Tile {
                a,
                k,
                i: 0,
                b: panel,
                n: w,
                col: 0,
                b_row0: r0,
                out: &mut *out,
                cols,
                c: c0,
                rows: rows.clone(),
            };
            sum_block::<f32, S, MR, NV>(t, w);
        }
    }
}

/// `src` widened into `dst` 16 at a time on the unit (inline, no call per short row).
#[inline(always)]
fn pack<W: Weight, S: Simd>(src: &[W], dst: &mut [f32]) {
    let whole = src.len() - src.len() % LANES;
    for j in (0..whole).step_by(LANES) {
        S::store(W::lanes::<S>(&src[j..]), &mut dst[j..]);
    }
    // (Only when there is a tail: an empty copy is still a call.)
    if whole < src.len() {
        W::widen_into(&src[whole..], &mut dst[whole..src.len()]);
    }
}

/// Every tile of one block of rows (`t.rows`): all columns, all tokens.
#[inline(always)]
fn sum_block<W: Weight, S: Simd, const MR: usize, const NV: usize>(t: Tile<'_, W>, columns: usize) {
    let m = t.a.len() / t.k;
    let mut c = 0;
    while c < columns {
        let width = if columns - c >= NV * LANES {
            NV * LANES
        } else if columns - c >= LANES {
            LANES
        } else {
            1
        };
        let mut i = 0;
        while i < m {
            let mr = if m - i >= MR { MR } else { 1 };
            let tile = Tile { i, col: t.col + c, c: t.c + c, out: &mut *t.out, rows: t.rows.clone(), ..t };
            match (mr == MR, width / LANES) {
                (true, 0) => sum_column::<W, S, MR>(tile),
                (false, 0) => sum_column::<W, S, 1>(tile),
                (true, 1) => sum_tile::<W, S, MR, 1>(tile),
                (false, 1) => sum_tile::<W, S, 1, 1>(tile),
                (true, _) => sum_tile::<W, S, MR, NV>(tile),
                (false, _) => sum_tile::<W, S, 1, NV>(tile),
            }
            i += mr;
        }
        c += width;
    }
}

/// Where one weighted-sum tile lies: tokens from `i` in `a` [m×k]; columns from `col` in `b`
/// [rows × n], whose first row is row `b_row0` of the weights; the same columns from `c` in `out`
/// [m×cols]; the rows of the weights it adds now.
struct Tile<'a, W> {
    a: &'a [f32],
    k: usize,
    i: usize,
    b: &'a [W],
    n: usize,
    col: usize,
    b_row0: usize,
    out: &'a mut [f32],
    cols: usize,
    c: usize,
    rows: std::ops::Range<usize>,
}

impl<W> Tile<'_, W> {
    /// Where token `r` of the tile starts in `out`.
    fn at(&self, r: usize) -> usize {
        (self.i + r) * self.cols + self.c
    }
}

/// Adds `Σ_{row} a[i][row] · b[row][col..col + 16·NV]` to the tile's outputs, kept in registers
/// across the rows.
#[inline(always)]
fn sum_tile<W: Weight, S: Simd, const MR: usize, const NV: usize>(t: Tile<'_, W>) {
    let mut acc: [[S::V; NV]; MR] = from_fn(|r| from_fn(|v| S::load(&t.out[t.at(r) + v * LANES..])));
    let (rows, last) = (t.rows.len(), t.i + MR - 1);
    assert!(t.rows.end <= t.k && last * t.k + t.rows.end <= t.a.len());
    assert!((t.rows.end - 1 - t.b_row0) * t.n + t.col + NV * LANES <= t.b.len());
    // Pointers walked row by row, so the loop is loads and multiply-adds only.
    let a: [*const f32; MR] = from_fn(|r| t.a[(t.i + r) * t.k + t.rows.start..].as_ptr());
    let mut b = t.b[(t.rows.start - t.b_row0) * t.n + t.col..].as_ptr();
    for step in 0..rows {
        // SAFETY: row `rows.start + step` of every token and its 16·NV columns of b lie inside
        // the slices (asserted above).
        unsafe {
            let wide: [S::V; NV] = from_fn(|v| W::lanes::<S>(std::slice::from_raw_parts(b.add(v * LANES), LANES)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = S::splat(*a[r].add(step));
                for v in 0..NV {
                    acc[v] = S::madd(x, wide[v], acc[v]);
                }
            }
            b = b.wrapping_add(t.n);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let at = t.at(r);
        for (v, &acc) in acc.iter().enumerate() {
            S::store(acc, &mut t.out[at + v * LANES..]);
        }
    }
}

/// One column of the tile's tokens: the edge of a piece narrower than 16.
#[inline(always)]
fn sum_column<W: Weight, S: Simd, const MR: usize>(t: Tile<'_, W>) {
    for r in 0..MR {
        let at = t.at(r);
        let mut acc = t.out[at];
        for row in t.rows.clone() {
            acc = S::madd_scalar(t.a[(t.i + r) * t.k + row], W::scalar(&t.b[(row - t.b_row0) * t.n + t.col..]), acc);
        }
        t.out[at] = acc;
    }
}

/// The same generic loops, compiled with the x86-64 extensions enabled, and their vectors.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd::x86::{Avx2, Avx512};
    use super::{row_dots, row_sums, Weight};

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn row_dots_avx512<W: Weight>(a: &[f32], m: usize, b: &[W], out: &mut [f32]) {
        match m {
            1 => row_dots::<W, Avx512, 1, 4>(a, m, b, out),
            _ => row_dots::<W, Avx512, 4, 6>(a, m, b, out),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn row_dots_avx2<W: Weight>(a: &[f32], m: usize, b: &[W], out: &mut [f32]) {
        match m {
            1 => row_dots::<W, Avx2, 1, 4>(a, m, b, out),
            _ => row_dots::<W, Avx2, 2, 3>(a, m, b, out),
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn row_sums_avx512<W: Weight>(a: &[f32], m: usize, b: &[W], n: usize, first: usize, out: &mut [f32]) {
        match m {
            1 => row_sums::<W, Avx512, 1, 4>(a, m, b, n, first, out),
            _ => row_sums::<W, Avx512, 8, 3>(a, m, b, n, first, out),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn row_sums_avx2<W: Weight>(a: &[f32], m: usize, b: &[W], n: usize, first: usize, out: &mut [f32]) {
        match m {
            1 => row_sums::<W, Avx2, 1, 2>(a, m, b, n, first, out),
            _ => row_sums::<W, Avx2, 4, 1>(a, m, b, n, first, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::tests::pseudo_random;

    fn naive_bt(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|t| a[i * k + t] as f64 * b[j * k + t] as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    fn transpose(b: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut bt = vec![0f32; k * n];
        for j in 0..n {
            for t in 0..k {
                bt[t * n + j] = b[j * k + t];
            }
        }
        bt
    }

    /// Sizes that hit every tile edge: single tokens, token counts around the tile heights, rows
    /// of b around the tile widths and past the 64-row widening groups, k with and without a tail
    /// past the 16 lanes and past the 128-row blocks.
    const SIZES: [(usize, usize, usize); 10] = [
        (1, 40, 200),
        (1, 37, 29),
        (3, 37, 29),
        (5, 17, 1),
        (1, 1, 1),
        (7, 83, 72),
        (13, 64, 300),
        (1, 300, 70),
        (6, 529, 71),
        (2, 16, 1),
    ];

    /// The units this CPU runs: the portable loops (wasm's), and the one detected.
    fn units() -> [Unit; 2] {
        [Unit::Baseline, Unit::detect()]
    }

    #[test]
    fn products_match_the_f64_sum_on_awkward_sizes() {
        for ((m, k, n), unit) in SIZES.into_iter().flat_map(|size| units().map(|unit| (size, unit))) {
            let a = pseudo_random(m * k, 1);
            let b = pseudo_random(n * k, 2);
            let want = naive_bt(&a, &b, m, k, n);
            let mut c = vec![0f32; m * n];
            matmul_bt_on(unit, &a, &b, (m, k, n), &mut c);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5, "{unit:?} bt {m}x{k}x{n}: {x} vs {y}");
            }
            let mut c = vec![0f32; m * n];
            matmul_on(unit, &a, &transpose(&b, n, k), (m, k, n), &mut c);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5, "{unit:?} plain {m}x{k}x{n}: {x} vs {y}");
            }
        }
    }

    /// A token's outputs do not depend on how many other tokens share its tiles: every token of a
    /// batch gets the numbers it gets alone, bit for bit.
    #[test]
    fn each_token_gets_the_same_numbers_alone_or_in_a_batch() {
        for ((m, k, n), unit) in SIZES.into_iter().flat_map(|size| units().map(|unit| (size, unit))) {
            let a = pseudo_random(m * k, 3);
            let b = pseudo_random(n * k, 4);
            let bt = transpose(&b, n, k);
            let (mut batch, mut batch_plain) = (vec![0f32; m * n], vec![0f32; m * n]);
            matmul_bt_on(unit, &a, &b, (m, k, n), &mut batch);
            matmul_on(unit, &a, &bt, (m, k, n), &mut batch_plain);
            for i in 0..m {
                let (mut one, mut one_plain) = (vec![0f32; n], vec![0f32; n]);
                matmul_bt_on(unit, &a[i * k..(i + 1) * k], &b, (1, k, n), &mut one);
                matmul_on(unit, &a[i * k..(i + 1) * k], &bt, (1, k, n), &mut one_plain);
                assert_eq!(one, batch[i * n..(i + 1) * n], "{unit:?} bt {m}x{k}x{n} token {i}");
                assert_eq!(one_plain, batch_plain[i * n..(i + 1) * n], "{unit:?} plain {m}x{k}x{n} token {i}");
            }
        }
    }

    #[test]
    fn f16_products_equal_f32_products_on_the_widened_weights() {
        for ((m, k, n), unit) in SIZES.into_iter().flat_map(|size| units().map(|unit| (size, unit))) {
            let a = pseudo_random(m * k, 4);
            let halves: Vec<f16> = pseudo_random(n * k, 5).iter().map(|&v| f16::from_f32(v)).collect();
            let wide: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
            let (mut c16, mut c32) = (vec![0f32; m * n], vec![0f32; m * n]);
            matmul_bt_on(unit, &a, &halves, (m, k, n), &mut c16);
            matmul_bt_on(unit, &a, &wide, (m, k, n), &mut c32);
            assert_eq!(c16, c32, "{unit:?} bt {m}x{k}x{n}");
            let a = pseudo_random(m * n, 6);
            let (mut c16, mut c32) = (vec![0f32; m * k], vec![0f32; m * k]);
            matmul_on(unit, &a, &halves, (m, n, k), &mut c16);
            matmul_on(unit, &a, &wide, (m, n, k), &mut c32);
            assert_eq!(c16, c32, "{unit:?} plain {m}x{n}x{k}");
        }
    }
}
