//! Parameter blocks: each op's uniform `Params` struct, declared once in Rust with the fields of
//! the WGSL struct it fills, in the same order ([`shader_params!`]); a test reads every shader's
//! struct and fails when the two drift apart.

/// A `#[repr(C)]` struct of 32-bit fields mirroring `struct Params` in a shader; what it mirrors
/// is known to the tests.
pub(crate) trait ShaderParams: bytemuck::NoUninit {
    /// The WGSL file that declares the struct.
    #[cfg(test)]
    const WGSL: &'static str;
    /// Its source.
    #[cfg(test)]
    const SOURCE: &'static str;
    /// The fields as (name, WGSL type), in order.
    #[cfg(test)]
    const FIELDS: &'static [(&'static str, &'static str)];
}

/// `shader_params!(Name for "file.wgsl" { field: u32, other: f32 })` declares the parameter block
/// of the `Params` struct in `shaders/file.wgsl`.
macro_rules! shader_params {
    ($(#[$doc:meta])* $name:ident for $wgsl:literal { $($field:ident: $ty:ident),* $(,)? }) => {
        $(#[$doc])*
        #[doc = concat!("Mirrors `struct Params` in `shaders/", $wgsl, "`.")]
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $(pub $field: $ty),*
        }

        impl $crate::gpu::params::ShaderParams for $name {
            #[cfg(test)]
            const WGSL: &'static str = $wgsl;
            #[cfg(test)]
            const SOURCE: &'static str = include_str!(concat!("../../shaders/", $wgsl));
            #[cfg(test)]
            const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($field), stringify!($ty))),*];
        }
    };
}
pub(crate) use shader_params;

#[cfg(test)]
mod tests {
    use super::ShaderParams;
    use crate::gpu::{
        attention, copy, decode_attention, embed, inspect, intervene, layer_norm, matmul, pnorm, rope, sampler, scores,
        subgroup_probe, values,
    };

    /// (name, type) of each field of `struct Params` in WGSL source, comments dropped.
    fn wgsl_fields(source: &str) -> Vec<(String, String)> {
        let start = source.find("struct Params {").expect("a struct Params") + "struct Params {".len();
        let body = &source[start..start + source[start..].find('}').expect("the struct's end")];
        body.lines()
            .map(|line| line.split("//").next().unwrap_or("").trim().trim_end_matches(','))
            .filter(|field| !field.is_empty())
            .map(|field| {
                let (name, ty) = field.split_once(':').expect("name: type");
                (name.trim().to_string(), ty.trim().to_string())
            })
            .collect()
    }

    fn check<P: ShaderParams>() {
        let rust: Vec<(String, String)> = P::FIELDS.iter().map(|&(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(rust, wgsl_fields(P::SOURCE), "the parameters of {} drifted from the Rust struct", P::WGSL);
        assert!(size_of::<P>() <= crate::gpu::context::PARAM_BLOCK as usize);
    }

    #[test]
    fn every_parameter_block_matches_its_shader() {
        check::<attention::AttentionParams>();
        check::<copy::CopyParams>();
        check::<copy::ReadParams>();
        check::<decode_attention::DecodeAttentionParams>();
        check::<embed::EmbedParams>();
        check::<inspect::ThetaTopKParams>();
        check::<inspect::ThetaSumsParams>();
        check::<inspect::AttentionProbsParams>();
        check::<inspect::LogSumExpParams>();
        check::<inspect::SearchParams>();
        check::<intervene::InterveneParams>();
        check::<layer_norm::LayerNormParams>();
        check::<matmul::LinearParams>();
        check::<pnorm::PNormParams>();
        check::<rope::RopeParams>();
        check::<sampler::SamplerParams>();
        check::<scores::ScoresParams>();
        check::<subgroup_probe::ProbeParams>();
        check::<values::ValuesParams>();
    }

    #[test]
    fn a_drifted_struct_is_caught() {
        let wgsl = "struct Params {\n    n: u32,\n    // why\n    mode: u32, // how\n    eps: f32,\n}";
        let fields = wgsl_fields(wgsl);
        assert_eq!(fields, [("n", "u32"), ("mode", "u32"), ("eps", "f32")].map(|(a, b)| (a.into(), b.into())));
        assert_ne!(fields, wgsl_fields(&wgsl.replace("eps: f32", "eps: u32")));
    }
}
