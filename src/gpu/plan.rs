//! The buffer plan: what a model takes on the device, and its upload (weights in the chosen
//! dtype, activations, KV caches, bind groups), fed tensor by tensor from a weights stream or
//! from a model in memory.

use std::collections::HashMap;
use std::sync::Arc;

use super::context::{f32_bytes, ParamPages};
use super::decode::{self, DecodeKernels};
use super::scores::{DecodeShape, CPU_MAX_ROWS, GPU_MAX_ROWS};
use super::weights::{chunk_rows, row_bytes, Matrix, Store};
use super::{attention, decode_attention, rope, KvDtype};
use super::{Buffers, Dtype, GpuBackend, GpuContext, GpuOptions, Kernels, LayerBinds, LayerWeights, PREFILL_CHUNK};
use crate::config::ModelConfig;
use crate::cpu::kernels::rope_inv_freq;
use crate::error::{Error, Result};
use crate::model::{Converter, Projection, TensorPlan};
use crate::weights::stream::{TensorInfo, TensorSink};
use crate::weights::TensorRole;

/// Bytes written through the queue between flushes (which release the staging memory).
const FLUSH_BYTES: usize = 64 << 20;

impl GpuBackend {
    /// Uploads the tensors `feed` sends (a model in memory or a file's stream), one at a time,
    /// converted to the options' dtypes (a tensor already stored so passes as it is).
    pub(super) async fn load(
        ctx: Arc<GpuContext>,
        cfg: ModelConfig,
        vocab: usize,
        options: &GpuOptions,
        feed: impl FnOnce(&mut dyn TensorSink) -> Result<()>,
    ) -> Result<GpuBackend> {
        let loader = GpuLoader::new(ctx, cfg.clone(), vocab, options).await?;
        let mut converter = Converter::new(cfg, vocab, options.dtype, options.embedding, loader);
        feed(&mut converter)?;
        converter.finish()?.finish().await
    }
}

/// Uploads a model as its tensors arrive, in the dtypes a [`Converter`] in front announces (the
/// options'). The kernels are compiled and the weight matrices created from the config first;
/// embedding and key rows are written as they come, and quantized values (already Vᵀ); a float
/// value tensor, stored transposed, is gathered whole (one tensor, never the model) and then
/// written. [`GpuLoader::finish`] builds the rest.
pub struct GpuLoader {
    ctx: Arc<GpuContext>,
    cfg: ModelConfig,
    vocab: usize,
    dtype: Dtype,
    embedding_dtype: Dtype,
    kv: KvDtype,
    embedding: Matrix,
    layers: Vec<LayerWeights>,
    final_norm: [Vec<f32>; 2],
    plan: Option<TensorPlan>,
    /// Value tensors being gathered, by tensor index.
    gathering: HashMap<usize, Vec<f32>>,
    unflushed: usize,
    /// Catches running out of device memory anywhere in the upload.
    scope: Option<wgpu::ErrorScopeGuard>,
    shape: DecodeShape,
    kernels: Kernels,
    /// None when the model does not fit the decode path's kernels.
    decode_kernels: Option<DecodeKernels>,
}

