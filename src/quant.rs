//! Quantized weight rows, q8 and q4: the block formats, how a row of f32 values is quantized, and
//! the one dequantization rule every backend follows (the CPU here and in `cpu::quantized`, the GPU in
//! `shaders/weights_q8.wgsl` and `weights_q4.wgsl`, the float64 reference in `tools/reference.py`).
//!
//! A row is cut into groups of [`GROUP`] values along the dimension the products reduce, each group
//! stored as one block (little-endian; llama.cpp's `Q8_0` and `Q4_1` blocks, with the q4 nibbles in
//! value order):
//!
//! | format | block bytes | layout | value i of the group |
//! |---|---|---|---|
//! | q8 | 34 | f16 `d`, 32 × i8 `q` | `d · q[i]` |
//! | q4 | 20 | f16 `d`, f16 `m`, 16 bytes: byte j holds `q[2j]` (low nibble) and `q[2j+1]` (high) | `d · q[i] + m` |
//!
//! evaluated in f32 (the product is exact; q4's sum rounds once). A row of `cols` values takes
//! `ceil(cols / 32)` blocks; the values past `cols` in the last block have `q = 0` and are never read.
//!
//! Quantizing is round-to-nearest, written so that a numpy implementation gives the same bytes
//! (`quantize()` in `tools/make_fixtures.py` is one; `quantizing_on_load_gives_the_fixtures_bytes`
//! in `tests/quantized.rs` checks they agree): f32 arithmetic, halves rounded away from zero,
//! each group's scale (and q4's minimum) rounded to f16 before the values are divided by it.
//! - q8: `d = f16(max |w| / 127)`, `q = clamp(round(w / d), -127, 127)`.
//! - q4: `m = f16(min w)`, `d = f16((max w - min w) / 15)`, `q = clamp(round((w - m) / d), 0, 15)`.
//!
//! A scale of 0 (an all-zero group) gives `q = 0`.

use half::f16;

/// Values per group: one scale (and for q4 one minimum) per this many weights.
pub const GROUP: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Q8,
    Q4,
}

/// Why a row cannot be quantized or a stored block is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockError {
    /// A value whose group's scale or minimum does not fit f16.
    OutOfRange { index: usize, value: f32 },
    /// A stored block whose scale or minimum is NaN or infinite.
    NonFiniteScale { group: usize },
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OutOfRange { index, value } => {
                write!(f, "value {value} at index {index} needs a scale beyond f16's range (±65504)")
            }
            Self::NonFiniteScale { group } => write!(f, "group {group} has a NaN or infinite scale or minimum"),
        }
    }
}

