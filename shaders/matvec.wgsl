// Matrix-vector products for decoding: c[m, col] (+)= sum_k a[m, k] * w[row, k] over the weight rows
// of one chunk. Rows are split into groups (q, k, v stacked); group g reads its activations at
// a_off + g * a_group_stride and writes columns c_col + g * c_group_stride + j.
// A dtype prelude (weights_f32.wgsl, weights_f16.wgsl, weights_q8.wgsl or weights_q4.wgsl)
// supplies binding 1, row_start() and wo_dot();
// linear_common.wgsl supplies Params, bindings 0 and 2, and a4().

// 16 threads share each group of 4 weight rows, reading neighbouring octets along k; each thread
// keeps 4 rows' sums, so one activation octet serves 4 weight octets (loads are what software
// Vulkan such as lavapipe pays for). A workgroup covers 64 weight rows.
const TPR: u32 = 16u;
const RPT: u32 = 4u;
const ROWS: u32 = 64u;
var<workgroup> partial: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TPR;
    let j0 = wg.x * ROWS + (lid / TPR) * RPT;
    let m = wg.y;
    let g = wg.z;
    let a_base = m * p.lda + p.a_off + g * p.a_group_stride;
    var acc = vec4<f32>(0.0);
    if j0 < p.n {
        // Rows past n repeat the last one (loads stay in bounds); their sums are not stored.
        let r0 = row_start(g * p.n + j0, p.k_octets);
        let r1 = row_start(g * p.n + min(j0 + 1u, p.n - 1u), p.k_octets);
        let r2 = row_start(g * p.n + min(j0 + 2u, p.n - 1u), p.k_octets);
        let r3 = row_start(g * p.n + min(j0 + 3u, p.n - 1u), p.k_octets);
        for (var o = lane; o < p.k_octets; o += TPR) {
            let a0 = a4(a_base, o * 8u);
            let a1 = a4(a_base, o * 8u + 4u);
            acc += vec4<f32>(wo_dot(r0, o, a0, a1), wo_dot(r1, o, a0, a1), wo_dot(r2, o, a0, a1), wo_dot(r3, o, a0, a1));
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    // Thread i < 64 finishes row j0 + i % 4 of its group of 16 threads.
    if lid < ROWS {
        let slot = lid / RPT;
        let r = lid % RPT;
        let j = wg.x * ROWS + lid;
        if j < p.n {
            var s = 0.0;
            for (var i = 0u; i < TPR; i++) {
                s += partial[slot * TPR + i][r];
            }
            let ci = m * p.ldc + p.c_col + g * p.c_group_stride + j;
            if p.accumulate != 0u {
                c[ci] += s;
            } else {
                c[ci] = s;
            }
        }
    }
}
