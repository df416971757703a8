//! `tokenformer inspect`, `dictionary` and `search`: Pattention maps, the logit lens, slot
//! dictionaries and the slots that point at a token.

use tokenformer::lens::LogitLens;
use tokenformer::search;

use crate::*;

/// Tokens per position the logit lens keeps unless --top-k says otherwise (the page's hover shows 5).
const LENS_TOP: usize = 5;

pub(crate) fn run_inspect(args: InspectArgs) -> Result<()> {
    // Cheap checks first, so a typo does not wait for the model to load.
    let proj = args.proj.as_deref().map(Projection::parse).transpose()?;
    if args.top_k == Some(0) {
        return Err(Error::Usage("--top-k must be at least 1".into()));
    }
    let wanted = args.intervene.parse()?;
    let (model, tokenizer) = load_model(&args.model, args.model.storage.dtypes())?;
    let set = Interventions::new(wanted, &model.config)?;
    let ids = args.prompt.ids(&tokenizer)?;
    let Some(layer) = args.layer else {
        let request = InspectRequest::logit_lens(args.top_k.unwrap_or(LENS_TOP));
        let mut inspector = Inspector::new(model, &args.model, set)?;
        let lens = inspector.inspect(&ids, &request)?.lens;
        let lens = lens.ok_or_else(|| Error::Usage("inspect: nothing was captured".into()))?;
        return print_lens(&lens, &ids, &tokenizer, args.json);
    };
    tokenformer::inspect::check_layer(layer, &model.config)?;
    let request = match proj {
        Some(p) => InspectRequest::theta(layer, p),
        None => InspectRequest::attention(layer),
    };
    let mut inspector = Inspector::new(model, &args.model, set)?;
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

/// The logit lens as JSON (`{"ids", "lens": [per block [per token [[id, probability, text], ...]]]}`)
/// or, for people, a row per block of each position's top token and its probability.
fn print_lens(lens: &LogitLens, ids: &[u32], tokenizer: &Tokenizer, json: bool) -> Result<()> {
    let text = |id: u32| tokenizer.decode(&[id]).unwrap_or_default();
    if json {
        let layers: Vec<Vec<Vec<(u32, f32, String)>>> = (0..lens.layers)
            .map(|l| {
                (0..lens.tokens).map(|t| lens.get(l, t).iter().map(|&(id, p)| (id, p, text(id))).collect()).collect()
            })
            .collect();
        println!("{}", serde_json::json!({ "ids": ids, "lens": layers }));
        return Ok(());
    }
    println!("logit lens: each block's most likely next token at each position, with its probability");
    let inputs: Vec<String> = ids.iter().map(|&id| format!("{:?}", text(id))).collect();
    println!("{:>8} {}", "input", inputs.join(" "));
    for l in 0..lens.layers {
        let row: Vec<String> = (0..lens.tokens)
            .map(|t| lens.get(l, t).first().map_or(String::new(), |&(id, p)| format!("{:?}:{p:.2}", text(id))))
            .collect();
        println!("{:>8} {}", format!("block {l}"), row.join(" "));
    }
    Ok(())
}

pub(crate) fn run_search(args: SearchArgs) -> Result<()> {
    if args.top_k == 0 {
        return Err(Error::Usage("--top-k must be at least 1".into()));
    }
    let (model, tokenizer) = load_model(&args.model, args.model.storage.dtypes())?;
    let id = match (&args.token, args.id) {
        (_, Some(id)) => id,
        (Some(text), None) => search::single_token(&tokenizer, text)?,
        (None, None) => return Err(Error::Usage("give --token or --id".into())),
    };
    let cfg = model.config.clone();
    let timed;
    let scores = match args.model.backend {
        BackendKind::Cpu => {
            let cpu = cpu_backend(model, args.model.storage.dtypes(), None)?;
            timed = std::time::Instant::now();
            search::scores(cpu.model(), id)?
        }
        BackendKind::Gpu => {
            let mut gpu = gpu_backend(&model, args.model.storage.dtypes(), args.model.gpu_options())?;
            // The first search compiles the kernels; the time (printed without --json) is the second's.
            if !args.json {
                pollster::block_on(gpu.search_async(id))?;
            }
            timed = std::time::Instant::now();
            pollster::block_on(gpu.search_async(id))?
        }
    };
    let ms = timed.elapsed().as_secs_f64() * 1e3;
    let top = search::rank(&scores, &cfg, args.top_k);
    let text = tokenizer.decode(&[id]).unwrap_or_default();
    if args.json {
        let top: Vec<_> = top.iter().map(|s| (s.layer, s.proj.as_str(), s.slot, s.score)).collect();
        println!("{}", serde_json::json!({ "id": id, "text": text, "top": top }));
    } else {
        println!(
            "value parameter tokens pointing at token {id} {text:?} (its embedding · each value vector; {} scored in {ms:.0} ms)",
            scores.len()
        );
        for s in top {
            println!("{:>10.4}  layer {:>2} {:<5} slot {}", s.score, s.layer, s.proj.as_str(), s.slot);
        }
    }
    Ok(())
}

pub(crate) fn run_dictionary(args: DictionaryArgs) -> Result<()> {
    let proj = Projection::parse(&args.proj)?;
    let (model, tokenizer) = load_model(&args.model, args.model.storage.dtypes())?;
    tokenformer::inspect::check_slot(args.layer, proj, args.slot, &model.config)?;
    let scores = match args.model.backend {
        BackendKind::Cpu => {
            let model = cpu_backend(model, args.model.storage.dtypes(), None)?.model().clone();
            tokenformer::inspect::dictionary(&model, args.layer, proj, args.slot)?
        }
        BackendKind::Gpu => pollster::block_on(
            gpu_backend(&model, args.model.storage.dtypes(), GpuOptions::default())?
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
    /// `model` on the backend `args` name, stored as they say, with the interventions `set`.
    fn new(model: Model, args: &ModelArgs, set: Interventions) -> Result<Inspector> {
        Ok(match args.backend {
            BackendKind::Cpu => {
                let mut cpu = cpu_backend(model, args.storage.dtypes(), args.kv_cache)?;
                cpu.set_interventions(set);
                Inspector::Cpu(cpu)
            }
            BackendKind::Gpu => {
                let mut gpu = gpu_backend(&model, args.storage.dtypes(), args.gpu_options())?;
                gpu.set_interventions(set);
                Inspector::Gpu(Box::new(gpu))
            }
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
