// The exact (erf) GELU. WGSL has no erf: erf_approx is Abramowitz & Stegun 7.1.26, whose absolute
// error is at most 1.5e-7, so gelu(x) is off by at most 0.75e-7 * |x| plus f32 rounding.

fn erf_approx(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    let y = 1.0 - poly * exp(-ax * ax);
    return select(y, -y, x < 0.0);
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}
