// The KV cache in f16, two values a u32 (KV_ELEMS 2; packed and unpacked without shader-f16), half
// the memory of f32: a word is a pair of a head's dims (head dims are even), a quad two words.
// Kernels declare the caches as arrays of KvWord or KvQuad and read element i as
// kv_elems(cache[i / KV_ELEMS])[i % KV_ELEMS].
alias KvWord = u32;
alias KvQuad = vec2<u32>;
const KV_ELEMS: u32 = 2u;

fn kv_elems(w: KvWord) -> vec2<f32> {
    return unpack2x16float(w);
}

fn kv_word(v: vec2<f32>) -> KvWord {
    return pack2x16float(v);
}

fn kv_quad(w: KvQuad) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}

fn kv_make_quad(v: vec4<f32>) -> KvQuad {
    return vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
}
