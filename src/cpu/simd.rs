//! The vector units the CPU products are compiled for: 16 f32 lanes on AVX-512, AVX2 (both with
//! FMA, chosen at run time on x86-64) or the target's own (SSE2 natively, simd128 in wasm), with
//! loads that widen f16 weights and quantized blocks to f32 lanes.

use std::array::from_fn;

use half::f16;

use super::kernels::widen;

/// Lanes of the row-dot accumulators: one AVX-512 register, two AVX2 ones, four SSE or simd128 ones.
pub const LANES: usize = 16;

/// 16 f32 lanes on one vector unit. Loads read the first 16 elements of a slice (callers check the
/// length); `madd` is `a · b + c`, rounded once where the unit has FMA.
pub trait Simd {
    type V: Copy;
    /// Whether f16 weights are better widened into an f32 buffer first, with a plain loop, than
    /// 16 at a time as they are loaded (true where widening takes several instructions a lane).
    const WIDEN_AHEAD: bool;
    fn zero() -> Self::V;
    fn splat(x: f32) -> Self::V;
    fn load(src: &[f32]) -> Self::V;
    fn load_half(src: &[f16]) -> Self::V;
    /// 16 int8 quants (`src[0..16]`) as f32 lanes.
    fn load_q8(src: &[u8]) -> Self::V;
    /// The 32 4-bit quants of 16 bytes (value 2j in byte j's low nibble, 2j + 1 in its high) as
    /// two vectors of f32 lanes, values 0..16 and 16..32.
    fn load_q4(src: &[u8]) -> [Self::V; 2];
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn store(v: Self::V, dst: &mut [f32]);
    fn to_array(v: Self::V) -> [f32; LANES];
    /// The 16 lanes summed as a tree (lane i with lane i + 8, then + 4, + 2, + 1): short
    /// dependency chains, and the same order on every unit.
    #[inline(always)]
    fn sum(v: Self::V) -> f32 {
        let mut lanes = Self::to_array(v);
        for width in [8, 4, 2, 1] {
            for i in 0..width {
                lanes[i] += lanes[i + width];
            }
        }
        lanes[0]
    }
    /// `a · b + c` for one element, rounded as `madd` rounds.
    fn madd_scalar(a: f32, b: f32, c: f32) -> f32;
    /// A hint to bring the cache line at `at` close (never faults; nothing where the unit has no
    /// such instruction).
    #[inline(always)]
    fn prefetch(_at: *const u8) {}
    /// The two halves of a little-endian u32 (the low one first) as f32, exactly.
    #[inline(always)]
    fn widen_pair(word: u32) -> [f32; 2] {
        [widen(f16::from_bits(word as u16)), widen(f16::from_bits((word >> 16) as u16))]
    }
}

/// Plain arrays that LLVM vectorises for the target's own features (SSE2 on x86-64, simd128 in
/// wasm), without FMA.
pub struct Portable;

impl Simd for Portable {
    type V = [f32; LANES];
    const WIDEN_AHEAD: bool = true;

    #[inline(always)]
    fn zero() -> Self::V {
        [0.0; LANES]
    }

    #[inline(always)]
    fn splat(x: f32) -> Self::V {
        [x; LANES]
    }

    #[inline(always)]
    fn load(src: &[f32]) -> Self::V {
        let src = &src[..LANES];
        from_fn(|i| src[i])
    }

    #[inline(always)]
    fn load_half(src: &[f16]) -> Self::V {
        let src = &src[..LANES];
        from_fn(|i| widen(src[i]))
    }

    #[inline(always)]
    fn load_q8(src: &[u8]) -> Self::V {
        let src = &src[..LANES];
        from_fn(|i| src[i] as i8 as f32)
    }

    #[inline(always)]
    fn load_q4(src: &[u8]) -> [Self::V; 2] {
        let src = &src[..LANES];
        let nibble = |j: usize| crate::quant::nibble(src, j) as f32;
        [from_fn(nibble), from_fn(|j| nibble(j + LANES))]
    }

    #[inline(always)]
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        from_fn(|i| a[i] * b[i] + c[i])
    }

    #[inline(always)]
    fn store(v: Self::V, dst: &mut [f32]) {
        dst[..LANES].copy_from_slice(&v);
    }

    #[inline(always)]
    fn to_array(v: Self::V) -> [f32; LANES] {
        v
    }

    #[inline(always)]
    fn madd_scalar(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// [`Unit::Baseline`]'s vectors: simd128 written out in wasm (plain arrays leave the widening of
/// f16 and quantized weights scalar there), plain arrays elsewhere.
#[cfg(target_arch = "wasm32")]
pub type BaselineVectors = wasm::Simd128;
#[cfg(not(target_arch = "wasm32"))]
pub type BaselineVectors = Portable;

/// The vector unit the loops are compiled for.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// SSE2 on x86-64, simd128 in wasm (the target's own features), no FMA.
    Baseline,
}

