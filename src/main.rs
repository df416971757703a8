//! `tokenformer`: generate, score, evaluate and convert TokenFormer models from the command line.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use tokenformer::convert::to_safetensors;
use tokenformer::default_model;
use tokenformer::generation::perplexity;
use tokenformer::gpu::{GpuBackend, GpuOptions, WeightDtype};
use tokenformer::inspect::top_k;
use tokenformer::loader::ModelPaths;
use tokenformer::tokenizer::TextStream;
use tokenformer::weights::safetensors::StoreDtype;
use tokenformer::{
    generate, Backend, CpuBackend, CpuDtype, Error, InspectRequest, Model, Projection, Result, SamplingParams,
    Tokenizer,
};

#[derive(Parser)]
#[command(name = "tokenformer", version, about = "TokenFormer inference: generate, score, evaluate, convert")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads for the CPU backend's products (default: every core).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text after a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Print the logits of every input position as JSON.
    Logits(LogitsArgs),
    /// Convert a model (authors' folder or any weights file) into config.json + model.safetensors + tokenizer.json.
    Convert(ConvertArgs),
    /// Perplexity of a text file, with a sliding window.
    Eval(EvalArgs),
    /// Prefill and decode throughput against the machine's measured bandwidth.
    Bench(BenchArgs),
    /// Show one Pattention layer's weights over its parameter tokens (Theta) for every prompt token.
    Inspect(InspectArgs),
    /// A parameter token's dictionary: the vocabulary tokens its value vector scores highest
    /// through the tied embedding.
    Dictionary(DictionaryArgs),
    /// Write a random model of an official size (config.json + model.safetensors + tokenizer.json),
    /// for measurements: the same weights `bench --synthetic` uses.
    Synthetic(SyntheticArgs),
}

#[derive(Args)]
struct SyntheticArgs {
    /// One of 150m, 450m, 900m, 1.5b.
    #[arg(long)]
    size: String,
    /// The tokenizer.json to ship with it (the official models use GPT-NeoX's).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Folder to write into.
    out_dir: PathBuf,
    /// Weights precision of the project layout (the authors' layout is always f32).
    #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
    dtype: DtypeArg,
    /// `project`: model.safetensors with readable names; `authors`: a float32 pytorch_model.bin
    /// with the official names, laid out as torch.save writes it (what the hub serves).
    #[arg(long, value_enum, default_value_t = Layout::Project)]
    layout: Layout,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Layout {
    Project,
    Authors,
}

#[derive(Args)]
struct DictionaryArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Block index, 0-based.
    #[arg(long)]
    layer: usize,
    /// Pattention layer: query, key, value, proj or ffn.
    #[arg(long)]
    proj: String,
    /// Parameter token (slot), 0-based.
    #[arg(long)]
    slot: usize,
    /// How many vocabulary tokens to print.
    #[arg(long, default_value_t = 12)]
    top_k: usize,
    /// Print {"layer", "proj", "slot", "top": [[id, score, text], ...]} as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ModelArgs {
    /// Model folder (config.json + model.safetensors or pytorch_model.bin + tokenizer.json) or a weights
    /// file. Without it, the built-in default model (models/tokenformer-moby) is used.
    #[arg(long)]
    model: Option<PathBuf>,
    /// config.json to use instead of the one next to the weights.
    #[arg(long)]
    config: Option<PathBuf>,
    /// tokenizer.json to use instead of the one next to the weights.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    backend: BackendKind,
    /// Weight storage: f32, or f16 (half the memory and bytes read per token; the CPU widens each
    /// weight exactly and accumulates in f32).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    Cpu,
    /// WebGPU through wgpu (Vulkan, Metal or DX12).
    Gpu,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// 0 disables the cut.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Print one JSON object {"ids": [...], "text": "..."} instead of streaming.
    #[arg(long)]
    json: bool,
}

