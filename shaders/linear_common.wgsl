// Shared by matvec.wgsl and matmul.wgsl (prepended with the dtype prelude): the parameter block,
// the activation and output bindings, and the masked load of an activation quad.

struct Params {
    m: u32,
    k: u32,
    k_octets: u32,
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
// Read as quads (buffers hold whole quads): one load instead of four, and lavapipe runs every load
// as a loop over its 8 lanes.
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

fn a4(base: u32, k0: u32) -> vec4<f32> {
    let i = base + k0;
    if i % 4u == 0u && k0 + 4u <= p.k {
        return a[i / 4u];
    }
    // A row that does not start on a quad, or the last quad of a row whose length is not a
    // multiple of 4: the weights are zero-padded, the activations past k belong to something else
    // and are masked.
    let e = i + vec4<u32>(0u, 1u, 2u, 3u);
    let v = vec4<f32>(a[e.x / 4u][e.x % 4u], a[e.y / 4u][e.y % 4u], a[e.z / 4u][e.z % 4u], a[e.w / 4u][e.w % 4u]);
    return select(vec4<f32>(0.0), v, k0 + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.k));
}
