//! The command line: every command and its options (clap).

use crate::*;

#[derive(Parser)]
#[command(name = "tokenformer", version, about = "TokenFormer inference: generate, score, evaluate, convert")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Threads for the CPU backend's products (default: every core).
    #[arg(long, global = true)]
    pub(crate) threads: Option<usize>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// The value parameter tokens of every layer and projection that point at one vocabulary token,
    /// ranked by their dictionary score for it.
    Search(SearchArgs),
    /// Write a random model of an official size (config.json + model.safetensors + tokenizer.json),
    /// for measurements: the same weights `bench --synthetic` uses.
    Synthetic(SyntheticArgs),
}

#[derive(Args)]
pub(crate) struct SyntheticArgs {
    /// One of 150m, 450m, 900m, 1.5b.
    #[arg(long)]
    pub(crate) size: String,
    /// The tokenizer.json to ship with it (the official models use GPT-NeoX's).
    #[arg(long)]
    pub(crate) tokenizer: PathBuf,
    /// Folder to write into.
    pub(crate) out_dir: PathBuf,
    /// Weights precision of the project layout (the authors' layout is always f32).
    #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
    pub(crate) dtype: DtypeArg,
    /// `project`: model.safetensors with readable names; `authors`: a float32 pytorch_model.bin
    /// with the official names, laid out as torch.save writes it (what the hub serves).
    #[arg(long, value_enum, default_value_t = Layout::Project)]
    pub(crate) layout: Layout,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Layout {
    Project,
    Authors,
}

#[derive(Args)]
pub(crate) struct DictionaryArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Block index, 0-based.
    #[arg(long)]
    pub(crate) layer: usize,
    /// Pattention layer: query, key, value, proj or ffn.
    #[arg(long)]
    pub(crate) proj: String,
    /// Parameter token (slot), 0-based.
    #[arg(long)]
    pub(crate) slot: usize,
    /// How many vocabulary tokens to print.
    #[arg(long, default_value_t = 12)]
    pub(crate) top_k: usize,
    /// Print {"layer", "proj", "slot", "top": [[id, score, text], ...]} as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct SearchArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// The token, as text: it must encode to exactly one token (" whale" with its leading space is
    /// another token than "whale").
    #[arg(long, conflicts_with = "id", required_unless_present = "id")]
    pub(crate) token: Option<String>,
    /// The token as an id instead.
    #[arg(long)]
    pub(crate) id: Option<u32>,
    /// How many parameter tokens to print.
    #[arg(long, default_value_t = 20)]
    pub(crate) top_k: usize,
    /// Print {"id", "text", "top": [[layer, proj, slot, score], ...]} as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Interventions on Theta (see `tokenformer::intervene`), for the commands that run the model.
#[derive(Args)]
pub(crate) struct InterveneArgs {
    /// Scale parameter token SLOT of PROJ in block LAYER by FACTOR after the normalisation (0 knocks
    /// it out, 2 doubles it, negative allowed), e.g. --intervene 1:ffn:42=0; repeatable.
    #[arg(long = "intervene", value_name = "LAYER:PROJ:SLOT=FACTOR")]
    pub(crate) specs: Vec<String>,
}

impl InterveneArgs {
    /// The interventions, parsed (not yet checked against a model).
    pub(crate) fn parse(&self) -> Result<Vec<Intervention>> {
        self.specs.iter().map(|s| Intervention::parse(s)).collect()
    }
}

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// Model folder (config.json + model.safetensors or pytorch_model.bin + tokenizer.json) or a weights
    /// file. Without it, the built-in default model (models/tokenformer-moby) is used.
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// config.json to use instead of the one next to the weights.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// tokenizer.json to use instead of the one next to the weights.
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub(crate) backend: BackendKind,
    #[command(flatten)]
    pub(crate) storage: StorageArgs,
    /// The KV cache's storage, f32 or f16 (half the memory): default f16 on the GPU with f16, q8
    /// or q4 weights, else f32.
    #[arg(long, value_parser = KvDtype::parse)]
    pub(crate) kv_cache: Option<KvDtype>,
}

