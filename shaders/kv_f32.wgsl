// The KV cache in f32: a word is one value (KV_ELEMS 1), a quad four. Kernels declare the caches as
// arrays of KvWord or KvQuad and read element i as kv_elems(cache[i / KV_ELEMS])[i % KV_ELEMS].
alias KvWord = f32;
alias KvQuad = vec4<f32>;
const KV_ELEMS: u32 = 1u;

// The values of a word (.x; .y unused).
fn kv_elems(w: KvWord) -> vec2<f32> {
    return vec2<f32>(w, 0.0);
}

// The word holding v.x (v.y is not stored).
fn kv_word(v: vec2<f32>) -> KvWord {
    return v.x;
}

fn kv_quad(w: KvQuad) -> vec4<f32> {
    return w;
}

fn kv_make_quad(v: vec4<f32>) -> KvQuad {
    return v;
}