impl Unit {
    pub fn detect() -> Unit {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("fma") {
                return Unit::Avx512;
            }
            if has!("avx2") && has!("fma") && has!("f16c") {
                return Unit::Avx2;
            }
        }
        Unit::Baseline
    }

    /// `src` widened exactly into `dst` (same length), 16 at a time on the unit (F16C's
    /// conversion on x86-64).
    pub fn widen_halves(self, src: &[f16], dst: &mut [f32]) {
        match self {
            // SAFETY (both arms): detect() found these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            Unit::Avx512 => unsafe { x86::widen_halves_avx512(src, dst) },
            #[cfg(target_arch = "x86_64")]
            Unit::Avx2 => unsafe { x86::widen_halves_avx2(src, dst) },
            Unit::Baseline => widen_halves::<BaselineVectors>(src, dst),
        }
    }
}

#[inline(always)]
fn widen_halves<S: Simd>(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let whole = src.len() - src.len() % LANES;
    for (s, d) in src[..whole].chunks_exact(LANES).zip(dst[..whole].chunks_exact_mut(LANES)) {
        S::store(S::load_half(s), d);
    }
    dst[whole..].iter_mut().zip(&src[whole..]).for_each(|(d, &h)| *d = widen(h));
}

/// The x86-64 units' vectors.
#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{Simd, LANES};

    /// [`Simd::widen_pair`] with one F16C conversion (part of both units' features).
    #[inline(always)]
    fn half_pair(word: u32) -> [f32; 2] {
        // SAFETY: only inside row_*/block_* functions compiled with f16c or avx512f enabled, on a CPU
        // that detect() found to have them.
        unsafe {
            let v = _mm_cvtph_ps(_mm_cvtsi32_si128(word as i32));
            [_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1))]
        }
    }

    /// The 32 nibbles of 16 bytes, one per byte in value order: values 0..16 and 16..32.
    ///
    /// # Safety
    /// `src` holds at least 16 bytes (SSE2 is part of x86-64).
    #[inline(always)]
    unsafe fn nibbles(src: &[u8]) -> [__m128i; 2] {
        let bytes = _mm_loadu_si128(src.as_ptr().cast());
        let mask = _mm_set1_epi8(15);
        let (low, high) = (_mm_and_si128(bytes, mask), _mm_and_si128(_mm_srli_epi16(bytes, 4), mask));
        [_mm_unpacklo_epi8(low, high), _mm_unpackhi_epi8(low, high)]
    }

    /// # Safety
    /// The CPU has AVX-512F ([`super::Unit::detect`] said so).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn widen_halves_avx512(src: &[f16], dst: &mut [f32]) {
        super::widen_halves::<Avx512>(src, dst)
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C ([`super::Unit::detect`] said so).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn widen_halves_avx2(src: &[f16], dst: &mut [f32]) {
        super::widen_halves::<Avx2>(src, dst)
    }

    /// What both units do alike: FMA for one element, a prefetch, F16C's widening of a pair.
    macro_rules! shared_x86_methods {
        () => {
            #[inline(always)]
            fn madd_scalar(a: f32, b: f32, c: f32) -> f32 {
                a.mul_add(b, c)
            }

            #[inline(always)]
            fn prefetch(at: *const u8) {
                // SAFETY: a prefetch never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) }
            }

            #[inline(always)]
            fn widen_pair(word: u32) -> [f32; 2] {
                half_pair(word)
            }
        };
    }

    /// One 512-bit register. Only used inside `row_*_avx512`, which the CPU was checked to run.
    pub struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
        const WIDEN_AHEAD: bool = false;

        #[inline(always)]
        fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }

        #[inline(always)]
        fn splat(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }

        #[inline(always)]
        fn load(src: &[f32]) -> __m512 {
            debug_assert!(src.len() >= LANES);
            // SAFETY: callers pass at least 16 elements.
            unsafe { _mm512_loadu_ps(src.as_ptr()) }
        }

        #[inline(always)]
        fn load_half(src: &[f16]) -> __m512 {
            debug_assert!(src.len() >= LANES);
            // SAFETY: as load; vcvtph2ps widens every half exactly.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(src.as_ptr().cast())) }
        }

        #[inline(always)]
        fn load_q8(src: &[u8]) -> __m512 {
            debug_assert!(src.len() >= LANES);
            // SAFETY: callers pass at least 16 bytes.
            unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(src.as_ptr().cast()))) }
        }

        #[inline(always)]
        fn load_q4(src: &[u8]) -> [__m512; 2] {
            debug_assert!(src.len() >= LANES);
            // SAFETY: as load_q8.
            unsafe {
                let [low, high] = nibbles(src);
                [_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(low)), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(high))]
            }
        }

        #[inline(always)]
        fn madd(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }

        #[inline(always)]
        fn store(v: __m512, dst: &mut [f32]) {
            assert!(dst.len() >= LANES);
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) }
        }

        #[inline(always)]
        fn to_array(v: __m512) -> [f32; LANES] {
            // SAFETY: both are 64 bytes of f32.
            unsafe { std::mem::transmute(v) }
        }

        #[inline(always)]
        fn sum(v: __m512) -> f32 {
            // SAFETY: register shuffles only. Lane i + 8 onto lane i, then + 4, + 2, + 1.
            unsafe {
                let high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
                Avx2::sum([_mm512_castps512_ps256(v), high])
            }
        }

        shared_x86_methods!();
    }

    /// Two 256-bit registers. Only used inside `row_*_avx2`, which the CPU was checked to run.
    pub struct Avx2;

    impl Simd for Avx2 {
        type V = [__m256; 2];
        const WIDEN_AHEAD: bool = false;

        #[inline(always)]
        fn zero() -> Self::V {
            unsafe { [_mm256_setzero_ps(); 2] }
        }

        #[inline(always)]
        fn splat(x: f32) -> Self::V {
            unsafe { [_mm256_set1_ps(x); 2] }
        }

        #[inline(always)]
        fn load(src: &[f32]) -> Self::V {
            debug_assert!(src.len() >= LANES);
            // SAFETY: callers pass at least 16 elements.
            unsafe { [_mm256_loadu_ps(src.as_ptr()), _mm256_loadu_ps(src.as_ptr().add(8))] }
        }

        #[inline(always)]
        fn load_half(src: &[f16]) -> Self::V {
            debug_assert!(src.len() >= LANES);
            // SAFETY: as load; vcvtph2ps widens every half exactly.
            unsafe {
                let p = src.as_ptr().cast::<__m128i>();
                [_mm256_cvtph_ps(_mm_loadu_si128(p)), _mm256_cvtph_ps(_mm_loadu_si128(p.add(1)))]
            }
        }

        #[inline(always)]
        fn load_q8(src: &[u8]) -> Self::V {
            debug_assert!(src.len() >= LANES);
            // SAFETY: callers pass at least 16 bytes.
            unsafe {
                let p = src.as_ptr().cast::<__m128i>();
                let widen = |eight: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(eight));
                [widen(_mm_loadl_epi64(p)), widen(_mm_loadl_epi64(src.as_ptr().add(8).cast()))]
            }
        }

        #[inline(always)]
        fn load_q4(src: &[u8]) -> [Self::V; 2] {
            debug_assert!(src.len() >= LANES);
            // SAFETY: as load_q8.
            unsafe {
                let widen = |sixteen: __m128i| {
                    [
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sixteen)),
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sixteen, 8))),
                    ]
                };
                let [low, high] = nibbles(src);
                [widen(low), widen(high)]
            }
        }

        #[inline(always)]
        fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            unsafe { [_mm256_fmadd_ps(a[0], b[0], c[0]), _mm256_fmadd_ps(a[1], b[1], c[1])] }
        }

        #[inline(always)]
        fn store(v: Self::V, dst: &mut [f32]) {
            assert!(dst.len() >= LANES);
            unsafe {
                _mm256_storeu_ps(dst.as_mut_ptr(), v[0]);
                _mm256_storeu_ps(dst.as_mut_ptr().add(8), v[1]);
            }
        }

        #[inline(always)]
        fn to_array(v: Self::V) -> [f32; LANES] {
            // SAFETY: both are 64 bytes of f32.
            unsafe { std::mem::transmute(v) }
        }

        #[inline(always)]
        fn sum(v: Self::V) -> f32 {
            // SAFETY: register shuffles only. Lane i + 8 onto lane i, then + 4, + 2, + 1.
            unsafe {
                let eight = _mm256_add_ps(v[0], v[1]);
                let four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
                let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
                _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)))
            }
        }

        shared_x86_methods!();
    }
}

