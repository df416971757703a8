// Rotary embedding and KV-cache append: q and k (from the fused qkv rows [q | k | v]) are rotated
// GPT-NeoX style ("rotate half") on the first 2 * half dims of every head at positions start + t;
// rotated q goes to q_out, rotated k and plain v to the caches at those positions. A thread takes
// one word of the caches (KV_ELEMS dims, from the cache prelude), so no two threads share a word.
// cos/sin come from a table computed on the CPU in f64: table[pos * half + j] = (cos, sin).

struct Params {
    t: u32,
    start: u32,
    d: u32,
    hd: u32,
    half: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<KvWord>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<KvWord>;

fn rotate(row: u32, c: u32, i: u32, pos: u32) -> f32 {
    let x = qkv[row + c];
    if i >= 2u * p.half {
        return x;
    }
    let cs = table[pos * p.half + i % p.half];
    if i < p.half {
        return x * cs.x - qkv[row + c + p.half] * cs.y;
    }
    return x * cs.x + qkv[row + c - p.half] * cs.y;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x * KV_ELEMS;
    let t = gid.y;
    if c >= p.d || t >= p.t {
        return;
    }
    let pos = p.start + t;
    let row = t * 3u * p.d;
    var k = vec2<f32>(0.0);
    var v = vec2<f32>(0.0);
    for (var e = 0u; e < KV_ELEMS; e++) {
        let i = (c + e) % p.hd;
        q_out[t * p.d + c + e] = rotate(row, c + e, i, pos);
        k[e] = rotate(row + p.d, c + e, i, pos);
        v[e] = qkv[row + 2u * p.d + c + e];
    }
    k_cache[(pos * p.d + c) / KV_ELEMS] = kv_word(k);
    v_cache[(pos * p.d + c) / KV_ELEMS] = kv_word(v);
}
