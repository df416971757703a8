// Matrix products for prefill: the same addressing as matvec.wgsl. Each thread computes an 8 x 8
// block of c (8 tokens, 8 weight rows) straight from storage, with no workgroup memory or
// barriers: every weight octet loaded serves 8 tokens and every activation octet 8 weight rows.
// (Software Vulkan such as lavapipe pays dearly for barriers; GPUs serve the reuse from cache.)
// linear_common.wgsl supplies Params, bindings 0 and 2, and a4(); the dtype prelude row_start(), wo() and
// octet_dot().

const RM: u32 = 8u;
const CN: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.z;
    let j0 = gid.x * CN;
    let m0 = gid.y * RM;
    if j0 >= p.n || m0 >= p.m {
        return;
    }
    // Rows past the edges repeat the last valid one (loads stay in bounds) and are not stored.
    var w_row: array<u32, 8>;
    for (var cc = 0u; cc < CN; cc++) {
        w_row[cc] = row_start(g * p.n + min(j0 + cc, p.n - 1u), p.k_octets);
    }
    var a_row: array<u32, 8>;
    for (var r = 0u; r < RM; r++) {
        a_row[r] = min(m0 + r, p.m - 1u) * p.lda + p.a_off + g * p.a_group_stride;
    }
    // acc[r] holds weight rows 0..4 of token r, acc[8 + r] rows 4..8.
    var acc: array<vec4<f32>, 16>;
    for (var o = 0u; o < p.k_octets; o++) {
        let w0 = wo(w_row[0], o);
        let w1 = wo(w_row[1], o);
        let w2 = wo(w_row[2], o);
        let w3 = wo(w_row[3], o);
        let w4 = wo(w_row[4], o);
        let w5 = wo(w_row[5], o);
        let w6 = wo(w_row[6], o);
        let w7 = wo(w_row[7], o);
        for (var r = 0u; r < RM; r++) {
            let a = mat2x4<f32>(a4(a_row[r], o * 8u), a4(a_row[r], o * 8u + 4u));
            acc[r] += vec4<f32>(octet_dot(a, w0), octet_dot(a, w1), octet_dot(a, w2), octet_dot(a, w3));
            acc[8u + r] += vec4<f32>(octet_dot(a, w4), octet_dot(a, w5), octet_dot(a, w6), octet_dot(a, w7));
        }
    }
    for (var r = 0u; r < RM; r++) {
        let m = m0 + r;
        for (var cc = 0u; cc < CN; cc++) {
            let j = j0 + cc;
            if m < p.m && j < p.n {
                let ci = m * p.ldc + p.c_col + g * p.c_group_stride + j;
                let v = acc[r + 8u * (cc / 4u)][cc % 4u];
                if p.accumulate != 0u {
                    c[ci] += v;
                } else {
                    c[ci] = v;
                }
            }
        }
    }
}