/// How the weights are stored, for the commands that load a model: a file is converted to these
/// as it loads (quantized, or widened from its blocks), a tensor already so passes as it is.
#[derive(Args)]
pub(crate) struct StorageArgs {
    /// Weight storage: f32; f16 (half the memory and bytes read per token); q8 or q4 (int8 or
    /// 4-bit in groups of 32 with f16 scales: about 0.27 and 0.16 of f32). Compute is f32 always.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub(crate) dtype: DtypeArg,
    /// The embedding's (tied head's) storage; default f16 with q8 or q4, else --dtype's.
    #[arg(long, value_enum)]
    pub(crate) embedding_dtype: Option<DtypeArg>,
}

impl StorageArgs {
    /// The parameter tokens' dtype and the embedding's, if given.
    pub(crate) fn dtypes(&self) -> (Dtype, Option<Dtype>) {
        (self.dtype.into(), self.embedding_dtype.map(Dtype::from))
    }
}

impl ModelArgs {
    /// The GPU backend's options these flags set (the KV cache; the rest the adapter's defaults).
    pub(crate) fn gpu_options(&self) -> GpuOptions {
        GpuOptions { kv_cache: self.kv_cache, ..GpuOptions::default() }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    Cpu,
    /// WebGPU through wgpu (Vulkan, Metal or DX12).
    Gpu,
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) intervene: InterveneArgs,
    #[command(flatten)]
    pub(crate) prompt: PromptArgs,
    #[arg(long, default_value_t = 64)]
    pub(crate) max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) temperature: f32,
    /// 0 disables the cut.
    #[arg(long, default_value_t = 0)]
    pub(crate) top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub(crate) top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub(crate) repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u32,
    /// Print one JSON object {"ids": [...], "text": "..."} instead of streaming.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A prompt given as text or as token ids (exactly one of them).
#[derive(Args)]
pub(crate) struct PromptArgs {
    /// Prompt text.
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    pub(crate) prompt: Option<String>,
    /// Prompt as token ids, e.g. 1,2,3.
    #[arg(long)]
    pub(crate) ids: Option<String>,
}

impl PromptArgs {
    pub(crate) fn ids(&self, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
        match (&self.prompt, &self.ids) {
            (Some(text), _) => tokenizer.encode(text),
            (None, Some(ids)) => parse_ids(ids),
            (None, None) => Err(Error::Usage("give --prompt or --ids".into())),
        }
    }
}

#[derive(Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) intervene: InterveneArgs,
    #[command(flatten)]
    pub(crate) prompt: PromptArgs,
    /// Block index, 0-based.
    #[arg(long, required_unless_present = "logit_lens")]
    pub(crate) layer: Option<usize>,
    /// Pattention layer: query, key, value, proj or ffn.
    #[arg(long, required_unless_present_any = ["attention", "logit_lens"], conflicts_with = "attention")]
    pub(crate) proj: Option<String>,
    /// Every block's prediction instead (the logit lens): the residual after each block through the
    /// final norm and the tied head; per block and token the top token and its probability (with
    /// --json the top 5, or --top-k).
    #[arg(long, conflicts_with_all = ["attention", "proj", "layer"])]
    pub(crate) logit_lens: bool,
    /// The block's attention probabilities per head instead of a Pattention layer.
    #[arg(long)]
    pub(crate) attention: bool,
    /// Only the K largest weights of each token, as [slot, value] pairs (largest first); on the
    /// GPU they are selected on the device and only they are read back.
    #[arg(long, conflicts_with = "attention")]
    pub(crate) top_k: Option<usize>,
    /// Print {"layer", "proj", "weights": [row per token]} (or "top" with --top-k; with --attention
    /// {"layer", "attention": [per head [row per token]]}) as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct LogitsArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) intervene: InterveneArgs,
    /// Token ids, e.g. 1,2,3.
    #[arg(long)]
    pub(crate) ids: String,
}

