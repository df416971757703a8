//! `tokenformer inspect` and `tokenformer dictionary`: Pattention maps and slot dictionaries.

use crate::*;

pub(crate) fn run_inspect(args: InspectArgs) -> Result<()> {
    // Cheap checks first, so a typo does not wait for the model to load.
    let proj = args.proj.as_deref().map(Projection::parse).transpose()?;
    if args.top_k == Some(0) {
        return Err(Error::Usage("--top-k must be at least 1".into()));
    }
    let (model, tokenizer) = load_model(&args.model, args.model.dtypes())?;
    tokenformer::inspect::check_layer(args.layer, &model.config)?;
    let ids = args.prompt.ids(&tokenizer)?;
    let layer = args.layer;
    let request = match proj {
        Some(p) => InspectRequest::theta(layer, p),
        None => InspectRequest::attention(layer),
    };
    let mut inspector = Inspector::new(model, args.model.backend, args.model.dtypes())?;
    let Some(proj) = proj else {
        let inspection = inspector.inspect(&ids, &request)?;
        let cap = inspection.attention(layer).ok_or_else(|| Error::Usage("inspect: nothing was captured".into()))?;
        let heads: Vec<Vec<&[f32]>> =
            (0..cap.heads).map(|h| (0..cap.tokens).map(|q| cap.row(h, q)).collect()).collect();
        if args.json {
            println!("{}", serde_json::json!({ "layer": layer, "attention": heads }));
        } else {
            println!(
                "layer {layer} attention: {} heads x {} tokens; per head, each token's strongest key",
                cap.heads, cap.tokens
            );
            for (h, rows) in heads.iter().enumerate() {
                let best: Vec<String> = rows
                    .iter()
                    .map(|row| top_k(row, 1).first().map_or(String::new(), |(j, p)| format!("{j}:{p:.2}")))
                    .collect();
                println!("head {h:>2}: {}", best.join(" "));
            }
        }
        return Ok(());
    };
    let name = proj.as_str();
    let top = match args.top_k {
        Some(k) => inspector.top_k(&ids, &request, k)?,
        None => {
            let inspection = inspector.inspect(&ids, &request)?;
            let cap =
                inspection.theta(layer, proj).ok_or_else(|| Error::Usage("inspect: nothing was captured".into()))?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "layer": layer, "proj": name, "weights": cap.rows().collect::<Vec<_>>() })
                );
                return Ok(());
            }
            cap.top_k(8)
        }
    };
    if args.json {
        println!("{}", serde_json::json!({ "layer": layer, "proj": name, "top": top }));
        return Ok(());
    }
    // For people: each token with its strongest slots.
    println!(
        "layer {layer} {name}: {} tokens x {} parameter tokens (top {} per token)",
        ids.len(),
        proj.slots(inspector.config()),
        top.first().map_or(0, Vec::len)
    );
    for (i, (&id, top)) in ids.iter().zip(top).enumerate() {
        let text = format!("{:?}", tokenizer.decode(&[id]).unwrap_or_default());
        let top: Vec<String> = top.iter().map(|(slot, v)| format!("{slot}:{v:.3}")).collect();
        println!("{i:>4} {id:>6} {text:<12} {}", top.join(" "));
    }
    Ok(())
}

pub(crate) fn run_dictionary(args: DictionaryArgs) -> Result<()> {
    let proj = Projection::parse(&args.proj)?;
    let (model, tokenizer) = load_model(&args.model, args.model.dtypes())?;
    tokenformer::inspect::check_slot(args.layer, proj, args.slot, &model.config)?;
    let scores = match args.model.backend {
        BackendKind::Cpu => {
            let model = cpu_backend(model, args.model.dtypes())?.model().clone();
            tokenformer::inspect::dictionary(&model, args.layer, proj, args.slot)?
        }
        BackendKind::Gpu => pollster::block_on(
            gpu_backend(&model, args.model.dtypes(), GpuOptions::default())?
                .dictionary_async(args.layer, proj, args.slot),
        )?,
    };
    let top: Vec<(usize, f32, String)> = top_k(&scores, args.top_k)
        .into_iter()
        .map(|(id, score)| (id, score, tokenizer.decode(&[id as u32]).unwrap_or_default()))
        .collect();
    if args.json {
        let json = serde_json::json!({ "layer": args.layer, "proj": proj.as_str(), "slot": args.slot, "top": top });
        println!("{json}");
    } else {
        println!(
            "layer {} {} parameter token {}: its value vector against the tied embedding",
            args.layer,
            proj.as_str(),
            args.slot
        );
        for (id, score, text) in top {
            println!("{score:>10.4} {id:>6} {text:?}");
        }
    }
    Ok(())
}

/// The backend `inspect` runs on: the CPU reference, or the GPU with its device-side reductions.
pub(crate) enum Inspector {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend>),
}

impl Inspector {
    fn new(model: Model, backend: BackendKind, dtype: (Dtype, Option<Dtype>)) -> Result<Inspector> {
        Ok(match backend {
            BackendKind::Cpu => Inspector::Cpu(cpu_backend(model, dtype)?),
            BackendKind::Gpu => Inspector::Gpu(Box::new(gpu_backend(&model, dtype, GpuOptions::default())?)),
        })
    }

    fn config(&self) -> &tokenformer::ModelConfig {
        match self {
            Inspector::Cpu(b) => &b.model().config,
            Inspector::Gpu(b) => b.config(),
        }
    }

    fn inspect(&mut self, ids: &[u32], request: &InspectRequest) -> Result<tokenformer::Inspection> {
        match self {
            Inspector::Cpu(b) => b.inspect(ids, request),
            Inspector::Gpu(b) => pollster::block_on(b.inspect_async(ids, request)),
        }
    }

    /// The top `k` slots per token of the (one) map `request` names.
    fn top_k(&mut self, ids: &[u32], request: &InspectRequest, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
        let summaries = match self {
            Inspector::Cpu(b) => b.inspect(ids, request)?.theta.iter().map(|c| c.summary(k)).collect(),
            Inspector::Gpu(b) => pollster::block_on(b.summarize_async(ids, request, k))?,
        };
        summaries.into_iter().next().map(|s| s.top).ok_or_else(|| Error::Usage("inspect: nothing was captured".into()))
    }
}
