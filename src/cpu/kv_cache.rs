//! One layer's KV cache on the CPU: post-RoPE keys (or values) of every position so far, [len ×
//! hidden], in f32 (the default: the exact path) or f16 (half the memory, each element rounded as
//! it is stored and widened exactly as it is read, as the GPU's f16 cache does).

use std::borrow::Cow;

use half::f16;

use super::simd::Unit;
use crate::KvDtype;

pub enum KvRows {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvRows {
    pub fn new(dtype: KvDtype) -> KvRows {
        match dtype {
            KvDtype::F32 => KvRows::F32(Vec::new()),
            KvDtype::F16 => KvRows::F16(Vec::new()),
        }
    }

    pub fn dtype(&self) -> KvDtype {
        match self {
            KvRows::F32(_) => KvDtype::F32,
            KvRows::F16(_) => KvDtype::F16,
        }
    }

    /// Appends whole rows.
    pub fn extend(&mut self, rows: &[f32]) {
        match self {
            KvRows::F32(cache) => cache.extend_from_slice(rows),
            KvRows::F16(cache) => cache.extend(rows.iter().map(|&v| f16::from_f32(v))),
        }
    }

    pub fn clear(&mut self) {
        match self {
            KvRows::F32(cache) => cache.clear(),
            KvRows::F16(cache) => cache.clear(),
        }
    }

    /// Head `h`'s (`hd` wide, at `h · hd` of rows `d` wide) keys or values at positions
    /// `0..len`, as f32: the f32 cache itself, or an f16 cache's widened into a copy (one pass
    /// that vectorises, rather than a widening inside every dot product).
    pub fn head(&self, unit: Unit, h: usize, hd: usize, d: usize, len: usize) -> HeadRows<'_> {
        match self {
            KvRows::F32(cache) => HeadRows { data: Cow::Borrowed(&cache[..len * d]), stride: d, offset: h * hd, hd },
            KvRows::F16(cache) => {
                let mut wide = vec![0f32; len * hd];
                for (row, out) in cache.chunks_exact(d).zip(wide.chunks_exact_mut(hd)) {
                    unit.widen_halves(&row[h * hd..(h + 1) * hd], out);
                }
                HeadRows { data: Cow::Owned(wide), stride: hd, offset: 0, hd }
            }
        }
    }
}

/// One head's rows of a cache (see [`KvRows::head`]).
pub struct HeadRows<'a> {
    data: Cow<'a, [f32]>,
    stride: usize,
    offset: usize,
    hd: usize,
}

impl HeadRows<'_> {
    #[inline]
    pub fn row(&self, j: usize) -> &[f32] {
        &self.data[j * self.stride + self.offset..][..self.hd]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_f16_cache_reads_back_its_rows_rounded_to_f16() {
        let (d, hd, len) = (8, 4, 3);
        let rows: Vec<f32> = (0..len * d).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
        let (mut full, mut half) = (KvRows::new(KvDtype::F32), KvRows::new(KvDtype::F16));
        full.extend(&rows);
        half.extend(&rows);
        assert_eq!(half.dtype(), KvDtype::F16);
        for h in 0..d / hd {
            let (a, b) = (full.head(Unit::detect(), h, hd, d, len), half.head(Unit::detect(), h, hd, d, len));
            for j in 0..len {
                let want = &rows[j * d + h * hd..j * d + (h + 1) * hd];
                assert_eq!(a.row(j), want);
                let rounded: Vec<f32> = want.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
                assert_eq!(b.row(j), rounded);
            }
        }
        half.clear();
        half.extend(&rows[..d]);
        assert_eq!(
            half.head(Unit::detect(), 1, hd, d, 1).row(0),
            rows[hd..d].iter().map(|&v| f16::from_f32(v).to_f32()).collect::<Vec<_>>()
        );
    }
}