impl QuantFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "q8" => Some(Self::Q8),
            "q4" => Some(Self::Q4),
            _ => None,
        }
    }

    /// Bytes of one block of [`GROUP`] values.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q8 => 2 + GROUP,
            Self::Q4 => 4 + GROUP / 2,
        }
    }

    /// Bytes of a row of `cols` values.
    pub fn row_bytes(self, cols: usize) -> usize {
        cols.div_ceil(GROUP) * self.block_bytes()
    }

    /// Appends the blocks of one row.
    pub fn quantize_row(self, row: &[f32], out: &mut Vec<u8>) -> Result<(), BlockError> {
        for (g, group) in row.chunks(GROUP).enumerate() {
            let out_of_range = |i: usize| BlockError::OutOfRange { index: g * GROUP + i, value: group[i] };
            let argmax = |key: fn(f32) -> f32| {
                (0..group.len()).fold(0, |best, i| if key(group[i]) > key(group[best]) { i } else { best })
            };
            match self {
                Self::Q8 => {
                    let i = argmax(f32::abs);
                    let d = f16::from_f32(group[i].abs() / 127.0);
                    if d.is_infinite() {
                        return Err(out_of_range(i));
                    }
                    out.extend(d.to_le_bytes());
                    let d = d.to_f32();
                    for j in 0..GROUP {
                        let q = match group.get(j) {
                            Some(&w) if d > 0.0 => (w / d).round().clamp(-127.0, 127.0) as i8,
                            _ => 0,
                        };
                        out.push(q as u8);
                    }
                }
                Self::Q4 => {
                    let (lo, hi) = (argmax(|w| -w), argmax(|w| w));
                    let m = f16::from_f32(group[lo]);
                    let d = f16::from_f32((group[hi] - group[lo]) / 15.0);
                    if m.is_infinite() || d.is_infinite() {
                        return Err(out_of_range(if m.is_infinite() { lo } else { hi }));
                    }
                    out.extend(d.to_le_bytes());
                    out.extend(m.to_le_bytes());
                    let (d, m) = (d.to_f32(), m.to_f32());
                    let q = |j: usize| match group.get(j) {
                        Some(&w) if d > 0.0 => ((w - m) / d).round().clamp(0.0, 15.0) as u8,
                        _ => 0,
                    };
                    out.extend((0..GROUP / 2).map(|j| q(2 * j) | (q(2 * j + 1) << 4)));
                }
            }
        }
        Ok(())
    }

    /// The values of one row's blocks: `out.len()` of them (at most the blocks' values).
    pub fn dequantize_row(self, blocks: &[u8], out: &mut [f32]) {
        for (block, values) in blocks.chunks_exact(self.block_bytes()).zip(out.chunks_mut(GROUP)) {
            let scale = self.scale(block);
            for (j, v) in values.iter_mut().enumerate() {
                *v = self.value(block, scale, j);
            }
        }
    }

    /// Value `i` of a row of blocks, alone (`i` below the row's values: past them lie the last
    /// block's padding values, then nothing).
    pub fn dequantize_at(self, blocks: &[u8], i: usize) -> f32 {
        let block = &blocks[i / GROUP * self.block_bytes()..][..self.block_bytes()];
        self.value(block, self.scale(block), i % GROUP)
    }

    /// Value `j` of a block whose scale and minimum are `(d, m)`: the dequantization rule.
    #[inline(always)]
    fn value(self, block: &[u8], (d, m): (f32, f32), j: usize) -> f32 {
        match self {
            Self::Q8 => d * block[2 + j] as i8 as f32,
            Self::Q4 => d * nibble(&block[4..], j) as f32 + m,
        }
    }

    /// Whole rows of blocks, `cols` values each, as f32.
    pub fn dequantize_rows(self, cols: usize, blocks: &[u8]) -> Vec<f32> {
        let row_bytes = self.row_bytes(cols).max(1);
        let mut values = vec![0f32; cols * (blocks.len() / row_bytes)];
        for (row, out) in blocks.chunks_exact(row_bytes).zip(values.chunks_mut(cols.max(1))) {
            self.dequantize_row(row, out);
        }
        values
    }

    /// A block's scale `d` and minimum `m` (0 for q8).
    #[inline(always)]
    pub fn scale(self, block: &[u8]) -> (f32, f32) {
        let half = |at: usize| f16::from_le_bytes([block[at], block[at + 1]]).to_f32();
        match self {
            Self::Q8 => (half(0), 0.0),
            Self::Q4 => (half(0), half(2)),
        }
    }

    /// Refuses blocks whose scale or minimum is not finite (a file can hold any bits there).
    pub fn check_row(self, blocks: &[u8]) -> Result<(), BlockError> {
        match blocks.chunks_exact(self.block_bytes()).position(|b| {
            let (d, m) = self.scale(b);
            !d.is_finite() || !m.is_finite()
        }) {
            Some(group) => Err(BlockError::NonFiniteScale { group }),
            None => Ok(()),
        }
    }
}

/// Quant `j` of a q4 block's 16 quant bytes.
#[inline(always)]
pub fn nibble(quants: &[u8], j: usize) -> u8 {
    (quants[j / 2] >> (4 * (j % 2))) & 15
}

/// A matrix of quantized rows, row-major: `rows` rows of `cols` values, each
/// [`QuantFormat::row_bytes`] long.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    pub format: QuantFormat,
    pub cols: usize,
    pub blocks: Vec<u8>,
}