/// wasm's 128-bit unit, written out where LLVM leaves [`Portable`]'s plain arrays scalar: the
/// widening of f16 weights and quantized blocks to f32 lanes, in registers as they are loaded
/// (f16 by `kernels::widen_by_scaling`'s rule). Arithmetic as [`Portable`]'s (no FMA), so both
/// round alike.
#[cfg(target_arch = "wasm32")]
pub mod wasm {
    use std::arch::wasm32::*;

    use half::f16;

    use super::{Simd, LANES};

    /// Four simd128 registers.
    pub struct Simd128;

    /// 16 bytes as 16 f32 lanes, each byte's integer signed (`i8`) or not (`u8`).
    #[inline(always)]
    fn bytes_to_lanes(bytes: v128, signed: bool) -> [v128; 4] {
        let (low, high) = if signed {
            (i16x8_extend_low_i8x16(bytes), i16x8_extend_high_i8x16(bytes))
        } else {
            (u16x8_extend_low_u8x16(bytes), u16x8_extend_high_u8x16(bytes))
        };
        // Signed or not, the 16-bit lanes now hold the value as an i16.
        [
            f32x4_convert_i32x4(i32x4_extend_low_i16x8(low)),
            f32x4_convert_i32x4(i32x4_extend_high_i16x8(low)),
            f32x4_convert_i32x4(i32x4_extend_low_i16x8(high)),
            f32x4_convert_i32x4(i32x4_extend_high_i16x8(high)),
        ]
    }

