// Attention of one decoded token on a CPU adapter (lavapipe, SwiftShader). lib/decode_attention.wgsl
// (prepended) holds the parameters, bindings, the RoPE and KV-cache prologue and what the partial
// results are. A workgroup is WG threads: lavapipe runs a workgroup's SIMD groups of 8 lanes as
// coroutines switched at every barrier, which made the earlier 64-thread kernel cost ~10× its
// loads. Each pass scores a tile of positions, a thread per position, then every thread adds the
// tile's values into its DIMS_PER_THREAD dims (prepended by decode_attention.rs).

const WG: u32 = 8u;
const TILE: u32 = 64u;
var<workgroup> scores: array<f32, TILE>;
var<workgroup> probs: array<f32, TILE>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let split = wg.y;
    let head = h * p.hd;
    // Only the last split holds the new position.
    load_head(lid, WG, head, split + 1u == p.splits);
    let begin = split * p.chunk;
    let end = min(begin + p.chunk, p.pos + 1u);
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var j0 = begin; j0 < end; j0 += TILE) {
        let tile = min(TILE, end - j0);
        for (var t = lid; t < tile; t += WG) {
            let j = j0 + t;
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
            scores[t] = dot_qk * p.scale;
        }
        workgroupBarrier();
        var m_new = m;
        for (var t = 0u; t < tile; t++) {
            m_new = max(m_new, scores[t]);
        }
        for (var t = lid; t < tile; t += WG) {
            probs[t] = exp(scores[t] - m_new);
        }
        workgroupBarrier();
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var r = 0u; r < DIMS_PER_THREAD; r++) {
            acc[r] *= alpha;
        }
        for (var t = 0u; t < tile; t++) {
            let pt = probs[t];
            l += pt;
            let j = j0 + t;
            let vb = j * p.d + head;
            // The new position's v from workgroup memory: the cache write is not read back. Dims
            // past the head's (in the last r) add a clamped element and are never stored: a
            // branch around the load costs lavapipe 2.5× the whole kernel.
            if j == p.pos {
                for (var r = 0u; r < DIMS_PER_THREAD; r++) {
                    acc[r] += pt * vs[min(lid + r * WG, p.hd - 1u)];
                }
            } else {
                for (var r = 0u; r < DIMS_PER_THREAD; r++) {
                    acc[r] += pt * v_cache[vb + min(lid + r * WG, p.hd - 1u)];
                }
            }
        }
        m = m_new;
        // The next pass overwrites scores and probs.
        workgroupBarrier();
    }
    let at = h * p.splits + split;
    if lid == 0u {
        out[at * 2u] = m;
        out[at * 2u + 1u] = l;
    }
    let acc_base = (p.d / p.hd) * p.splits * 2u;
    for (var r = 0u; r < DIMS_PER_THREAD; r++) {
        let c = lid + r * WG;
        if c < p.hd {
            out[acc_base + at * p.hd + c] = acc[r];
        }
    }
}
