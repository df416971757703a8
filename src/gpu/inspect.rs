//! Inspection on the device: while an ordinary forward pass runs, Theta maps are copied out of the
//! scores buffer right after their normalisation (full maps), or reduced there to per-token top-k
//! and column sums (summaries), and the attention probabilities are recomputed from q and the key
//! cache. Only these results are read back; the kernels exist only once something is inspected.

use super::context::{
    bytes_to_f32, f32_bytes, groups_for, read_back, read_storage, u32_bytes, Access, Encoder, GpuContext, Kernel,
};
use super::kv_cache::KvDtype;
use super::matmul::LinearArgs;
use super::params::shader_params;
use super::weights::Dtype;
use super::{GpuBackend, PREFILL_CHUNK};
use crate::error::{Error, Result};
use crate::generation::check_ids;
use crate::inspect::{check_slot, AttentionCapture, Capture, InspectRequest, Inspection, ThetaSummary};
use crate::lens::{with_probabilities, LogitLens};
use crate::model::Projection;
use crate::search::{check_token, projection_offset, slots_per_layer};

shader_params!(ThetaTopKParams for "theta_top_k.wgsl" { n: u32, lda: u32, offset: u32, k: u32, row0: u32 });
shader_params!(ThetaSumsParams for "theta_sums.wgsl" { rows: u32, n: u32, lda: u32, offset: u32 });
shader_params!(AttentionProbsParams for "attention_probs.wgsl" { start: u32, d: u32, hd: u32, scale: f32, tokens: u32 });
shader_params!(LogSumExpParams for "logsumexp.wgsl" { n: u32, row0: u32 });
shader_params!(SearchParams for "search.wgsl" {
    rows: u32, span: u32, d: u32, row0: u32, n: u32, k_octets: u32, out_offset: u32,
});

pub(crate) struct Inspector {
    top_k: Kernel,
    sums: Kernel,
    probs: Kernel,
    lse: Kernel,
    search: Kernel,
}

/// The logit lens of one inspected pass: each block's top-k logits per token (as the Theta top-k
/// pairs, [layers × tokens × k]) and each row's log-sum-exp [layers × tokens], with their bind groups
/// over the logits buffer.
pub(crate) struct LensSink {
    k: usize,
    top: wgpu::Buffer,
    top_bind: wgpu::BindGroup,
    lse: wgpu::Buffer,
    lse_bind: wgpu::BindGroup,
}

/// What one inspected forward pass keeps of one Theta map.
pub(crate) enum MapSink {
    /// The whole map [tokens × slots], copied row by row.
    Full(wgpu::Buffer),
    /// Top-k pairs [tokens × k × (slot, value bits)] and column sums [slots], with their bind groups.
    Summary { top: wgpu::Buffer, top_bind: wgpu::BindGroup, sums: wgpu::Buffer, sums_bind: wgpu::BindGroup },
}

pub(crate) struct MapCapture {
    pub layer: usize,
    pub proj: Projection,
    pub slots: usize,
    pub sink: MapSink,
}

pub(crate) struct AttentionSink {
    pub layer: usize,
    pub probs: wgpu::Buffer,
    pub bind: wgpu::BindGroup,
}

/// Everything one inspected pass records, sized for a prompt of `tokens` from position 0.
pub(crate) struct CapturePlan<'a> {
    pub inspector: &'a Inspector,
    pub tokens: usize,
    pub k: usize,
    pub maps: Vec<MapCapture>,
    pub attention: Vec<AttentionSink>,
    pub lens: Option<LensSink>,
}

/// Where a projection's Theta rows sit in the scores buffer after its normalisation: q, k and v
/// share each token's row of `3 · qkv_slots`.
pub(crate) struct ThetaLayout {
    pub n: usize,
    pub lda: usize,
    pub offset: usize,
}

impl Inspector {
    /// The kernels for a backend whose KV cache holds `kv` and parameter tokens `dtype`.
    pub fn new(ctx: &GpuContext, kv: KvDtype, dtype: Dtype) -> Inspector {
        let top_k = Kernel::new(
            ctx,
            "theta top-k",
            include_str!("../../shaders/theta_top_k.wgsl"),
            &[Access::Read, Access::ReadWrite],
        );
        let sums = top_k.sibling(ctx, "theta column sums", include_str!("../../shaders/theta_sums.wgsl"));
        let probs = Kernel::new(
            ctx,
            "attention probabilities",
            &format!("{}\n{}", kv.prelude(), include_str!("../../shaders/attention_probs.wgsl")),
            &[Access::Read, Access::Read, Access::ReadWrite],
        );
        let lse = top_k.sibling(ctx, "logit lens log-sum-exp", include_str!("../../shaders/logsumexp.wgsl"));
        let search = Kernel::new(
            ctx,
            "search by token",
            &format!("{}\n{}", dtype.prelude(), include_str!("../../shaders/search.wgsl")),
            &[Access::Read, Access::Read, Access::ReadWrite],
        );
        Inspector { top_k, sums, probs, lse, search }
    }