    impl Simd for Simd128 {
        type V = [v128; 4];
        const WIDEN_AHEAD: bool = false;

        #[inline(always)]
        fn zero() -> Self::V {
            [f32x4_splat(0.0); 4]
        }

        #[inline(always)]
        fn splat(x: f32) -> Self::V {
            [f32x4_splat(x); 4]
        }

        #[inline(always)]
        fn load(src: &[f32]) -> Self::V {
            let src = &src[..LANES];
            // SAFETY: 16 f32 in bounds; v128_load has no alignment requirement.
            std::array::from_fn(|i| unsafe { v128_load(src.as_ptr().add(4 * i).cast()) })
        }

        #[inline(always)]
        fn load_half(src: &[f16]) -> Self::V {
            let src = &src[..LANES];
            // SAFETY: 16 halves in bounds.
            let halves = |i: usize| unsafe { v128_load(src.as_ptr().add(8 * i).cast()) };
            let [low, high] = [halves(0), halves(1)];
            let words = [
                u32x4_extend_low_u16x8(low),
                u32x4_extend_high_u16x8(low),
                u32x4_extend_low_u16x8(high),
                u32x4_extend_high_u16x8(high),
            ];
            // The magnitude's bits moved into f32 position and rescaled by 2^112, then the sign.
            words.map(|h| {
                let magnitude = f32x4_mul(
                    i32x4_shl(v128_and(h, u32x4_splat(0x7fff)), 13),
                    f32x4_splat(f32::from_bits(0x7780_0000)),
                );
                v128_or(magnitude, i32x4_shl(v128_and(h, u32x4_splat(0x8000)), 16))
            })
        }

        #[inline(always)]
        fn load_q8(src: &[u8]) -> Self::V {
            let src = &src[..LANES];
            // SAFETY: 16 bytes in bounds.
            bytes_to_lanes(unsafe { v128_load(src.as_ptr().cast()) }, true)
        }

        #[inline(always)]
        fn load_q4(src: &[u8]) -> [Self::V; 2] {
            let src = &src[..LANES];
            // SAFETY: 16 bytes in bounds.
            let bytes = unsafe { v128_load(src.as_ptr().cast()) };
            let (low, high) = (v128_and(bytes, u8x16_splat(15)), u8x16_shr(bytes, 4));
            // Value 2j is byte j's low nibble, 2j + 1 its high one: interleave them.
            let first = u8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(low, high);
            let second = u8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(low, high);
            [bytes_to_lanes(first, false), bytes_to_lanes(second, false)]
        }

        #[inline(always)]
        fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            std::array::from_fn(|i| f32x4_add(f32x4_mul(a[i], b[i]), c[i]))
        }

        #[inline(always)]
        fn store(v: Self::V, dst: &mut [f32]) {
            dst[..LANES].copy_from_slice(&Self::to_array(v));
        }

        #[inline(always)]
        fn to_array(v: Self::V) -> [f32; LANES] {
            // SAFETY: both are 64 bytes of f32.
            unsafe { std::mem::transmute(v) }
        }

        #[inline(always)]
        fn madd_scalar(a: f32, b: f32, c: f32) -> f32 {
            a * b + c
        }
    }
}
