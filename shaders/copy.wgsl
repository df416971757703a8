// Plain copy, used by `bench` to measure the adapter's memory bandwidth with the same kind of
// storage-buffer accesses the model's kernels make.

struct Params {
    quads: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let stride = nw.x * 256u;
    for (var i = gid.x; i < p.quads; i += stride) {
        dst[i] = src[i];
    }
}
