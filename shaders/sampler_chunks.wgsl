// The sampler's first pass, over many workgroups (sampler.wgsl finishes in one): workgroup c takes
// the ids of chunk c, [c * chunk, (c + 1) * chunk). It applies the repetition penalty to them in
// place, leaves their largest logit (lowest id among equals) in chunk_max, and, for top-k sampling
// that keeps fewer ids than a chunk holds (per_chunk > 0, chunks of CHUNK ids), sorts the chunk in
// the sampler's order (logit descending, id ascending) and lists its first top_k ids: the global
// top_k are among those lists. On a CPU adapter, which pays for every barrier, one workgroup takes
// the whole vocabulary and sorts nothing. lib/sampling.wgsl is prepended.

const WG: u32 = 256u;
var<workgroup> keys: array<u32, 1024>;
var<workgroup> ids: array<u32, 1024>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = wg.x * p.chunk;
    // From none (u32::MAX), which the first value replaces: thread 0 of chunk 0 meets id 0 first,
    // as the CPU does (a NaN there wins), after the penalty has been applied to it.
    var best = 0.0;
    var best_i = 0xFFFFFFFFu;
    for (var j = lid; j < p.chunk; j += WG) {
        let i = base + j;
        if i < p.vocab {
            var v = logits[i];
            if p.penalty != 1.0 && (penalised[i / 32u] & (1u << (i % 32u))) != 0u {
                v = select(v * p.penalty, v / p.penalty, v > 0.0);
                logits[i] = v;
            }
            if beats(v, i, best, best_i) {
                best = v;
                best_i = i;
            }
        }
    }
    let chunk_best = workgroup_argmax(best, best_i, lid, WG);
    if lid == 0u {
        chunk_max[wg.x] = chunk_best;
    }
    if p.per_chunk == 0u {
        return;
    }
    // Each thread reads back the (penalised) logits it wrote.
    for (var j = lid; j < CHUNK; j += WG) {
        let i = base + j;
        keys[j] = select(0xFFFFFFFFu, order_key(logits[min(i, p.vocab - 1u)]), i < p.vocab);
        ids[j] = select(0xFFFFFFFFu, i, i < p.vocab);
    }
    workgroupBarrier();
    // Bitonic sort of (key, id), ascending; each thread compares CHUNK / 2 / WG pairs per stage.
    for (var k = 2u; k <= CHUNK; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            for (var t = lid; t < CHUNK / 2u; t += WG) {
                let a = 2u * t - (t & (j - 1u));
                let b = a + j;
                let a_after_b = keys[a] > keys[b] || (keys[a] == keys[b] && ids[a] > ids[b]);
                if a_after_b == ((a & k) == 0u) {
                    let key = keys[a];
                    keys[a] = keys[b];
                    keys[b] = key;
                    let id = ids[a];
                    ids[a] = ids[b];
                    ids[b] = id;
                }
            }
            workgroupBarrier();
        }
    }
    for (var j = lid; j < p.per_chunk; j += WG) {
        candidates[wg.x * p.per_chunk + j] = ids[j];
    }
}
