// Shared by decode_attention.wgsl (CPU adapters) and decode_attention_lanes.wgsl (GPUs), which
// leave the same partial results: attention of one decoded token (flash-decoding), workgroup
// (h, split) covering positions split * chunk .. of head h with an online softmax and writing its
// running max, sum and weighted value sum; the kernel after it (scores.wgsl, mode 2) combines the
// splits. RoPE and the KV-cache append are folded in (load_head()): q, k and v arrive as the partial
// rows the qkv values kernel left, the workgroups rotate q, and the one whose split holds the new
// position rotates k, appends k and v to the caches (append_kv(), supplied by the kernel, which
// declares the caches: as floats on GPUs, as quads on CPU adapters) and uses them from workgroup
// memory.
// cos/sin come from a table computed on the CPU in f64: table[pos * half + j] = (cos, sin).

struct Params {
    pos: u32,
    d: u32,
    hd: u32,
    half: u32,
    splits: u32,
    chunk: u32,
    qkv_parts: u32,
    stride: u32,
    scale: f32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Head dims up to 256 (checked on the CPU when the backend is built).
const MAX_HD: u32 = 256u;
// Unrotated q (0..256) and k (256..512) of this head.
var<workgroup> raw: array<f32, 512>;
// This head's rotated q, and in the last split its rotated k and its v.
var<workgroup> qs: array<f32, MAX_HD>;
var<workgroup> ks: array<f32, MAX_HD>;
var<workgroup> vs: array<f32, MAX_HD>;

// Element c of q (which 0), k (1) or v (2): the sum of the qkv kernel's split partials.
fn part_sum(which: u32, c: u32) -> f32 {
    var x = 0.0;
    for (var s = 0u; s < p.qkv_parts; s++) {
        x += qkv[(s * 3u + which) * p.stride + c];
    }
    return x;
}

// GPT-NeoX "rotate half" of dim i of the head stored at raw[base..].
fn rotated(base: u32, i: u32) -> f32 {
    let x = raw[base + i];
    if i >= 2u * p.half {
        return x;
    }
    let cs = table[p.pos * p.half + i % p.half];
    if i < p.half {
        return x * cs.x - raw[base + i + p.half] * cs.y;
    }
    return x * cs.x + raw[base + i - p.half] * cs.y;
}

// Fills qs (and, where `last`, ks and vs, appending k and v to the caches) for the head starting at
// dim `head`, `threads` being the workgroup's size; every thread of the workgroup calls it.
fn load_head(lid: u32, threads: u32, head: u32, last: bool) {
    for (var c = lid; c < p.hd; c += threads) {
        raw[c] = part_sum(0u, head + c);
        if last {
            raw[MAX_HD + c] = part_sum(1u, head + c);
            vs[c] = part_sum(2u, head + c);
        }
    }
    workgroupBarrier();
    for (var c = lid; c < p.hd; c += threads) {
        qs[c] = rotated(0u, c);
        if last {
            ks[c] = rotated(MAX_HD, c);
        }
    }
    workgroupBarrier();
    if last {
        append_kv(lid, threads, p.pos * p.d + head);
    }
}
