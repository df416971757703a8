// Shared by sampler_chunks.wgsl, sampler.wgsl and sampler_walk.wgsl, which bind the same buffers:
// the parameter block, the bindings, and the sampler's order of ids.

struct Params {
    vocab: u32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    penalty: f32,
    seed: u32,
    step: u32,
    // Ids per workgroup of sampler_chunks.wgsl: CHUNK, or the whole vocabulary in one.
    chunk: u32,
    chunks: u32,
    // Candidates each chunk of CHUNK ids lists for the merge: top_k when top-k sampling keeps fewer
    // ids than a chunk holds, else 0 (every id is a candidate).
    per_chunk: u32,
    // sampler_walk.wgsl only: what a dispatch does (STAGE_*), for which walk (WALK_*), and which
    // of a walk's digit passes it is.
    stage: u32,
    walk: u32,
    pass_index: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
// Bit id % 32 of word id / 32 is set when id is in the context (prompt and generated so far): the
// repetition penalty applies to it, once however often it occurs.
@group(0) @binding(1) var<storage, read_write> penalised: array<u32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> token: array<u32>;
// Each chunk's candidates (per_chunk ids in the sampler's order; u32::MAX past the vocabulary).
@group(0) @binding(4) var<storage, read_write> candidates: array<u32>;
// Each chunk's largest logit (as bits) and its lowest id.
@group(0) @binding(5) var<storage, read_write> chunk_max: array<vec2<u32>>;

// The chunk a workgroup of sampler_chunks.wgsl can sort.
const CHUNK: u32 = 1024u;

// Ascending in the sampler's order: larger logits first, f32::total_cmp semantics (+0 before -0).
fn order_key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    let ascending = select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
    return ~ascending;
}

// The logit whose order_key is `key`.
fn order_value(key: u32) -> f32 {
    return bitcast<f32>(select(key, ~key & 0x7FFFFFFFu, (~key & 0x80000000u) != 0u));
}

// How many of `ties` elements of key `key`, added one at a time in id order as the CPU adds them,
// take the running weight from `before` to `goal` (past it when strict); all of them if rounding
// leaves it short. They weigh the same, so the count is one division: adding thousands of them
// one by one in f32 would drift from the CPU's f64 sum by several elements.
fn tie_rank(ties: u32, key: u32, before: f32, goal: f32, strict: bool, use_probs: bool, l_max: f32) -> u32 {
    if ties == 0u {
        return 0u;
    }
    var w = 1.0;
    if use_probs {
        w = exp((order_value(key) - l_max) / p.temperature);
    }
    let x = (goal - before) / w;
    // The first whole count past x (strict) or at it; all of them when x is not a number.
    let j = select(ceil(x), floor(x) + 1.0, strict);
    if !(j < f32(ties)) {
        return ties;
    }
    return u32(max(j, 1.0));
}

// Whether the largest logit leaves probabilities to sample (else the argmax is the pick): not ∞,
// NaN, or −∞ (every logit −∞).
fn samples_from(l_max: f32) -> bool {
    return p.temperature > 0.0 && (bitcast<u32>(l_max) & 0x7F800000u) != 0x7F800000u;
}

// Writes the pick, and adds it to the penalised ids, so a step submitted ahead on the device
// penalises it.
fn choose(id: u32) {
    token[0] = id;
    if p.penalty != 1.0 {
        penalised[id / 32u] |= 1u << (id % 32u);
    }
}

fn pcg_hash(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// uniform(seed, step) of src/sampling.rs: 24 random bits in [0, 1).
fn uniform_draw(seed: u32, step: u32) -> f32 {
    return f32(pcg_hash(pcg_hash(seed) ^ step) >> 8u) / 16777216.0;
}

// Whether (v, i) replaces (best, best_i) as the argmax: larger, or equal with a lower id (the CPU
// keeps the first of equal values), or the first value at all. An id of u32::MAX is none.
fn beats(v: f32, i: u32, best: f32, best_i: u32) -> bool {
    return i != 0xFFFFFFFFu && (best_i == 0xFFFFFFFFu || v > best || (v == best && i < best_i));
}

var<workgroup> arg_v: array<f32, 256>;
var<workgroup> arg_i: array<u32, 256>;

// The argmax of every thread's (best, best_i) over a workgroup of `size` (a power of two up to
// 256) threads, as a tree; returned to every thread.
fn workgroup_argmax(best: f32, best_i: u32, lid: u32, size: u32) -> vec2<u32> {
    arg_v[lid] = best;
    arg_i[lid] = best_i;
    workgroupBarrier();
    for (var s = size / 2u; s > 0u; s >>= 1u) {
        if lid < s && beats(arg_v[lid + s], arg_i[lid + s], arg_v[lid], arg_i[lid]) {
            arg_v[lid] = arg_v[lid + s];
            arg_i[lid] = arg_i[lid + s];
        }
        workgroupBarrier();
    }
    return vec2<u32>(bitcast<u32>(workgroupUniformLoad(&arg_v[0])), workgroupUniformLoad(&arg_i[0]));
}

// The largest logit (as bits) and its lowest id, from the chunks' maxima, returned to every
// thread of a workgroup of `size`.
fn argmax_of_chunks(lid: u32, size: u32) -> vec2<u32> {
    var best = bitcast<f32>(chunk_max[0].x);
    var best_i = chunk_max[0].y;
    for (var c = lid; c < p.chunks; c += size) {
        let v = bitcast<f32>(chunk_max[c].x);
        if beats(v, chunk_max[c].y, best, best_i) {
            best = v;
            best_i = chunk_max[c].y;
        }
    }
    return workgroup_argmax(best, best_i, lid, size);
}
