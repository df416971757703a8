// Sums a buffer without writing it back: `bench` times it to measure how fast the adapter streams
// reads alone, as a decode step reads its weights. Each thread's sum is stored only so the loads
// cannot be optimised away.

struct Params {
    quads: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> sums: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let stride = nw.x * 256u;
    var sum = vec4<f32>(0.0);
    for (var i = gid.x; i < p.quads; i += stride) {
        sum += src[i];
    }
    if gid.x < p.quads {
        sums[gid.x] = sum;
    }
}
