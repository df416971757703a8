// Attention of one decoded token on a CPU adapter (lavapipe, SwiftShader), over one split of the
// context. lib/decode_attention.wgsl (prepended) holds the parameters, bindings, the RoPE and
// KV-cache prologue and what the partial results are; lib/attend.wgsl (prepended, with WG and
// DIMS_PER_THREAD) walks the split's positions a tile at a time with the hooks below. The earlier
// 64-thread kernel cost lavapipe ~10× its loads (barriers between its 8 SIMD groups).

// The new position's key and value come from workgroup memory: the cache writes are not read back.
fn key_dot(j: u32, head: u32) -> f32 {
    var dot_qk = 0.0;
    if j == p.pos {
        for (var c = 0u; c < p.hd; c++) {
            dot_qk += qs[c] * ks[c];
        }
    } else {
        let kb = j * p.d + head;
        for (var c = 0u; c < p.hd; c++) {
            dot_qk += qs[c] * k_cache[kb + c];
        }
    }
    return dot_qk;
}

fn add_value(j: u32, prob: f32, lid: u32, head: u32) {
    if j == p.pos {
        for (var r = 0u; r < DIMS_PER_THREAD; r++) {
            acc[r] += prob * vs[value_dim(lid, r)];
        }
    } else {
        let vb = j * p.d + head;
        for (var r = 0u; r < DIMS_PER_THREAD; r++) {
            acc[r] += prob * v_cache[vb + value_dim(lid, r)];
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let split = wg.y;
    let head = h * p.hd;
    // Only the last split holds the new position.
    load_head(lid, WG, head, split + 1u == p.splits);
    let begin = split * p.chunk;
    let ml = attend(lid, head, begin, min(begin + p.chunk, p.pos + 1u));
    let at = h * p.splits + split;
    if lid == 0u {
        out[at * 2u] = ml.x;
        out[at * 2u + 1u] = ml.y;
    }
    let acc_base = (p.d / p.hd) * p.splits * 2u;
    for (var r = 0u; r < DIMS_PER_THREAD; r++) {
        let c = lid + r * WG;
        if c < p.hd {
            out[acc_base + at * p.hd + c] = acc[r];
        }
    }
}