/// A prompt given as text or as token ids (exactly one of them).
#[derive(Args)]
struct PromptArgs {
    /// Prompt text.
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    prompt: Option<String>,
    /// Prompt as token ids, e.g. 1,2,3.
    #[arg(long)]
    ids: Option<String>,
}

impl PromptArgs {
    fn ids(&self, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
        match (&self.prompt, &self.ids) {
            (Some(text), _) => tokenizer.encode(text),
            (None, Some(ids)) => parse_ids(ids),
            (None, None) => Err(Error::Usage("give --prompt or --ids".into())),
        }
    }
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Block index, 0-based.
    #[arg(long)]
    layer: usize,
    /// Pattention layer: query, key, value, proj or ffn.
    #[arg(long, required_unless_present = "attention", conflicts_with = "attention")]
    proj: Option<String>,
    /// The block's attention probabilities per head instead of a Pattention layer.
    #[arg(long)]
    attention: bool,
    /// Only the K largest weights of each token, as [slot, value] pairs (largest first); on the
    /// GPU they are selected on the device and only they are read back.
    #[arg(long, conflicts_with = "attention")]
    top_k: Option<usize>,
    /// Print {"layer", "proj", "weights": [row per token]} (or "top" with --top-k; with --attention
    /// {"layer", "attention": [per head [row per token]]}) as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, e.g. 1,2,3.
    #[arg(long)]
    ids: String,
}

#[derive(Args)]
struct ConvertArgs {
    /// Model folder or weights file.
    input: PathBuf,
    /// Folder to write config.json, model.safetensors and tokenizer.json into.
    out_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DtypeArg {
    F32,
    F16,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// UTF-8 text file to score.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per window (default: max_position_embeddings).
    #[arg(long)]
    window: Option<usize>,
    /// Window step (default: half the window).
    #[arg(long)]
    stride: Option<usize>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Model folder or weights file (default: the built-in model).
    #[arg(long, conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// A random model of an official size: 150m, 450m, 900m or 1.5b.
    #[arg(long)]
    synthetic: Option<String>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    backend: BackendKind,
    /// Weight storage: f32, or f16 (half the memory and bytes read per token; the CPU widens each
    /// weight exactly and accumulates in f32).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    #[arg(long, default_value_t = 32)]
    gen: usize,
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = set_threads(cli.threads).and_then(|()| match cli.command {
        Command::Generate(args) => run_generate(args),
        Command::Logits(args) => run_logits(args),
        Command::Convert(args) => run_convert(args),
        Command::Eval(args) => run_eval(args),
        Command::Bench(args) => run_bench(args),
        Command::Inspect(args) => run_inspect(args),
        Command::Dictionary(args) => run_dictionary(args),
        Command::Synthetic(args) => run_synthetic(args),
    });
    // One line, no backtrace: these are the user's mistakes or bad files, not bugs.
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        Some(0) => Err(Error::Usage("--threads must be at least 1".into())),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::Usage(format!("cannot start {n} threads: {e}"))),
        None => Ok(()),
    }
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} tensors ({elapsed})")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