    /// A lens sink over `logits` for `layers` blocks of `tokens` rows, keeping the top `k` of each.
    fn lens_sink(&self, ctx: &GpuContext, logits: &wgpu::Buffer, layers: usize, tokens: usize, k: usize) -> LensSink {
        let top = ctx.storage("lens top-k", (layers * tokens * k * 8) as u64);
        let lse = ctx.storage("lens log-sum-exp", (layers * tokens * 4) as u64);
        LensSink {
            k,
            top_bind: self.top_k.bind(ctx, &[logits, &top]),
            lse_bind: self.lse.bind(ctx, &[logits, &lse]),
            top,
            lse,
        }
    }

    /// A summary sink over `scores` for `tokens` rows of `slots` keeping the top `k` of each row.
    pub fn summary_sink(
        &self,
        ctx: &GpuContext,
        scores: &wgpu::Buffer,
        tokens: usize,
        slots: usize,
        k: usize,
    ) -> MapSink {
        let top = ctx.storage("theta top-k", (tokens * k * 8) as u64);
        let sums = ctx.storage("theta column sums", (slots * 4) as u64);
        MapSink::Summary {
            top_bind: self.top_k.bind(ctx, &[scores, &top]),
            sums_bind: self.sums.bind(ctx, &[scores, &sums]),
            top,
            sums,
        }
    }

    pub fn attention_sink(
        &self,
        ctx: &GpuContext,
        layer: usize,
        q: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        heads: usize,
        tokens: usize,
    ) -> AttentionSink {
        let probs = ctx.storage("attention probabilities", (heads * tokens * tokens * 4) as u64);
        AttentionSink { layer, bind: self.probs.bind(ctx, &[q, k_cache, &probs]), probs }
    }
}

impl CapturePlan<'_> {
    /// Records block `layer`'s lens rows for the `t` tokens at positions `start..`, whose logits
    /// [t × vocab] are now in the logits buffer.
    pub fn lens(&self, enc: &mut Encoder, layer: usize, t: usize, start: usize, vocab: usize) {
        let Some(lens) = &self.lens else { return };
        let (n, row0) = (vocab as u32, (layer * self.tokens + start) as u32);
        let top_k = ThetaTopKParams { n, lda: n, offset: 0, k: lens.k as u32, row0 };
        enc.dispatch(&self.inspector.top_k, &lens.top_bind, &top_k, [t as u32, 1, 1]);
        enc.dispatch(&self.inspector.lse, &lens.lse_bind, &LogSumExpParams { n, row0 }, [t as u32, 1, 1]);
    }

    /// Records what is wanted of `proj` in block `layer`, whose Theta for the `t` rows at positions
    /// `start..` is now in `scores`.
    #[allow(clippy::too_many_arguments)]
    pub fn theta(
        &self,
        enc: &mut Encoder,
        scores: &wgpu::Buffer,
        layer: usize,
        proj: Projection,
        at: &ThetaLayout,
        t: usize,
        start: usize,
    ) {
        let Some(map) = self.maps.iter().find(|m| m.layer == layer && m.proj == proj) else { return };
        match &map.sink {
            MapSink::Full(out) => {
                let row_bytes = (at.n * 4) as u64;
                if at.lda == at.n && at.offset == 0 {
                    enc.copy_at(scores, 0, out, start as u64 * row_bytes, t as u64 * row_bytes);
                } else {
                    for r in 0..t {
                        let src = ((r * at.lda + at.offset) * 4) as u64;
                        enc.copy_at(scores, src, out, (start + r) as u64 * row_bytes, row_bytes);
                    }
                }
            }
            MapSink::Summary { top_bind, sums_bind, .. } => {
                let (n, lda, offset) = (at.n as u32, at.lda as u32, at.offset as u32);
                let k = self.k as u32;
                let top_k = ThetaTopKParams { n, lda, offset, k, row0: start as u32 };
                enc.dispatch(&self.inspector.top_k, top_bind, &top_k, [t as u32, 1, 1]);
                let sums = ThetaSumsParams { rows: t as u32, n, lda, offset };
                enc.dispatch(&self.inspector.sums, sums_bind, &sums, [groups_for(at.n, 64), 1, 1]);
            }
        }
    }

    /// Records block `layer`'s attention probabilities for the `t` queries at positions `start..`
    /// (q holds them after RoPE; the key cache holds positions up to `start + t`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        enc: &mut Encoder,
        layer: usize,
        t: usize,
        start: usize,
        heads: usize,
        d: usize,
        hd: usize,
    ) {
        let Some(sink) = self.attention.iter().find(|a| a.layer == layer) else { return };
        let scale = 1.0 / (hd as f32).sqrt();
        let [start, d, hd, tokens] = [start, d, hd, self.tokens].map(|v| v as u32);
        let params = AttentionProbsParams { start, d, hd, scale, tokens };
        enc.dispatch(&self.inspector.probs, &sink.bind, &params, [heads as u32, t as u32, 1]);
    }
}

