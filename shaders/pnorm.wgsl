// Pattention's normalisation Theta = f(S), in place, one workgroup per row of n scores. The whole row
// is reduced before anything is written, as f needs the row's norm (or max and sum).
// GELU is the exact erf form (lib/gelu.wgsl, prepended).

struct Params {
    n: u32,
    // 0: l2_norm_gelu, 1: gelu_l2_norm, 2: softmax
    mode: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read_write> s: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

fn sum_all(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
        if lid < st {
            red[lid] += red[lid + st];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

fn max_all(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
        if lid < st {
            red[lid] = max(red[lid], red[lid + st]);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = wg.x * p.n;
    let sqrt_n = sqrt(f32(p.n));
    if p.mode == 2u {
        var mx = -3.0e38;
        for (var i = lid; i < p.n; i += WG) {
            mx = max(mx, s[base + i]);
        }
        mx = max_all(mx, lid);
        var sum = 0.0;
        for (var i = lid; i < p.n; i += WG) {
            let e = exp(s[base + i] - mx);
            s[base + i] = e;
            sum += e;
        }
        let k = f32(p.n) / sum_all(sum, lid);
        for (var i = lid; i < p.n; i += WG) {
            s[base + i] *= k;
        }
        return;
    }
    // gelu_l2_norm applies GELU first (in place; each thread owns its elements).
    var ss = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        var v = s[base + i];
        if p.mode == 1u {
            v = gelu(v);
            s[base + i] = v;
        }
        ss += v * v;
    }
    let norm = sqrt(sum_all(ss, lid));
    // No epsilon, as in the authors' code; a zero row (0/0 there) becomes an all-zero Theta, like
    // the CPU reference.
    var scale = 0.0;
    if norm > 0.0 {
        scale = sqrt_n / norm;
    }
    for (var i = lid; i < p.n; i += WG) {
        let v = s[base + i];
        if p.mode == 0u {
            s[base + i] = select(0.0, gelu(v * scale), norm > 0.0);
        } else {
            s[base + i] = v * scale;
        }
    }
}
