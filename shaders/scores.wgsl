// The first half of a fused Pattention for one decoded token (and the head's logits):
// out[out_offset + g * n + j] = act · w[g * n + j] for the rows j of one workgroup, where act, the
// input row, is built in workgroup memory by the prologue (mode):
//   0: layer norm (no weight or bias) of the residual stream, the sum of `parts` partial rows
//      (values.wgsl splits its sums; the split partials are added here instead of in a dispatch);
//   1: the same with the final norm's weight and bias;
//   2: attention's output, combined from its `parts` splits per head (decode_attention.wgsl).
// The epilogue writes this workgroup's share of the statistics Theta = f(S) needs, which
// values.wgsl reduces and applies while it loads the scores (stat):
//   0: none (the head); 1: Σ s² (l2_norm_gelu); 2: s := gelu(s), Σ gelu(s)² (gelu_l2_norm);
//   3: (max s, Σ exp(s - max)) (softmax).
// The dtype supplies binding 1 (its prelude) and dot_8_rows() (weights_q4_rows.wgsl or
// lib/rows_each.wgsl); lib/rows.wgsl, lib/gelu.wgsl and lib/block_input*.wgsl are prepended too
// (decode_source in src/gpu/scores.rs).

struct Params {
    mode: u32,
    d: u32,
    k_octets: u32,
    n: u32,
    parts: u32,
    hd: u32,
    rows: u32,
    stat: u32,
    out_offset: u32,
    eps: f32,
}

@group(1) @binding(0) var<uniform> p: Params;
// Read as quads (its buffers hold whole quads): one load instead of four, and lavapipe runs every
// load as a loop over its 8 lanes.
@group(0) @binding(0) var<storage, read> input: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> norm_weight: array<f32>;
@group(0) @binding(5) var<storage, read> norm_bias: array<f32>;

// Hidden sizes up to 4 * 512 (checked when the backend is built).
var<workgroup> act: array<vec4<f32>, 512>;

// Attention's splits (decode_attention.wgsl) weighted per (head, split): exp(the split's max - the
// head's max) / the head's weighted sum, so each output element is one weighted sum over the
// splits. decode_attention.rs keeps heads × splits within SPLIT_WEIGHTS.
const SPLIT_WEIGHTS: u32 = 256u;
var<workgroup> split_weight: array<f32, SPLIT_WEIGHTS>;

fn input_at(i: u32) -> f32 {
    return input[i / 4u][i % 4u];
}

fn weigh_splits(lid: u32) {
    for (var h = lid; h < p.d / p.hd; h += WG) {
        let first = h * p.parts;
        var m = -3.0e38;
        for (var s = 0u; s < p.parts; s++) {
            m = max(m, input_at((first + s) * 2u));
        }
        var l = 0.0;
        for (var s = 0u; s < p.parts; s++) {
            let w = exp(input_at((first + s) * 2u) - m);
            split_weight[first + s] = w;
            l += input_at((first + s) * 2u + 1u) * w;
        }
        for (var s = 0u; s < p.parts; s++) {
            split_weight[first + s] /= l;
        }
    }
    workgroupBarrier();
}

// Element c of attention's output.
fn attention_output(c: u32) -> f32 {
    let first = c / p.hd * p.parts;
    let acc_base = (p.d / p.hd) * p.parts * 2u;
    var o = 0.0;
    for (var s = 0u; s < p.parts; s++) {
        o += input_at(acc_base + (first + s) * p.hd + c % p.hd) * split_weight[first + s];
    }
    return o;
}