/// The lens from its read-back top-k pairs [layers × tokens × k × (id, logit bits)] and log-sum-exps.
fn lens_of(top: &[u8], lse: &[f32], layers: usize, tokens: usize, k: usize) -> LogitLens {
    let words: Vec<u32> = top.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let mut lens = LogitLens::new(layers, tokens, k);
    for (row, (pairs, &lse)) in words.chunks_exact(2 * k).zip(lse).enumerate() {
        let logits: Vec<(usize, f32)> = pairs.chunks_exact(2).map(|p| (p[0] as usize, f32::from_bits(p[1]))).collect();
        lens.top[row * k..(row + 1) * k].copy_from_slice(&with_probabilities(&logits, lse as f64));
    }
    lens
}

impl GpuBackend {
    /// The inspector's kernels, compiled on first use.
    async fn inspector(&mut self) -> Result<Inspector> {
        match self.inspector.take() {
            Some(inspector) => Ok(inspector),
            None => {
                self.ctx.refusals("the inspector's kernels", || Inspector::new(&self.ctx, self.kv, self.dtype)).await
            }
        }
    }

    /// Runs `ids` from an empty cache and returns what `request` asks for, exactly as
    /// [`CpuBackend::inspect`](crate::CpuBackend::inspect) does: whole Theta maps (copied out of the
    /// scores buffer after each normalisation) and attention probabilities. Afterwards the cache
    /// holds the prompt.
    pub async fn inspect_async(&mut self, ids: &[u32], request: &InspectRequest) -> Result<Inspection> {
        let inspector = self.inspector().await?;
        let result = self.inspect_with(&inspector, ids, request).await;
        self.inspector = Some(inspector);
        result
    }

    async fn inspect_with(
        &mut self,
        inspector: &Inspector,
        ids: &[u32],
        request: &InspectRequest,
    ) -> Result<Inspection> {
        let plan = self.plan(inspector, ids, request, None)?;
        self.run_plan(ids, &plan);
        let tokens = ids.len();
        let heads = self.cfg.num_heads;
        let mut parts = Vec::new();
        for map in &plan.maps {
            if let MapSink::Full(buffer) = &map.sink {
                parts.push((buffer, (tokens * map.slots * 4) as u64));
            }
        }
        for sink in &plan.attention {
            parts.push((&sink.probs, (heads * tokens * tokens * 4) as u64));
        }
        let layers = self.cfg.num_layers;
        if let Some(lens) = &plan.lens {
            parts.push((&lens.top, (layers * tokens * lens.k * 8) as u64));
            parts.push((&lens.lse, (layers * tokens * 4) as u64));
        }
        let mut read = read_storage(&self.ctx, &parts).await?;
        let lens = match &plan.lens {
            Some(sink) => {
                let (lse, top) = (read.pop().unwrap_or_default(), read.pop().unwrap_or_default());
                Some(lens_of(&top, &bytes_to_f32(&lse), layers, tokens, sink.k))
            }
            None => None,
        };
        let mut read = read.into_iter();
        let mut inspection = Inspection { theta: Vec::new(), attention: Vec::new(), lens };
        for map in &plan.maps {
            if let (MapSink::Full(_), Some(bytes)) = (&map.sink, read.next()) {
                let (layer, proj, slots) = (map.layer, map.proj, map.slots);
                inspection.theta.push(Capture { layer, proj, tokens, slots, weights: bytes_to_f32(&bytes) });
            }
        }
        for (sink, bytes) in plan.attention.iter().zip(read) {
            let probs = bytes_to_f32(&bytes);
            inspection.attention.push(AttentionCapture { layer: sink.layer, heads, tokens, probs });
        }
        Ok(inspection)
    }

