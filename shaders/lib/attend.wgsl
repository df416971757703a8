// Attention of one query over positions begin..end of the head at dim `head`, with an online
// softmax (running max and sum), shared by attention.wgsl (prefill) and decode_attention.wgsl
// (decode on CPU adapters). The positions are taken TILE at a time: a thread per position scores
// the tile (key_dot(), supplied by the kernel, dots its query with key j), then every thread adds
// the tile's values into its DIMS_PER_THREAD dims (add_value(), supplied by the kernel). WG and
// DIMS_PER_THREAD are prepended by attention.rs: on lavapipe a workgroup's SIMD groups of 8 lanes
// are coroutines switched at every barrier, so CPU adapters run 8 threads.

const TILE: u32 = 64u;
var<workgroup> scores: array<f32, TILE>;
var<workgroup> probs: array<f32, TILE>;
// This thread's dims lid + r * WG of the probability-weighted value sum.
var<private> acc: array<f32, DIMS_PER_THREAD>;

// Leaves this thread's dims of the probability-weighted value sum in acc; returns (the running max,
// the sum of exp(score - max)).
fn attend(lid: u32, head: u32, begin: u32, end: u32) -> vec2<f32> {
    var m = -3.0e38;
    var l = 0.0;
    for (var j0 = begin; j0 < end; j0 += TILE) {
        let tile = min(TILE, end - j0);
        for (var t = lid; t < tile; t += WG) {
            scores[t] = key_dot(j0 + t, head) * p.scale;
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
            let prob = probs[t];
            l += prob;
            add_value(j0 + t, prob, lid, head);
        }
        m = m_new;
        // The next tile overwrites scores and probs.
        workgroupBarrier();
    }
    return vec2<f32>(m, l);
}

// Dim lid + r * WG of a head, clamped: dims past the head's (in the last r) add an element that is
// never stored, since a branch around each load costs lavapipe more than the whole sum.
fn value_dim(lid: u32, r: u32) -> u32 {
    return min(lid + r * WG, p.hd - 1u);
}
