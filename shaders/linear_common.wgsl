// Shared by matvec.wgsl and matmul.wgsl (prepended with the dtype prelude): the parameter block,
// the activation and output bindings, and the masked load of an activation quad.

struct Params {
    m: u32,
    k: u32,
    k_quads: u32,
    n: u32,
    lda: u32,
    ldc: u32,
    a_off: u32,
    a_group_stride: u32,
    c_col: u32,
    c_group_stride: u32,
    accumulate: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

fn a4(base: u32, k0: u32) -> vec4<f32> {
    if k0 + 4u <= p.k {
        return vec4<f32>(a[base + k0], a[base + k0 + 1u], a[base + k0 + 2u], a[base + k0 + 3u]);
    }
    // The last quad of a row whose length is not a multiple of 4: the weights are zero-padded,
    // the activations past k belong to something else and are masked.
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if k0 + i < p.k {
            v[i] = a[base + k0 + i];
        }
    }
    return v;
}