fn load(paths: &ModelPaths) -> Result<(Model, Tokenizer)> {
    let bar = progress_bar(0, "loading");
    let loaded = paths.load(&mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    loaded
}

/// The model named by --model, or the built-in default model.
fn load_model(args: &ModelArgs) -> Result<(Model, Tokenizer)> {
    match &args.model {
        Some(path) => load(&ModelPaths::resolve(path, args.config.as_deref(), args.tokenizer.as_deref())?),
        None if args.config.is_some() || args.tokenizer.is_some() => {
            Err(Error::Usage("--config and --tokenizer need --model".into()))
        }
        None => default_model::load(),
    }
}

fn load_backend(args: &ModelArgs) -> Result<(Box<dyn Backend>, Tokenizer)> {
    let (model, tokenizer) = load_model(args)?;
    let backend: Box<dyn Backend> = match args.backend {
        BackendKind::Cpu => Box::new(cpu_backend(model, args.dtype)?),
        BackendKind::Gpu => Box::new(gpu_backend(&model, args.dtype)?),
    };
    Ok((backend, tokenizer))
}

/// The CPU backend on `model`, its matrices converted to `dtype` one tensor at a time.
fn cpu_backend(model: Model, dtype: DtypeArg) -> Result<CpuBackend> {
    let dtype = match dtype {
        DtypeArg::F32 => CpuDtype::F32,
        DtypeArg::F16 => CpuDtype::F16,
    };
    Ok(CpuBackend::new(Arc::new(model.into_dtype(dtype)?)))
}

/// Uploads `model` to the default GPU adapter; the host copy can be dropped afterwards.
fn gpu_backend(model: &Model, dtype: DtypeArg) -> Result<GpuBackend> {
    let dtype = match dtype {
        DtypeArg::F32 => WeightDtype::F32,
        DtypeArg::F16 => WeightDtype::F16,
    };
    let spinner = ProgressBar::new_spinner().with_message("uploading weights to the GPU");
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let backend = pollster::block_on(GpuBackend::open(model, &GpuOptions { dtype, ..Default::default() }));
    spinner.finish_and_clear();
    backend
}

fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| Error::Usage(format!("--ids: {s:?} is not a token id"))))
        .collect()
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let (mut backend, tokenizer) = load_backend(&args.model)?;
    let prompt = args.prompt.ids(&tokenizer)?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        max_tokens: args.max_tokens,
    };
    let start = Instant::now();
    let mut stream = TextStream::default();
    let mut stdout = std::io::stdout();
    let mut stream_error = None;
    let out = generate(backend.as_mut(), &prompt, &params, tokenizer.eos_id(), |id| {
        if args.json {
            return ControlFlow::Continue(());
        }
        match stream.push(&tokenizer, id) {
            Ok(piece) => {
                // A closed pipe (e.g. `| head`) ends generation quietly.
                if write!(stdout, "{piece}").and_then(|_| stdout.flush()).is_err() {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            Err(e) => {
                stream_error = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = stream_error {
        return Err(e);
    }
    let text = tokenizer.decode(&out.ids)?;
    if args.json {
        println!("{}", serde_json::json!({ "ids": out.ids, "text": text }));
    } else {
        println!();
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "[{} prompt + {} generated tokens in {:.2} s, {:.1} tokens/s, stop: {:?}]",
            prompt.len(),
            out.ids.len(),
            secs,
            out.ids.len() as f64 / secs,
            out.stop
        );
    }
    Ok(())
}

fn run_logits(args: LogitsArgs) -> Result<()> {
    let ids = parse_ids(&args.ids)?;
    let (mut backend, _) = load_backend(&args.model)?;
    let logits = backend.forward(&ids, true)?;
    let rows: Vec<&[f32]> = logits.chunks(backend.vocab_size()).collect();
    println!("{}", serde_json::json!({ "logits": rows }));
    Ok(())
}

fn run_inspect(args: InspectArgs) -> Result<()> {
    // Cheap checks first, so a typo does not wait for the model to load.
    let proj = args.proj.as_deref().map(Projection::parse).transpose()?;
    if args.top_k == Some(0) {
        return Err(Error::Usage("--top-k must be at least 1".into()));
    }
    let (model, tokenizer) = load_model(&args.model)?;
    tokenformer::inspect::check_layer(args.layer, &model.config)?;
    let ids = args.prompt.ids(&tokenizer)?;
    let layer = args.layer;
    let request = match proj {
        Some(p) => InspectRequest::theta(layer, p),
        None => InspectRequest::attention(layer),
    };
    let mut inspector = Inspector::new(model, args.model.backend, args.model.dtype)?;
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

fn run_dictionary(args: DictionaryArgs) -> Result<()> {
    let proj = Projection::parse(&args.proj)?;
    let (model, tokenizer) = load_model(&args.model)?;
    tokenformer::inspect::check_slot(args.layer, proj, args.slot, &model.config)?;
    let scores = match args.model.backend {
        BackendKind::Cpu => {
            let model = cpu_backend(model, args.model.dtype)?.model().clone();
            tokenformer::inspect::dictionary(&model, args.layer, proj, args.slot)?
        }
        BackendKind::Gpu => {
            pollster::block_on(gpu_backend(&model, args.model.dtype)?.dictionary_async(args.layer, proj, args.slot))?
        }
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
enum Inspector {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend>),
}

impl Inspector {
    fn new(model: Model, backend: BackendKind, dtype: DtypeArg) -> Result<Inspector> {
        Ok(match backend {
            BackendKind::Cpu => Inspector::Cpu(cpu_backend(model, dtype)?),
            BackendKind::Gpu => Inspector::Gpu(Box::new(gpu_backend(&model, dtype)?)),
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

fn run_convert(args: ConvertArgs) -> Result<()> {
    let paths = ModelPaths::resolve(&args.input, args.config.as_deref(), args.tokenizer.as_deref())?;
    let out_dir = &args.out_dir;
    if same_dir(paths.weights.parent(), out_dir) {
        return Err(Error::Usage(format!("OUT_DIR {} is the model's own folder; pick another", out_dir.display())));
    }
    let (model, _) = load(&paths)?;
    write_model_folder(&model, &tokenformer::loader::read(&paths.tokenizer)?, args.dtype, out_dir)
}

fn run_synthetic(args: SyntheticArgs) -> Result<()> {
    let model = Model::synthetic(&args.size, 0)?;
    let tokenizer = tokenformer::loader::read(&args.tokenizer)?;
    let vocab = Tokenizer::from_bytes(&tokenizer)?.vocab_size();
    if vocab > model.vocab_size {
        return Err(Error::VocabTooLarge { tokenizer: vocab, embedding: model.vocab_size });
    }
    if args.layout == Layout::Authors {
        let bytes = tokenformer::convert::write_authors_folder(&model, &tokenizer, &args.out_dir)?;
        eprintln!("wrote {} ({:.1} MB pytorch_model.bin)", args.out_dir.display(), bytes as f64 / 1e6);
        return Ok(());
    }
    write_model_folder(&model, &tokenizer, args.dtype, &args.out_dir)
}

/// config.json + model.safetensors + tokenizer.json in `out_dir`.
fn write_model_folder(model: &Model, tokenizer: &[u8], dtype: DtypeArg, out_dir: &Path) -> Result<()> {
    let dtype = match dtype {
        DtypeArg::F32 => StoreDtype::F32,
        DtypeArg::F16 => StoreDtype::F16,
    };
    let bar = ProgressBar::new_spinner().with_message("writing model.safetensors");
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let bytes = to_safetensors(model, dtype)?;
    let io = |path: &Path, e: std::io::Error| Error::File { path: path.display().to_string(), message: e.to_string() };
    std::fs::create_dir_all(out_dir).map_err(|e| io(out_dir, e))?;
    let write = |name: &str, data: &[u8]| {
        let path = out_dir.join(name);
        std::fs::write(&path, data).map_err(|e| io(&path, e))
    };
    write("model.safetensors", &bytes)?;
    write("config.json", model.config.to_json().as_bytes())?;
    write("tokenizer.json", tokenizer)?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({:.1} MB of weights, {} tensors)",
        out_dir.display(),
        bytes.len() as f64 / 1e6,
        model.tensors().len()
    );
    Ok(())
}

fn same_dir(a: Option<&Path>, b: &Path) -> bool {
    match (a.and_then(|a| a.canonicalize().ok()), b.canonicalize().ok()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let (mut backend, tokenizer) = load_backend(&args.model)?;
    let bytes = tokenformer::loader::read(&args.text)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::File { path: args.text.display().to_string(), message: "not UTF-8 text".into() })?;
    let ids = tokenizer.encode(&text)?;
    let window = args.window.unwrap_or(backend.max_positions());
    let stride = args.stride.unwrap_or(window.div_ceil(2));
    let p = perplexity(backend.as_mut(), &ids, window, stride)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"perplexity": p.perplexity, "nll_mean": p.nll_mean, "tokens_scored": p.tokens_scored,
                               "window": window, "stride": stride})
        );
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.4} nats over {} tokens, window {window}, stride {stride})",
            p.perplexity, p.nll_mean, p.tokens_scored
        );
    }
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<()> {
    let (model, name) = match (&args.synthetic, &args.model) {
        (Some(size), _) => (Model::synthetic(size, 0)?, format!("synthetic {size}")),
        (None, Some(path)) => (load(&ModelPaths::resolve(path, None, None)?)?.0, path.display().to_string()),
        (None, None) => (default_model::load()?.0, default_model::NAME.to_string()),
    };
    let timing = |backend: &mut dyn Backend| tokenformer::bench::time_generation(backend, args.prompt_len, args.gen);
    let (label, bytes_per_token, (ttft, prefill, decode), limit, measured_by, stats) = match args.backend {
        BackendKind::Cpu => {
            let mut cpu = cpu_backend(model, args.dtype)?;
            let dtype = cpu.model().dtype();
            let bytes = cpu.model().weight_bytes_per_token(dtype.bytes());
            let times = timing(&mut cpu)?;
            drop(cpu);
            let limit = tokenformer::bench::cpu_read_bandwidth_gb_s();
            let threads = tokenformer::cpu::parallel::threads();
            let plural = if threads == 1 { "" } else { "s" };
            let label = format!("cpu ({threads} thread{plural}, {} weights)", dtype.as_str());
            (label, bytes, times, limit, "streaming read of 512 MiB by the same threads", None)
        }
        BackendKind::Gpu => {
            let mut gpu = gpu_backend(&model, args.dtype)?;
            drop(model);
            let times = timing(&mut gpu)?;
            let limit = tokenformer::bench::gpu_copy_bandwidth_gb_s(gpu.context())?;
            let label = format!("gpu {} ({} weights)", gpu.context().adapter_name(), gpu.dtype().as_str());
            let bytes = gpu.weight_bytes_per_token() as usize;
            (label, bytes, times, limit, "copy shader over 256 MiB, bytes read + written", Some(gpu.last_pass()))
        }
    };
    let decode_tps = args.gen as f64 / decode;
    let achieved = bytes_per_token as f64 * decode_tps / 1e9;
    let report = tokenformer::bench::BenchReport {
        backend: label,
        model: name,
        prompt_len: args.prompt_len,
        generated: args.gen,
        time_to_first_token_ms: ttft * 1e3,
        prefill_tokens_per_s: args.prompt_len as f64 / prefill,
        decode_tokens_per_s: decode_tps,
        weight_bytes_per_token: bytes_per_token,
        achieved_gb_per_s: achieved,
        limit_gb_per_s: limit,
        limit_measured_by: measured_by.into(),
        ratio: achieved / limit,
        dispatches_per_token: stats.map(|s| s.dispatches),
        submissions_per_token: stats.map(|s| s.submissions),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        let r = &report;
        println!("{} on {}", r.model, r.backend);
        println!(
            "  prefill  {:>9.1} tokens/s ({} tokens), time to first token {:.0} ms",
            r.prefill_tokens_per_s, r.prompt_len, r.time_to_first_token_ms
        );
        println!("  decode   {:>9.2} tokens/s ({} tokens)", r.decode_tokens_per_s, r.generated);
        println!(
            "  weights  {:>9.1} MB read per token -> {:.2} GB/s",
            r.weight_bytes_per_token as f64 / 1e6,
            r.achieved_gb_per_s
        );
        println!("  limit    {:>9.2} GB/s ({}), ratio {:.2}", r.limit_gb_per_s, r.limit_measured_by, r.ratio);
        if let (Some(d), Some(s)) = (r.dispatches_per_token, r.submissions_per_token) {
            println!("  per token {d} dispatches, {s} submission(s)");
        }
    }
    Ok(())
}
