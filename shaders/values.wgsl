// The second half of a fused Pattention for one decoded token: Theta · V over one split of the
// slots, for the rows of one workgroup. The prologue reduces the statistics the scores kernel left
// per workgroup (scores.wgsl) and turns this split's scores into Theta in workgroup memory, so
// Theta is never written out:
//   norm 0: l2_norm_gelu, Theta = gelu(s * sqrt(n) / ||s||);
//   norm 1: gelu_l2_norm, Theta = g * sqrt(n) / ||g|| (the scores kernel stored g = gelu(s));
//   norm 2: softmax, Theta = n * exp(s - max) / Σ exp(s - max).
// Values are stored transposed (row c of Vᵀ: every slot's value for output dim c), so each output
// is a row dot like the scores. Splits write separate partial rows, `stride` floats apart:
// out[(split * groups + g) * stride + c]; the next kernel adds them (scores.wgsl, attention). With
// residual_parts > 0, split 0 also adds the residual stream (those partial rows of `residual`), so
// the output partials sum to the new residual stream.
// The dtype supplies binding 1 (its prelude) and dot_8_rows() (weights_q4_rows.wgsl or
// lib/rows_each.wgsl); lib/rows.wgsl, lib/gelu.wgsl and lib/block_input*.wgsl are prepended too
// (decode_source in src/gpu/scores.rs).
// Splits are whole blocks (split_octets a multiple of BLOCK_OCTETS).

struct Params {
    n: u32,
    k_octets: u32,
    d_out: u32,
    rows: u32,
    split_octets: u32,
    stat_blocks: u32,
    norm: u32,
    residual_parts: u32,
    stride: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;

// Slots per split up to 4 * 512.
var<workgroup> theta: array<vec4<f32>, 512>;

// Quad q of Theta (lib/block_input*.wgsl).
fn input_quad(q: u32) -> vec4<f32> {
    return theta[q];
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wg.z;
    let split = wg.y;
    let softmax = p.norm == 2u;
    var st = stat_identity(softmax);
    for (var b = lid; b < p.stat_blocks; b += WG) {
        st = stat_combine(st, stats[g * p.stat_blocks + b], softmax);
    }
    stat_red[lid] = st;
    reduce_stats(lid, WG, softmax);
    let total = stat_red[0];
    let n = f32(p.n);
    // No epsilon, as in the authors' code; a zero row (0/0 there) becomes an all-zero Theta, like
    // the CPU reference.
    let norm = sqrt(total.x);
    let scale = select(0.0, sqrt(n) / norm, norm > 0.0);
    let o0 = split * p.split_octets;
    let len = min(p.split_octets, p.k_octets - o0);
    // Whole quads, slots past n clamped and zeroed after: a branch around each load, or a vector
    // element written at a loop index, costs software Vulkan more than the arithmetic around it.
    let last = vec4<u32>(p.n - 1u);
    for (var q = lid; q < 2u * len; q += WG) {
        let slot = 4u * (2u * o0 + q) + vec4<u32>(0u, 1u, 2u, 3u);
        let at = g * p.n + min(slot, last);
        var v = vec4<f32>(scores[at.x], scores[at.y], scores[at.z], scores[at.w]);
        if p.norm == 0u {
            v *= scale;
            v = vec4<f32>(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));
        } else if p.norm == 1u {
            v *= scale;
        } else {
            v = exp(v - total.x) * (n / total.y);
        }
        theta[q] = select(vec4<f32>(0.0), v, slot < vec4<u32>(p.n));
    }
    workgroupBarrier();
    let tpr = WG * 8u / p.rows;
    let j0 = wg.x * p.rows + lid / tpr * 8u;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    let r = row_starts(g * p.d_out, j0, p.d_out, p.k_octets);
    for (var b = lid % tpr; b < len / BLOCK_OCTETS; b += tpr) {
        let a = block_input(b, lid);
        dot_8_rows(r, o0 / BLOCK_OCTETS + b, a, &lo, &hi);
    }
    reduce_8_rows(lo, hi, lid, tpr, p.rows);
    for (var i = lid; i < p.rows; i += WG) {
        let row = wg.x * p.rows + i;
        if row < p.d_out {
            var v = row_total[i];
            if split == 0u {
                for (var s = 0u; s < p.residual_parts; s++) {
                    v += residual[s * p.stride + row];
                }
            }
            out[(split * groups.z + g) * p.stride + row] = v;
        }
    }
}