impl QuantMatrix {
    pub fn new(format: QuantFormat, cols: usize) -> Self {
        QuantMatrix { format, cols, blocks: Vec::new() }
    }

    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols)
    }

    pub fn rows(&self) -> usize {
        self.blocks.len() / self.row_bytes().max(1)
    }

    /// Row `r`'s blocks.
    pub fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.blocks[r * n..(r + 1) * n]
    }

    /// Every value, row-major, as f32.
    pub fn dequantize(&self) -> Vec<f32> {
        self.format.dequantize_rows(self.cols, &self.blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(format: QuantFormat, row: &[f32]) -> Vec<f32> {
        let mut blocks = Vec::new();
        format.quantize_row(row, &mut blocks).unwrap();
        assert_eq!(blocks.len(), format.row_bytes(row.len()));
        let mut back = vec![0f32; row.len()];
        format.dequantize_row(&blocks, &mut back);
        for (i, v) in back.iter().enumerate() {
            assert_eq!(format.dequantize_at(&blocks, i).to_bits(), v.to_bits(), "{} value {i}", format.as_str());
        }
        back
    }

    #[test]
    fn q8_error_is_within_half_a_step_of_its_group() {
        let row: Vec<f32> = (0..70).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013).collect();
        let back = round_trip(QuantFormat::Q8, &row);
        for (g, (w, v)) in row.chunks(GROUP).zip(back.chunks(GROUP)).enumerate() {
            let step = f16::from_f32(w.iter().fold(0f32, |a, x| a.max(x.abs())) / 127.0).to_f32();
            for (x, y) in w.iter().zip(v) {
                assert!((x - y).abs() <= step * 0.5 + 1e-7, "group {g}: {x} -> {y}, step {step}");
            }
        }
    }

    #[test]
    fn q4_keeps_each_groups_range_and_rounds_to_its_16_levels() {
        let row: Vec<f32> = (0..45).map(|i| (i as f32 * 0.7).sin() * 0.5 + 0.1).collect();
        let back = round_trip(QuantFormat::Q4, &row);
        for (w, v) in row.chunks(GROUP).zip(back.chunks(GROUP)) {
            let (lo, hi) = w.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let step = (hi - lo) / 15.0;
            for (x, y) in w.iter().zip(v) {
                assert!((x - y).abs() <= step * 0.5 + 2e-3, "{x} -> {y}, step {step}");
            }
        }
    }

    #[test]
    fn zero_groups_and_exact_levels_come_back_exactly() {
        assert_eq!(round_trip(QuantFormat::Q8, &[0.0; 40]), vec![0.0; 40]);
        assert_eq!(round_trip(QuantFormat::Q4, &[0.0; 33]), vec![0.0; 33]);
        let levels: Vec<f32> = (0..32).map(|i| (i % 16) as f32 * 0.25 - 1.0).collect();
        assert_eq!(round_trip(QuantFormat::Q4, &levels), levels);
        let ints: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let mut with_max = ints.clone();
        with_max[0] = 127.0;
        assert_eq!(round_trip(QuantFormat::Q8, &with_max), with_max);
    }

    #[test]
    fn nibbles_are_stored_in_value_order() {
        let row: Vec<f32> = (0..32).map(|i| (i % 16) as f32).collect();
        let mut blocks = Vec::new();
        QuantFormat::Q4.quantize_row(&row, &mut blocks).unwrap();
        assert_eq!(&blocks[4..8], &[0x10, 0x32, 0x54, 0x76]);
    }

    #[test]
    fn values_beyond_f16_scales_and_non_finite_stored_scales_are_refused() {
        let mut row = vec![0.5f32; 40];
        row[35] = 1e7;
        assert_eq!(
            QuantFormat::Q8.quantize_row(&row, &mut Vec::new()),
            Err(BlockError::OutOfRange { index: 35, value: 1e7 })
        );
        row[35] = -7e4;
        assert!(matches!(QuantFormat::Q4.quantize_row(&row, &mut Vec::new()), Err(BlockError::OutOfRange { .. })));
        let mut blocks = Vec::new();
        QuantFormat::Q4.quantize_row(&[1.0; 64], &mut blocks).unwrap();
        assert_eq!(QuantFormat::Q4.check_row(&blocks), Ok(()));
        blocks[20 + 2..20 + 4].copy_from_slice(&f16::NAN.to_le_bytes());
        assert_eq!(QuantFormat::Q4.check_row(&blocks), Err(BlockError::NonFiniteScale { group: 1 }));
    }
}
