// The input block b of the decode products' loops (lib/rows.wgsl), from the kernel's input_quad(),
// where every thread of a subgroup reads the same block (a CPU adapter's own shape: a thread per 8
// whole rows) and subgroups have at least BLOCK_QUADS lanes: lane i loads quad i and the lanes
// share theirs through shuffles. lavapipe runs each load as a loop over the lanes and a shuffle as
// one register move, so this is one workgroup-memory load per block instead of BLOCK_QUADS. Lanes
// are laid out in order of local_invocation_index (subgroup_probe.wgsl checks it).
fn block_input(b: u32, lid: u32) -> array<vec4<f32>, BLOCK_QUADS> {
    let mine = input_quad(BLOCK_QUADS * b + lid % BLOCK_QUADS);
    var a: array<vec4<f32>, BLOCK_QUADS>;
    for (var i = 0u; i < BLOCK_QUADS; i++) {
        a[i] = subgroupShuffle(mine, i);
    }
    return a;
}
