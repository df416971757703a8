// reduce_rows() through subgroup shuffles, for adapters with subgroups (natively: Vulkan, Metal,
// DX12; wgpu does not expose them in browsers). The Rust side prepends SUBGROUP_LANES, the
// adapter's smallest subgroup size. It relies on lanes lid and lid ^ o (o < SUBGROUP_LANES)
// sharing a subgroup, i.e. a 1-D workgroup cut into subgroups in order of local_invocation_index,
// as drivers do; subgroup_probe.wgsl checks it before a device uses this file.
// Same contract as the workgroup-memory version: group r's totals are left in red[r * tpr].
fn reduce_rows(v: vec4<f32>, lid: u32, tpr: u32) {
    let lanes = min(tpr, SUBGROUP_LANES);
    var sum = v;
    for (var o = 1u; o < lanes; o *= 2u) {
        sum += subgroupShuffleXor(sum, o);
    }
    if lid % lanes == 0u {
        red[lid] = sum;
    }
    workgroupBarrier();
    // A group wider than a subgroup adds its subgroups' sums.
    if tpr > lanes {
        if lid % tpr == 0u {
            for (var s = lanes; s < tpr; s += lanes) {
                sum += red[lid + s];
            }
            red[lid] = sum;
        }
        workgroupBarrier();
    }
}
