// Checks the lane layout lib/reduce_subgroup.wgsl relies on: in a 1-D workgroup of 256 threads,
// lane lid ^ o holds thread lid ^ o's value for every o below `lanes`. Thread lid writes 1 where
// that holds, 0 where it does not.

struct Params {
    lanes: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read_write> ok: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    var holds = 1u;
    for (var o = 1u; o < p.lanes; o *= 2u) {
        if subgroupShuffleXor(lid, o) != (lid ^ o) {
            holds = 0u;
        }
    }
    ok[lid] = holds;
}