/// Each block's matrices as (name, rows, cols, groups), in the order of [`LayerWeights`]. Values
/// are stored transposed: row c of Vᵀ is every parameter token's value for output dim c.
fn block_matrices(cfg: &ModelConfig) -> [(&'static str, usize, usize, usize); 6] {
    let (d, q, p, f) = (cfg.hidden_size, cfg.qkv_slots, cfg.proj_slots, cfg.ffn_slots);
    [
        ("qkv keys", 3 * q, d, 1),
        ("qkv values", 3 * d, q, 3),
        ("proj keys", p, d, 1),
        ("proj values", d, p, 1),
        ("ffn keys", f, d, 1),
        ("ffn values", d, f, 1),
    ]
}

impl GpuLoader {
    /// Checks that a model of `cfg` fits the device's bindings, compiles its kernels and creates
    /// its weight matrices.
    pub async fn new(
        ctx: Arc<GpuContext>,
        mut cfg: ModelConfig,
        vocab: usize,
        options: &GpuOptions,
    ) -> Result<GpuLoader> {
        if let Some(context) = options.context {
            if context == 0 {
                return Err(Error::Usage("a context of 0 positions holds no token".into()));
            }
            cfg.max_positions = cfg.max_positions.min(context);
        }
        let embedding_dtype = options.embedding.unwrap_or(options.dtype.default_embedding());
        let kv = options.kv_cache.unwrap_or(KvDtype::default_for(options.dtype, cfg.head_dim()));
        if kv == KvDtype::F16 && cfg.head_dim() % 2 == 1 {
            return Err(Error::Gpu(format!(
                "an f16 KV cache holds two dims of a head per word: head dim {} is odd; use an f32 cache",
                cfg.head_dim()
            )));
        }
        if let Some(budget) = options.memory_budget {
            let needs = DeviceMemory::of(&cfg, vocab, options.dtype, embedding_dtype, kv);
            if needs.total() > budget {
                return Err(Error::Gpu(format!(
                    "this model needs {needs} on the device, more than its {:.1} MB budget; {}",
                    budget as f64 / 1e6,
                    DeviceMemory::alternatives(&cfg, vocab, options.dtype, budget)
                )));
            }
        }
        let d = cfg.hidden_size;
        let hd = cfg.head_dim();
        if hd > attention::MAX_HEAD_DIM {
            return Err(Error::Gpu(format!(
                "head dim {hd} exceeds the attention kernel's {}",
                attention::MAX_HEAD_DIM
            )));
        }
        if cfg.num_heads > decode_attention::SPLIT_WEIGHTS {
            return Err(Error::Gpu(format!(
                "{} attention heads exceed the decode kernels' {}",
                cfg.num_heads,
                decode_attention::SPLIT_WEIGHTS
            )));
        }
        let t = PREFILL_CHUNK as u64;
        let widest = widest_scores(&cfg);
        let vf = vocab as u64 * 4;
        let cache_bytes = layer_cache_bytes(&cfg, kv);
        // Activations and caches are bound whole; weights are the only tensors split into chunks.
        for (what, bytes) in [("Pattention scores", t * widest * 4), ("logits", t * vf), ("KV cache", cache_bytes)] {
            if bytes > ctx.max_binding_bytes() {
                return Err(Error::Gpu(format!(
                    "the {what} buffer needs {bytes} bytes, more than the device binds ({})",
                    ctx.max_binding_bytes()
                )));
            }
        }
        // A CPU adapter runs workgroups one after another and pays for every barrier.
        let cpu_adapter = ctx.info.device_type == wgpu::DeviceType::Cpu;
        let min_workgroups = options.min_workgroups.unwrap_or(if cpu_adapter { 1 } else { super::MIN_WORKGROUPS });
        let gpu_shapes = options.gpu_shapes.unwrap_or(!cpu_adapter);
        let subgroup_lanes = match (options.subgroups, ctx.subgroup_lanes()) {
            (Some(true), None) => {
                return Err(Error::Gpu(format!("the adapter {} has no subgroup operations", ctx.adapter_name())))
            }
            (Some(false), _) => None,
            (_, lanes) => lanes,
        };
        let dtype = options.dtype;
        let max_rows = if gpu_shapes { GPU_MAX_ROWS } else { CPU_MAX_ROWS };
        let shape = DecodeShape { dtype, min_workgroups, subgroup_lanes, max_rows };
        let store =
            Store { dtype, max_chunk_bytes: options.max_chunk_bytes.unwrap_or(u64::MAX).min(ctx.max_binding_bytes()) };
        // The decode kernels bind each block matrix whole.
        let whole =
            block_matrices(&cfg).iter().all(|&(_, rows, cols, groups)| chunk_rows(rows, cols, groups, store) >= rows);
        // Compiled before any weight exists, and awaited: a CPU adapter's compiler (SwiftShader in a
        // browser) holds hundreds of MB while it works, which then never adds to the weights'.
        let (kernels, decode_kernels) = ctx
            .refusals("the model's kernels", || {
                let decode = if whole { DecodeKernels::new(&ctx, &cfg, shape, embedding_dtype, kv) } else { None };
                (Kernels::new(&ctx, &cfg, dtype, embedding_dtype, kv, gpu_shapes), decode)
            })
            .await?;
        let scope = Some(ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory));
        let c = &*ctx;
        let embedding = Matrix::create(c, "embedding", vocab, d, 1, Store { dtype: embedding_dtype, ..store })?;
        let layers = (0..cfg.num_layers)
            .map(|l| {
                let [qkv_keys, qkv_values, proj_keys, proj_values, ffn_keys, ffn_values] =
                    block_matrices(&cfg).map(|(name, rows, cols, groups)| {
                        Matrix::create(c, &format!("{name} {l}"), rows, cols, groups, store)
                    });
                Ok(LayerWeights {
                    qkv_keys: qkv_keys?,
                    qkv_values: qkv_values?,
                    proj_keys: proj_keys?,
                    proj_values: proj_values?,
                    ffn_keys: ffn_keys?,
                    ffn_values: ffn_values?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuLoader {
            ctx,
            cfg,
            vocab,
            dtype,
            embedding_dtype,
            kv,
            embedding,
            layers,
            final_norm: [Vec::new(), Vec::new()],
            plan: None,
            gathering: HashMap::new(),
            unflushed: 0,
            scope,
            shape,
            kernels,
            decode_kernels,
        })
    }

    /// How the matrices are stored.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The matrix a parameter-token tensor goes to, and its first row there (q, k and v share
    /// one matrix each for keys and values).
    fn target(&self, layer: usize, proj: Projection, values: bool) -> (&Matrix, usize) {
        let w = &self.layers[layer];
        let d = self.cfg.hidden_size;
        let stacked = |i: usize| if values { i * d } else { i * self.cfg.qkv_slots };
        match (proj, values) {
            (Projection::Query, false) => (&w.qkv_keys, 0),
            (Projection::Key, false) => (&w.qkv_keys, stacked(1)),
            (Projection::Value, false) => (&w.qkv_keys, stacked(2)),
            (Projection::Query, true) => (&w.qkv_values, 0),
            (Projection::Key, true) => (&w.qkv_values, stacked(1)),
            (Projection::Value, true) => (&w.qkv_values, stacked(2)),
            (Projection::Proj, false) => (&w.proj_keys, 0),
            (Projection::Proj, true) => (&w.proj_values, 0),
            (Projection::Ffn, false) => (&w.ffn_keys, 0),
            (Projection::Ffn, true) => (&w.ffn_values, 0),
        }
    }

    fn written(&mut self, bytes: usize) -> Result<()> {
        self.unflushed += bytes;
        if self.unflushed >= FLUSH_BYTES {
            self.unflushed = 0;
            self.ctx.flush_writes()?;
        }
        Ok(())
    }

    /// Builds activations, caches and bind groups once every weight has arrived.
    pub async fn finish(mut self) -> Result<GpuBackend> {
        if self.plan.is_none() || !self.gathering.is_empty() || self.final_norm[1].len() != self.cfg.hidden_size {
            return Err(Error::Usage("the GPU upload ended before every tensor arrived".into()));
        }
        self.ctx.flush_writes()?;
        let scope = self.scope.take();
        let needs = DeviceMemory::of(&self.cfg, self.vocab, self.dtype, self.embedding_dtype, self.kv);
        let hint = match self.dtype {
            Dtype::F32 => "; f16 weights (dtype f16) take half, q4 a sixth",
            Dtype::F16 | Dtype::Q8 => "; q4 weights (dtype q4) take less",
            Dtype::Q4 => "",
        };
        let ctx = self.ctx.clone();
        let backend = ctx.refusals("the model's buffers and bind groups", move || self.build()).await;
        if let Some(e) = match scope {
            Some(scope) => scope.pop().await,
            None => None,
        } {
            return Err(Error::Gpu(format!("the device ran out of memory ({e}): this model needs {needs}{hint}")));
        }
        backend?
    }

    fn build(self) -> Result<GpuBackend> {
        let GpuLoader {
            ctx,
            cfg,
            vocab,
            dtype,
            embedding_dtype,
            kv,
            embedding,
            layers: layer_weights,
            final_norm,
            shape,
            kernels,
            decode_kernels,
            ..
        } = self;
        let d = cfg.hidden_size;
        let t = PREFILL_CHUNK as u64;
        let widest = widest_scores(&cfg);
        let (df, vf) = (d as u64 * 4, vocab as u64 * 4);
        let cache_bytes = layer_cache_bytes(&cfg, kv);
        let c = &*ctx;
        let weight_bytes = DeviceMemory::of(&cfg, vocab, dtype, embedding_dtype, kv).weights;

        use wgpu::BufferUsages as U;
        let buffers = Buffers {
            ids: c.storage("ids", t * 4),
            x: c.storage("x", t * df),
            a: c.storage("a", t * df),
            scores: c.storage("scores", t * widest * 4),
            qkv: c.storage("qkv", t * 3 * df),
            q: c.storage("q", t * df),
            o: c.storage("o", t * df),
            h: c.storage("h", t * df),
            logits: c.storage("logits", t * vf),
            logits_read: c.buffer("logits read", t * vf, U::MAP_READ | U::COPY_DST),
            token: c.storage("token", 4),
            token_read: [0, 1].map(|_| c.buffer("token read", 4, U::MAP_READ | U::COPY_DST)),
        };
        let table = rope::rope_table(cfg.max_positions, &rope_inv_freq(cfg.rotary_dims(), cfg.rotary_base));
        let rope_table = c.storage_init("rope", &f32_bytes(&table));
        let final_w = c.storage_init("final norm weight", &f32_bytes(&final_norm[0]));
        let final_b = c.storage_init("final norm bias", &f32_bytes(&final_norm[1]));

        let b = &buffers;
        let k = &kernels;
        // Bind groups hold their buffers: the weights need no other owner.
        let mut layers = Vec::with_capacity(cfg.num_layers);
        let caches: Vec<[wgpu::Buffer; 2]> = (0..cfg.num_layers)
            .map(|_| [c.storage("k cache", cache_bytes), c.storage("v cache", cache_bytes)])
            .collect();
        for (w, [kc, vc]) in layer_weights.iter().zip(&caches) {
            layers.push(LayerBinds {
                k_cache: kc.clone(),
                qkv_scores: k.linear.bind(c, &w.qkv_keys, &b.a, &b.scores),
                qkv_values: k.linear.bind(c, &w.qkv_values, &b.scores, &b.qkv),
                rope: k.rope.bind(c, &b.qkv, &rope_table, &b.q, kc, vc),
                attention: k.attention.bind(c, &b.q, kc, vc, &b.o),
                proj_scores: k.linear.bind(c, &w.proj_keys, &b.o, &b.scores),
                proj_values: k.linear.bind(c, &w.proj_values, &b.scores, &b.x),
                ffn_scores: k.linear.bind(c, &w.ffn_keys, &b.a, &b.scores),
                ffn_values: k.linear.bind(c, &w.ffn_values, &b.scores, &b.x),
            });
        }
        let shared = decode::Shared {
            ids: &b.ids,
            scores: &b.scores,
            logits: &b.logits,
            final_norm: [&final_w, &final_b],
            rope_table: &rope_table,
            caches: caches.iter().map(|[kc, vc]| [kc, vc]).collect(),
        };
        let decode =
            decode_kernels.map(|dk| decode::Decode::new(c, &cfg, dk, &k.embed, &embedding, &layer_weights, &shared));
        let backend = GpuBackend {
            embed: k.embed.bind(c, &b.ids, &embedding, &b.x),
            norm: k.norm.bind(c, &b.x, &final_w, &final_b, &b.a),
            final_norm: k.norm.bind(c, &b.x, &final_w, &final_b, &b.h),
            pnorm: k.pnorm.bind(c, &b.scores),
            head: k.linear.bind(c, &embedding, &b.h, &b.logits),
            decode,
            sampler: k.sampler.bind(c, &b.logits, vocab, &b.token),
            layers,
            params: ParamPages::default(),
            len: 0,
            last: (Vec::new(), 0),
            encode_ns: 0,
            ahead: None,
            weight_bytes,
            kernel_shapes: format!(
                "{} kernels, decode products of at least {} workgroup(s) of up to {} rows summing through {}",
                if shape.for_gpu() { "GPU" } else { "CPU-adapter" },
                shape.min_workgroups,
                shape.max_rows,
                shape.subgroup_lanes.map_or("workgroup memory".into(), |n| format!("subgroups of {n}"))
            ),
            inspector: None,
            timer: None,
            buffers,
            kernels,
            cfg,
            vocab,
            dtype,
            kv,
            ctx,
        };
        Ok(backend)
    }
}

impl TensorSink for GpuLoader {
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
        self.plan = Some(TensorPlan::new(&self.cfg, self.vocab, tensors)?);
        Ok(())
    }

    fn rows(&mut self, index: usize, row0: usize, values: &[f32]) -> Result<()> {
        let Some(plan) = &self.plan else { return Err(Error::Usage("rows before the tensor list".into())) };
        let role = plan.roles[index];
        let d = self.cfg.hidden_size;
        match role {
            TensorRole::Embedding => {
                // Rows past the vocabulary are padding no token reaches.
                let rows = (values.len() / d).min(self.vocab.saturating_sub(row0));
                self.embedding.write_rows(&self.ctx, row0, &values[..rows * d])?;
            }
            TensorRole::ParamTokens { layer, proj, values: false } => {
                let (matrix, first) = self.target(layer, proj, false);
                matrix.write_rows(&self.ctx, first + row0, values)?;
            }
            TensorRole::ParamTokens { layer, proj, values: true } => {
                let n = proj.slots(&self.cfg);
                let gathered = self.gathering.entry(index).or_default();
                gathered.extend_from_slice(values);
                if gathered.len() < n * d {
                    return Ok(());
                }
                let v = self.gathering.remove(&index).unwrap_or_default();
                let (matrix, first) = self.target(layer, proj, true);
                // Row c of Vᵀ, a block of rows at a time.
                let block_rows = ((1 << 18) / n).max(1);
                let mut block = Vec::with_capacity(block_rows * n);
                for c0 in (0..d).step_by(block_rows) {
                    block.clear();
                    for c in c0..(c0 + block_rows).min(d) {
                        block.extend((0..n).map(|j| v[j * d + c]));
                    }
                    matrix.write_rows(&self.ctx, first + c0, &block)?;
                }
            }
            TensorRole::FinalNormWeight => self.final_norm[0].extend_from_slice(values),
            TensorRole::FinalNormBias => self.final_norm[1].extend_from_slice(values),
        }
        self.written(values.len() * 4)
    }

    fn blocks(&mut self, index: usize, row0: usize, blocks: &[u8]) -> Result<()> {
        let Some(plan) = &self.plan else { return Err(Error::Usage("rows before the tensor list".into())) };
        let d = self.cfg.hidden_size;
        match plan.roles[index] {
            TensorRole::Embedding => {
                // Rows past the vocabulary are padding no token reaches.
                let row_bytes = self.embedding_dtype.row_bytes(d);
                let rows = (blocks.len() / row_bytes).min(self.vocab.saturating_sub(row0));
                self.embedding.write_blocks(&self.ctx, row0, &blocks[..rows * row_bytes])?;
            }
            // Quantized values arrive as Vᵀ, the layout they are stored in.
            TensorRole::ParamTokens { layer, proj, values } => {
                let (matrix, first) = self.target(layer, proj, values);
                matrix.write_blocks(&self.ctx, first + row0, blocks)?;
            }
            TensorRole::FinalNormWeight | TensorRole::FinalNormBias => {
                return Err(Error::Usage("the final norm arrived quantized".into()))
            }
        }
        self.written(blocks.len())
    }
}

/// What a model takes on the device, for the error that says it does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    pub weights: u64,
    pub kv_cache: u64,
    pub activations: u64,
}

/// Bytes of one layer's cached keys (or values) at every position.
fn layer_cache_bytes(cfg: &ModelConfig, kv: KvDtype) -> u64 {
    cfg.max_positions as u64 * cfg.hidden_size as u64 * kv.bytes() as u64
}

/// The widest row of Pattention scores: q|k|v's, the projection's or the FFN's slots.
fn widest_scores(cfg: &ModelConfig) -> u64 {
    (3 * cfg.qkv_slots).max(cfg.proj_slots).max(cfg.ffn_slots) as u64
}

impl DeviceMemory {
    /// A model of `cfg` whose parameter tokens are stored in `dtype`, embedding in `embedding` and
    /// KV cache in `kv`.
    pub fn of(cfg: &ModelConfig, vocab: usize, dtype: Dtype, embedding: Dtype, kv: KvDtype) -> DeviceMemory {
        let (t, d, v) = (PREFILL_CHUNK as u64, cfg.hidden_size as u64, vocab as u64);
        let widest = widest_scores(cfg);
        let matrices: usize = block_matrices(cfg).iter().map(|&(_, rows, cols, _)| rows * row_bytes(cols, dtype)).sum();
        DeviceMemory {
            // Every weight is read for each token; the head reads the vocabulary's rows.
            weights: (cfg.num_layers * matrices + vocab * row_bytes(cfg.hidden_size, embedding)) as u64,
            kv_cache: 2 * cfg.num_layers as u64 * layer_cache_bytes(cfg, kv),
            // Residual, norm, q, o, head input (d each), q|k|v (3d), scores, logits and their read-back.
            activations: t * (8 * d + widest + 2 * v) * 4,
        }
    }

    /// [`DeviceMemory::of`] with the embedding and the KV cache as `dtype`'s defaults.
    pub fn planned(cfg: &ModelConfig, vocab: usize, dtype: Dtype) -> DeviceMemory {
        let kv = KvDtype::default_for(dtype, cfg.head_dim());
        DeviceMemory::of(cfg, vocab, dtype, dtype.default_embedding(), kv)
    }

    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations
    }

    /// What would fit `budget` instead: smaller weights, a shorter context, or neither.
    pub fn alternatives(cfg: &ModelConfig, vocab: usize, dtype: Dtype, budget: u64) -> String {
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        let with = |dtype: Dtype, context: usize| {
            let cfg = ModelConfig { max_positions: cfg.max_positions.min(context), ..cfg.clone() };
            DeviceMemory::planned(&cfg, vocab, dtype).total()
        };
        let mut fits = Vec::new();
        let smaller = Dtype::ALL.iter().skip_while(|&&d| d != dtype).copied();
        for d in smaller {
            if let Some(&context) =
                [cfg.max_positions, 1024, 512, 256].iter().find(|&&c| c <= cfg.max_positions && with(d, c) <= budget)
            {
                fits.push(format!(
                    "{} weights with a {context}-position context ({})",
                    d.as_str(),
                    mb(with(d, context))
                ));
            }
        }
        fits.dedup();
        match fits.first() {
            Some(_) => format!("would fit: {}", fits.join(", or ")),
            None => format!(
                "even q4 weights with a 256-position context need {}: a smaller model would fit",
                mb(with(Dtype::Q4, 256))
            ),
        }
    }
}

impl std::fmt::Display for DeviceMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: u64| b as f64 / 1e6;
        write!(
            f,
            "about {:.1} MB ({:.1} MB of weights, {:.1} MB of KV cache, {:.1} MB of activations)",
            mb(self.total()),
            mb(self.weights),
            mb(self.kv_cache),
            mb(self.activations)
        )
    }
}