    /// Runs `ids` from an empty cache and reduces each requested Theta map on the device to its top
    /// `k` slots per token and its column sums: only those leave the GPU (for the 150M model and a
    /// 256-token prompt, 60 maps are 76 MB whole, about 0.5 MB summarised with k = 8).
    pub async fn summarize_async(
        &mut self,
        ids: &[u32],
        request: &InspectRequest,
        k: usize,
    ) -> Result<Vec<ThetaSummary>> {
        if k == 0 {
            return Err(Error::Usage("top-k must be at least 1".into()));
        }
        let inspector = self.inspector().await?;
        let result = self.summarize_with(&inspector, ids, request, k).await;
        self.inspector = Some(inspector);
        result
    }

    async fn summarize_with(
        &mut self,
        inspector: &Inspector,
        ids: &[u32],
        request: &InspectRequest,
        k: usize,
    ) -> Result<Vec<ThetaSummary>> {
        let plan = self.plan(inspector, ids, request, Some(k))?;
        self.run_plan(ids, &plan);
        let tokens = ids.len();
        let mut parts = Vec::new();
        for map in &plan.maps {
            if let MapSink::Summary { top, sums, .. } = &map.sink {
                parts.push((top, (tokens * k.min(map.slots) * 8) as u64));
                parts.push((sums, (map.slots * 4) as u64));
            }
        }
        let mut read = read_storage(&self.ctx, &parts).await?.into_iter();
        let mut out = Vec::with_capacity(plan.maps.len());
        for map in &plan.maps {
            let (MapSink::Summary { .. }, Some(pairs), Some(sums)) = (&map.sink, read.next(), read.next()) else {
                continue;
            };
            let k = k.min(map.slots);
            let pairs: Vec<u32> = pairs.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let top = pairs
                .chunks_exact(2 * k)
                .map(|row| row.chunks_exact(2).map(|p| (p[0] as usize, f32::from_bits(p[1]))).collect())
                .collect();
            let column_sums = bytes_to_f32(&sums);
            out.push(ThetaSummary { layer: map.layer, proj: map.proj, tokens, slots: map.slots, top, column_sums });
        }
        Ok(out)
    }

    /// The dictionary of one parameter token (see [`crate::inspect::dictionary`]), computed with the
    /// model's own kernels: a one-hot Theta row through the layer's value product gives the slot's
    /// value vector, and the tied head scores it against the vocabulary. The KV cache is untouched.
    pub async fn dictionary_async(&mut self, layer: usize, proj: Projection, slot: usize) -> Result<Vec<f32>> {
        check_slot(layer, proj, slot, &self.cfg)?;
        self.ctx.check_alive()?;
        let (d, nq) = (self.cfg.hidden_size, self.cfg.qkv_slots);
        let b = &self.buffers;
        let binds = &self.layers[layer];
        let (values, width, out, out_offset, args) = match proj {
            Projection::Query | Projection::Key | Projection::Value => {
                (&binds.qkv_values, 3 * nq, &b.qkv, proj as usize * d, LinearArgs::stacked_values(1, nq, d))
            }
            Projection::Proj => {
                (&binds.proj_values, self.cfg.proj_slots, &b.x, 0, LinearArgs::plain(1, self.cfg.proj_slots, d))
            }
            Projection::Ffn => {
                (&binds.ffn_values, self.cfg.ffn_slots, &b.x, 0, LinearArgs::plain(1, self.cfg.ffn_slots, d))
            }
        };
        let mut one_hot = vec![0f32; width];
        one_hot[if matches!(proj, Projection::Proj | Projection::Ffn) { slot } else { proj as usize * nq + slot }] =
            1.0;
        self.ctx.queue.write_buffer(&b.scores, 0, &f32_bytes(&one_hot));
        let mut pages = std::mem::take(&mut self.params);
        let mut enc = Encoder::new(&self.ctx, &mut pages);
        let k = &self.kernels;
        k.linear.encode(&mut enc, values, &args);
        enc.copy_at(out, (out_offset * 4) as u64, &b.h, 0, (d * 4) as u64);
        k.head().encode(&mut enc, &self.head, &LinearArgs::plain(1, d, self.vocab));
        let bytes = (self.vocab * 4) as u64;
        enc.copy(&b.logits, 0, &b.logits_read, bytes);
        enc.submit();
        self.params = pages;
        Ok(bytes_to_f32(&read_back(&self.ctx, &b.logits_read, bytes, None).await?))
    }