// Branches on p.mode outside the loops: software Vulkan runs both sides of a branch that differs
// between lanes, and attention_output() is costly.
fn load_input(lid: u32) {
    let valid = vec4<u32>(0u, 1u, 2u, 3u);
    // The weight rows' quads (the input is zero past d), and the partial rows' stride (d in octets).
    let k_quads = 2u * p.k_octets;
    let row_quads = (p.d + 7u) / 8u * 2u;
    if p.mode == 2u {
        // Attention's output goes into the product as it is.
        weigh_splits(lid);
        let last = vec4<u32>(p.d - 1u);
        for (var q = lid; q < k_quads; q += WG) {
            let c = min(4u * q + valid, last);
            let v = vec4<f32>(attention_output(c.x), attention_output(c.y), attention_output(c.z), attention_output(c.w));
            act[q] = select(vec4<f32>(0.0), v, 4u * q + valid < vec4<u32>(p.d));
        }
        return;
    }
    // The residual stream: the sum of its partial rows, d rounded up to octets apart (a quantized
    // matrix's rows may be longer: the quads past d are zero).
    var sum = 0.0;
    for (var q = lid; q < k_quads; q += WG) {
        var v = vec4<f32>(0.0);
        for (var s = 0u; s < p.parts; s++) {
            v += input[s * row_quads + min(q, row_quads - 1u)];
        }
        v = select(vec4<f32>(0.0), v, 4u * q + valid < vec4<u32>(p.d));
        act[q] = v;
        sum += v.x + v.y + v.z + v.w;
    }
    let mean = workgroup_sum(sum, lid) / f32(p.d);
    var var_sum = 0.0;
    for (var q = lid; q < k_quads; q += WG) {
        let e = select(vec4<f32>(0.0), act[q] - mean, 4u * q + valid < vec4<u32>(p.d));
        var_sum += dot(e, e);
    }
    let inv_std = inverseSqrt(workgroup_sum(var_sum, lid) / f32(p.d) + p.eps);
    for (var q = lid; q < k_quads; q += WG) {
        let inside = 4u * q + valid < vec4<u32>(p.d);
        var v = (act[q] - mean) * inv_std;
        if p.mode == 1u {
            let c = min(4u * q + valid, vec4<u32>(p.d - 1u));
            let weight = vec4<f32>(norm_weight[c.x], norm_weight[c.y], norm_weight[c.z], norm_weight[c.w]);
            let bias = vec4<f32>(norm_bias[c.x], norm_bias[c.y], norm_bias[c.z], norm_bias[c.w]);
            v = v * weight + bias;
        }
        act[q] = select(vec4<f32>(0.0), v, inside);
    }
}

// Stores the score of row `row` of group g (gelu'd for stat 2) and returns its statistic; rows
// past n return the identity.
fn store_row(g: u32, row: u32, total: f32) -> vec2<f32> {
    let softmax = p.stat == 3u;
    var st = stat_identity(softmax);
    if row >= p.n {
        return st;
    }
    var s = total;
    if p.stat == 1u {
        st = vec2<f32>(s * s, 0.0);
    } else if p.stat == 2u {
        s = gelu(s);
        st = vec2<f32>(s * s, 0.0);
    } else if softmax {
        st = vec2<f32>(s, 1.0);
    }
    out[p.out_offset + g * p.n + row] = s;
    return st;
}

// Quad q of the input row (lib/block_input*.wgsl).
fn input_quad(q: u32) -> vec4<f32> {
    return act[q];
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    load_input(lid);
    workgroupBarrier();
    let tpr = WG * 8u / p.rows;
    let j0 = wg.x * p.rows + lid / tpr * 8u;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    let k_blocks = p.k_octets / BLOCK_OCTETS;
    let r = row_starts(wg.y * p.n, j0, p.n, p.k_octets);
    for (var b = lid % tpr; b < k_blocks; b += tpr) {
        let a = block_input(b, lid);
        dot_8_rows(r, b, a, &lo, &hi);
    }
    reduce_8_rows(lo, hi, lid, tpr, p.rows);
    let g = wg.y;
    let softmax = p.stat == 3u;
    var st = stat_identity(softmax);
    for (var i = lid; i < p.rows; i += WG) {
        st = stat_combine(st, store_row(g, wg.x * p.rows + i, row_total[i]), softmax);
    }
    if p.stat != 0u {
        stat_red[lid] = st;
        reduce_stats(lid, min(p.rows, WG), softmax);
        if lid == 0u {
            stats[g * groups.x + wg.x] = stat_red[0];
        }
    }
}