#[derive(Args)]
pub(crate) struct ConvertArgs {
    /// Model folder or weights file.
    pub(crate) input: PathBuf,
    /// Folder to write config.json, model.safetensors and tokenizer.json into.
    pub(crate) out_dir: PathBuf,
    #[command(flatten)]
    pub(crate) storage: StorageArgs,
    /// config.json to use instead of the one next to the weights.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// tokenizer.json to use instead of the one next to the weights.
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DtypeArg {
    F32,
    F16,
    Q8,
    Q4,
}

impl From<DtypeArg> for Dtype {
    fn from(d: DtypeArg) -> Dtype {
        match d {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::Q8 => Dtype::Q8,
            DtypeArg::Q4 => Dtype::Q4,
        }
    }
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) intervene: InterveneArgs,
    /// UTF-8 text file to score.
    #[arg(long)]
    pub(crate) text: PathBuf,
    /// Tokens per window (default: max_position_embeddings).
    #[arg(long)]
    pub(crate) window: Option<usize>,
    /// Window step (default: half the window).
    #[arg(long)]
    pub(crate) stride: Option<usize>,
    /// Also run the model stored in this dtype, as the reference the --dtype model is measured
    /// against: both perplexities, the mean KL divergence of --dtype's next-token distributions
    /// from the reference's, and the share of positions whose top token is the reference's.
    #[arg(long, value_enum)]
    pub(crate) compare: Option<DtypeArg>,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Model folder or weights file (default: the built-in model).
    #[arg(long, conflicts_with = "synthetic")]
    pub(crate) model: Option<PathBuf>,
    /// A random model of an official size: 150m, 450m, 900m or 1.5b.
    #[arg(long)]
    pub(crate) synthetic: Option<String>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub(crate) backend: BackendKind,
    #[command(flatten)]
    pub(crate) storage: StorageArgs,
    /// The KV cache's storage, f32 or f16 (half the memory): default f16 on the GPU with f16, q8
    /// or q4 weights, else f32.
    #[arg(long, value_parser = KvDtype::parse)]
    pub(crate) kv_cache: Option<KvDtype>,
    #[arg(long, default_value_t = 64)]
    pub(crate) prompt_len: usize,
    #[arg(long, default_value_t = 32)]
    pub(crate) gen: usize,
    /// GPU only: workgroups each decode product launches at least (default 96 on a GPU, 1 on a CPU
    /// adapter such as lavapipe); 96 shows a real GPU's launch shapes on lavapipe.
    #[arg(long)]
    pub(crate) min_workgroups: Option<usize>,
    /// GPU only: kernels shaped for a GPU (true; default on a GPU: prefill tiled in workgroup
    /// memory, top-k sampling over many workgroups) or for a CPU adapter (false; default there).
    #[arg(long)]
    pub(crate) gpu_shapes: Option<bool>,
    /// GPU only: subgroup operations in the decode products, summing their partial sums through
    /// shuffles and, on a CPU adapter, sharing each input block across the lanes (true; default
    /// where the adapter has subgroups), or workgroup memory alone (false, as in browsers).
    #[arg(long)]
    pub(crate) subgroups: Option<bool>,
    /// GPU only: decode steps timed dispatch by dispatch after the run; each kind's fastest is
    /// printed, so more steps steady the figures on a shared host.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) timed_steps: u32,
    /// Decode with the demo page's sampling (temperature 0.7, top-k 40, top-p 0.95, repetition
    /// penalty 1.2) instead of greedy.
    #[arg(long)]
    pub(crate) sample: bool,
    /// With --sample: keep the top k ids; 0 keeps them all (a GPU then walks the whole vocabulary
    /// over many workgroups).
    #[arg(long, default_value_t = 40, requires = "sample")]
    pub(crate) top_k: usize,
    #[arg(long)]
    pub(crate) json: bool,
}

impl BenchArgs {
    /// The GPU kernel shapes the flags ask for (the adapter's defaults where they are silent).
    pub(crate) fn gpu_shapes(&self) -> GpuOptions {
        GpuOptions {
            min_workgroups: self.min_workgroups,
            gpu_shapes: self.gpu_shapes,
            subgroups: self.subgroups,
            kv_cache: self.kv_cache,
            ..GpuOptions::default()
        }
    }
}
