// reduce_rows() through workgroup memory alone, for adapters without subgroups (every browser).
// Sums the tpr lanes of every group of rows: group r's totals are left in red[r * tpr]. Each step adds up to 16
// lanes at once (stride apart, so neighbouring threads read neighbouring words), which takes one or
// two barriers instead of a binary tree's eight: barriers are what software Vulkan pays most for.
fn reduce_rows(v: vec4<f32>, lid: u32, tpr: u32) {
    red[lid] = v;
    workgroupBarrier();
    let lane = lid % tpr;
    for (var s = tpr; s > 1u; s /= 16u) {
        let stride = max(s / 16u, 1u);
        if lane < stride {
            var sum = red[lid];
            for (var m = 1u; m < s / stride; m++) {
                sum += red[lid + m * stride];
            }
            red[lid] = sum;
        }
        workgroupBarrier();
    }
}