    /// Every value parameter token's score for `token` (see [`crate::search`], whose order the
    /// vector follows), computed on the device: the token's embedding row through the embed kernel,
    /// then each value matrix's columns weighted by it; only the scores are read back. A decode
    /// step submitted ahead is dropped (the ids buffer it would read is overwritten); the KV cache
    /// is untouched.
    pub async fn search_async(&mut self, token: u32) -> Result<Vec<f32>> {
        check_token(token, self.vocab)?;
        self.ctx.check_alive()?;
        self.discard_ahead();
        let inspector = self.inspector().await?;
        let cfg = &self.cfg;
        let (d, per_layer) = (cfg.hidden_size, slots_per_layer(cfg));
        let total = cfg.num_layers * per_layer;
        let out = self.ctx.storage("search scores", (total * 4) as u64);
        self.ctx.queue.write_buffer(&self.buffers.ids, 0, &u32_bytes(&[token]));
        let mut pages = std::mem::take(&mut self.params);
        let mut enc = Encoder::new(&self.ctx, &mut pages);
        self.kernels.embed.encode(&mut enc, &self.embed, 1);
        for (l, binds) in self.layers.iter().enumerate() {
            let values = [(&binds.qkv_values, Projection::Query), (&binds.proj_values, Projection::Proj)];
            for (matrix, proj) in values.into_iter().chain([(&binds.ffn_values, Projection::Ffn)]) {
                let base = l * per_layer + projection_offset(proj, cfg);
                for (buffer, row0, rows) in matrix.weight_chunks() {
                    let bind = inspector.search.bind(&self.ctx, &[&self.buffers.x, buffer, &out]);
                    let span = if matrix.groups > 1 { d } else { rows };
                    let params = SearchParams {
                        rows: rows as u32,
                        span: span as u32,
                        d: d as u32,
                        row0: row0 as u32,
                        n: matrix.cols as u32,
                        k_octets: matrix.k_octets as u32,
                        out_offset: base as u32,
                    };
                    let grid = [groups_for(matrix.k_octets, 64), rows.div_ceil(span) as u32, 1];
                    enc.dispatch(&inspector.search, &bind, &params, grid);
                }
            }
        }
        enc.submit();
        self.params = pages;
        self.inspector = Some(inspector);
        Ok(bytes_to_f32(&read_storage(&self.ctx, &[(&out, (total * 4) as u64)]).await?.concat()))
    }

    /// Capture buffers for `request` on `ids`: whole maps, or summaries keeping `top_k` per row.
    fn plan<'a>(
        &self,
        inspector: &'a Inspector,
        ids: &[u32],
        request: &InspectRequest,
        top_k: Option<usize>,
    ) -> Result<CapturePlan<'a>> {
        request.validate(&self.cfg)?;
        check_ids(ids, self.vocab, 0, self.cfg.max_positions)?;
        self.ctx.check_alive()?;
        let ctx = &*self.ctx;
        let tokens = ids.len();
        let maps = request
            .maps()
            .into_iter()
            .map(|(layer, proj)| {
                let slots = proj.slots(&self.cfg);
                let sink = match top_k {
                    None => MapSink::Full(ctx.storage("theta", (tokens * slots * 4) as u64)),
                    Some(k) => inspector.summary_sink(ctx, &self.buffers.scores, tokens, slots, k.min(slots)),
                };
                MapCapture { layer, proj, slots, sink }
            })
            .collect();
        let heads = self.cfg.num_heads;
        let attention = request
            .attention_layers()
            .into_iter()
            .map(|l| inspector.attention_sink(ctx, l, &self.buffers.q, &self.layers[l].k_cache, heads, tokens))
            .collect();
        let layers = self.cfg.num_layers;
        let lens =
            request.lens.map(|k| inspector.lens_sink(ctx, &self.buffers.logits, layers, tokens, k.min(self.vocab)));
        Ok(CapturePlan { inspector, tokens, k: top_k.unwrap_or(0), maps, attention, lens })
    }

    /// Runs the prompt from position 0 with `plan` recording, a chunk per submission.
    fn run_plan(&mut self, ids: &[u32], plan: &CapturePlan) {
        self.reset();
        for chunk in ids.chunks(PREFILL_CHUNK) {
            self.submit_chunk(Some(chunk), 0, Some(plan), |_, _| {});
        }
    }
}
