// Shared by sampler_chunks.wgsl and sampler.wgsl, which bind the same buffers: the parameter
// block, the bindings, and the sampler's order of ids.

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
