// Appended to every dtype prelude (weights_f32.wgsl, weights_f16.wgsl, weights_q8.wgsl,
// weights_q4.wgsl), whose wo(start, o) reads octet o of the row at start (see row_start).

// An octet of activations · an octet of weights, each as two quads.
fn octet_dot(a: mat2x4<f32>, w: mat2x4<f32>) -> f32 {
    return dot(a[0], w[0]) + dot(a[1], w[1]);
}

// Weight octet o of the row at `start` · the activation octet (a0, a1). Not
// octet_dot(mat2x4(a0, a1), wo(start, o)): lavapipe runs the value products markedly slower that
// way (docs/performance.md).
fn wo_dot(start: u32, o: u32, a0: vec4<f32>, a1: vec4<f32>) -> f32 {
    let w = wo(start, o);
    return dot(w[0], a0) + dot(w[1], a1);
}
