// Attention of one decoded token on a CPU adapter (lavapipe, SwiftShader): a thread per position
// and a serial pass over each chunk, which runs there about twice as fast as
// decode_attention_lanes.wgsl, the GPUs' kernel. lib/decode_attention.wgsl (prepended) holds the
// parameters, bindings, the RoPE and KV-cache prologue and what the partial results are.

const WG: u32 = 64u;
// Head dims up to 4 * WG = 256.
const DIMS_PER_THREAD: u32 = 4u;
var<workgroup> scores: array<f32, 64>;
var<workgroup> probs: array<f32, 64>;

@compute @workgroup_size(64)
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
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var j0 = begin; j0 < end; j0 += WG) {
        let tile = min(WG, end - j0);
        let j = j0 + lid;
        var s = -3.0e38;
        if lid < tile {
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
            s = dot_qk * p.scale;
        }
        scores[lid] = s;
        workgroupBarrier();
        var m_new = m;
        for (var i = 0u; i < tile; i++) {
            m_new = max(m_new, scores[i]);
        }
        probs[lid] = select(0.0, exp(s - m_new), lid < tile);
        workgroupBarrier();
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var r = 0u; r < DIMS_PER_THREAD; r++) {
            acc[r] *= alpha;
        }
        for (var i = 0u; i < tile; i++) {
            let pi = probs[i];
            l += pi;
            let jj = j0 + i;
            let vb = jj * p.d + head;
            for (var r = 0u; r < DIMS_PER_THREAD; r++) {
                let c = lid + r * WG;
                if c < p.hd {
                    // The new position's v from workgroup memory: the cache write is not read back.
                    if jj == p.pos {
                        acc[r] += pi * vs[c];
                    } else {
                        acc[r] += pi * v_cache[vb + c];
                    }
                }
            }
        }
        m = m_new;
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
