// Matrix products for prefill: the same addressing as matvec.wgsl. Each thread computes an 8 x 4
// block of c (8 tokens, 4 weight rows) straight from storage, with no workgroup memory or
// barriers: every weight quad loaded serves 8 tokens and every activation quad 4 weight rows.
// (Software Vulkan such as lavapipe pays dearly for barriers; GPUs serve the reuse from cache.)

struct Params {
    m: u32,
    k: u32,
    k_quads: u32,
    n: u32,
    lda: u32,
    ldc: u32,
    a_off: u32,
    a_group_stride: u32,
    c_col: u32,
    c_group_stride: u32,
    accumulate: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

const RM: u32 = 8u;
const CN: u32 = 4u;

fn a4(base: u32, k0: u32) -> vec4<f32> {
    if k0 + 4u <= p.k {
        return vec4<f32>(a[base + k0], a[base + k0 + 1u], a[base + k0 + 2u], a[base + k0 + 3u]);
    }
    // The zero-padded tail of the weight row meets activations that belong to something else.
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if k0 + i < p.k {
            v[i] = a[base + k0 + i];
        }
    }
    return v;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.z;
    let j0 = gid.x * CN;
    let m0 = gid.y * RM;
    if j0 >= p.n || m0 >= p.m {
        return;
    }
    // Rows past the edges repeat the last valid one (loads stay in bounds) and are not stored.
    var w_row: array<u32, 4>;
    for (var cc = 0u; cc < CN; cc++) {
        w_row[cc] = (g * p.n + min(j0 + cc, p.n - 1u)) * p.k_quads;
    }
    var a_row: array<u32, 8>;
    for (var r = 0u; r < RM; r++) {
        a_row[r] = min(m0 + r, p.m - 1u) * p.lda + p.a_off + g * p.a_group_stride;
    }
    var acc: array<vec4<f32>, 8>;
    for (var q = 0u; q < p.k_quads; q++) {
        let w0 = wq(w_row[0] + q);
        let w1 = wq(w_row[1] + q);
        let w2 = wq(w_row[2] + q);
        let w3 = wq(w_row[3] + q);
        for (var r = 0u; r < RM; r++) {
            let av = a4(a_row[r], q * 4u);
            acc[r] += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3));
        }
    }
    for (var r = 0u; r < RM; r++) {
        let m = m0 + r;
        for (var cc = 0u; cc < CN; cc++) {
            let j = j0 + cc;
            if m < p.m && j < p.n {
                let ci = m * p.ldc + p.c_col + g * p.c_group_stride + j;
                if p.accumulate != 0u {
                    c[ci] += acc[r][cc];
                } else {
                    c[ci] = acc[r][cc];
                }
            }
        }
    }
}
