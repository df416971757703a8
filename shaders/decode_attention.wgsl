// Attention of one decoded token on a CPU adapter (lavapipe, SwiftShader), over one split of the
// context. lib/decode_attention.wgsl (prepended) holds the parameters, bindings, the RoPE and
// KV-cache prologue and what the partial results are; lib/attend.wgsl (prepended, with WG and
// DIMS_PER_THREAD) walks the split's positions a tile at a time with the hooks below. Its
// workgroups are one SIMD group of 8 threads: a wider one's SIMD groups are switched at every barrier.
// The caches are read a quad (4 dims) per load: software Vulkan runs each load as a loop over its
// lanes, paying more per load than per value, so a quad costs about half what 4 floats do. Head
// dims must be whole quads (decode_attention.rs gives other heads the GPU kernel); thread lid sums
// the head's quads lid + r * WG, 4 dims of acc each.

@group(0) @binding(2) var<storage, read_write> k_cache: array<KvQuad>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<KvQuad>;

// This head's rotated q as quads.
var<workgroup> q4: array<vec4<f32>, MAX_HD / 4>;

// Writes this head's k and v at `at` of the caches, a whole quad per thread (no two threads write
// parts of one quad).
fn append_kv(lid: u32, threads: u32, at: u32) {
    for (var q = lid; q < p.hd / 4u; q += threads) {
        let c = 4u * q;
        k_cache[at / 4u + q] = kv_make_quad(vec4<f32>(ks[c], ks[c + 1u], ks[c + 2u], ks[c + 3u]));
        v_cache[at / 4u + q] = kv_make_quad(vec4<f32>(vs[c], vs[c + 1u], vs[c + 2u], vs[c + 3u]));
    }
}

// This thread's quad r: the head's quad lid + r * WG, clamped (as value_dim() clamps dims).
fn value_quad(lid: u32, r: u32) -> u32 {
    return min(lid + r * WG, p.hd / 4u - 1u);
}

// The new position's key and value come from workgroup memory: the cache writes are not read back.
fn key_dot(j: u32, head: u32) -> f32 {
    var dot_qk = 0.0;
    if j == p.pos {
        for (var c = 0u; c < p.hd; c++) {
            dot_qk += qs[c] * ks[c];
        }
    } else {
        let kb = (j * p.d + head) / 4u;
        for (var c = 0u; c < p.hd / 4u; c++) {
            dot_qk += dot(q4[c], kv_quad(k_cache[kb + c]));
        }
    }
    return dot_qk;
}

fn add_value(j: u32, prob: f32, lid: u32, head: u32) {
    let vb = (j * p.d + head) / 4u;
    for (var r = 0u; r < DIMS_PER_THREAD / 4u; r++) {
        var v: vec4<f32>;
        if j == p.pos {
            let c = 4u * value_quad(lid, r);
            v = vec4<f32>(vs[c], vs[c + 1u], vs[c + 2u], vs[c + 3u]);
        } else {
            v = kv_quad(v_cache[vb + value_quad(lid, r)]);
        }
        acc[4u * r] += prob * v.x;
        acc[4u * r + 1u] += prob * v.y;
        acc[4u * r + 2u] += prob * v.z;
        acc[4u * r + 3u] += prob * v.w;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let split = wg.y;
    let head = h * p.hd;
    // Only the last split holds the new position.
    load_head(lid, WG, head, split + 1u == p.splits);
    for (var c = lid; c < p.hd / 4u; c += WG) {
        q4[c] = vec4<f32>(qs[4u * c], qs[4u * c + 1u], qs[4u * c + 2u], qs[4u * c + 3u]);
    }
    workgroupBarrier();
    let begin = split * p.chunk;
    let ml = attend(lid, head, begin, min(begin + p.chunk, p.pos + 1u));
    let at = h * p.splits + split;
    if lid == 0u {
        out[at * 2u] = ml.x;
        out[at * 2u + 1u] = ml.y;
    }
    let acc_base = (p.d / p.hd) * p.splits * 2u;
    for (var r = 0u; r < DIMS_PER_THREAD / 4u; r++) {
        let c = 4u * (lid + r * WG);
        if c < p.hd {
            for (var i = 0u; i < 4u; i++) {
                out[acc_base + at * p.hd + c + i] = acc[4u * r + i];
            }
        }
    }
}
