// Matrix products for prefill on a GPU, c[m, j] (+)= a[m, :] · w[j, :], in tiles of 32 tokens × 64
// weight rows per 128-thread workgroup: each step stages 32 columns of both in workgroup memory
// with coalesced loads (neighbouring threads read neighbouring quads of a row), transposed so the
// inner loop reads a quad of tokens and a quad of weight rows per column and does 16 multiply-adds
// into each thread's 4 × 4 outputs. matmul.wgsl, the register-blocked kernel without barriers, is
// what CPU adapters (lavapipe, SwiftShader) run. linear_common.wgsl supplies Params, bindings 0 and
// 2, and a4().

const TM: u32 = 32u; // tokens per tile
const TN: u32 = 64u; // weight rows per tile
const KQ: u32 = 8u; // quads of the shared dimension per step
const KO: u32 = KQ / 2u; // octets
const THREADS: u32 = 128u;

// Column k of the step (0..4 * KQ) holds the tile's tokens (rows) as TM / 4 (TN / 4) quads.
var<workgroup> a_tile: array<vec4<f32>, 256>; // 4 * KQ * TM / 4
var<workgroup> w_tile: array<vec4<f32>, 512>; // 4 * KQ * TN / 4

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wg.z;
    let j0 = wg.x * TN;
    let m0 = wg.y * TM;
    // This thread's outputs: tokens 4 * tm.., weight rows 4 * tn.. of the tile.
    let tm = lid / 16u;
    let tn = lid % 16u;
    // Four named accumulators, not an array: an array indexed by a loop variable (as the stores
    // below would) can make a compiler keep it in memory, costing a round trip per multiply-add.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let k_quads = 2u * p.k_octets;
    for (var q0 = 0u; q0 < k_quads; q0 += KQ) {
        // Tokens and rows past the edges repeat the last valid one (loads stay in bounds, their
        // results are not stored); quads past the row are zero.
        for (var e = lid; e < TM * KQ; e += THREADS) {
            let r = e / KQ;
            let q = q0 + e % KQ;
            var v = vec4<f32>(0.0);
            if q < k_quads {
                v = a4(min(m0 + r, p.m - 1u) * p.lda + p.a_off + g * p.a_group_stride, q * 4u);
            }
            for (var i = 0u; i < 4u; i++) {
                a_tile[(e % KQ * 4u + i) * (TM / 4u) + r / 4u][r % 4u] = v[i];
            }
        }
        for (var e = lid; e < TN * KO; e += THREADS) {
            let r = e / KO;
            let o = q0 / 2u + e % KO;
            var v = mat2x4<f32>();
            if o < p.k_octets {
                v = wo(row_start(g * p.n + min(j0 + r, p.n - 1u), p.k_octets), o);
            }
            for (var i = 0u; i < 8u; i++) {
                w_tile[(e % KO * 8u + i) * (TN / 4u) + r / 4u][r % 4u] = v[i / 4u][i % 4u];
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < 4u * KQ; k++) {
            let av = a_tile[k * (TM / 4u) + tm];
            let wv = w_tile[k * (TN / 4u) + tn];
            acc0 += av.x * wv;
            acc1 += av.y * wv;
            acc2 += av.z * wv;
            acc3 += av.w * wv;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + 4u * tm + i;
        let row = select(select(acc3, acc2, i == 2u), select(acc1, acc0, i == 0u), i < 2u);
        for (var col = 0u; col < 4u; col++) {
            let j = j0 + 4u * tn + col;
            if m < p.m && j < p.n {
                let ci = m * p.ldc + p.c_col + g * p.c_group_stride + j;
                if p.accumulate != 0u {
                    c[ci] += row[col];
                } else {
                    c[ci] = row[col];
                }
            }
        }
    }
}
