//! `tokenformer`: generate, score, evaluate and convert TokenFormer models from the command line.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod cli;
use cli::args::*;
use cli::files::*;
use cli::inspect::*;
use indicatif::{ProgressBar, ProgressStyle};

use tokenformer::bench::DispatchReport;
use tokenformer::convert::to_safetensors;
use tokenformer::default_model;
use tokenformer::generation::{compare, perplexity};
use tokenformer::gpu::{GpuBackend, GpuOptions, KvDtype, PREFILL_CHUNK};
use tokenformer::inspect::top_k;
use tokenformer::loader::ModelPaths;
use tokenformer::tokenizer::TextStream;
use tokenformer::{
    generate, Backend, CpuBackend, Dtype, Error, InspectRequest, Intervention, Interventions, Model, Projection,
    Result, SamplingParams, Tokenizer,
};

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
        Command::Search(args) => run_search(args),
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

fn load(paths: &ModelPaths, dtypes: (Dtype, Option<Dtype>)) -> Result<(Model, Tokenizer)> {
    let bar = progress_bar(0, "loading");
    let loaded = paths.load(dtypes, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    loaded
}

/// The model named by --model, or the built-in default model, stored in `dtypes` (the parameter
/// tokens' and the embedding's): a quantized file stays as it is, a float one is quantized as it
/// loads.
fn load_model(args: &ModelArgs, dtypes: (Dtype, Option<Dtype>)) -> Result<(Model, Tokenizer)> {
    match &args.model {
        Some(path) => load(&ModelPaths::resolve(path, args.config.as_deref(), args.tokenizer.as_deref())?, dtypes),
        None if args.config.is_some() || args.tokenizer.is_some() => {
            Err(Error::Usage("--config and --tokenizer need --model".into()))
        }
        None => default_model::load(dtypes),
    }
}

/// The model stored in `dtypes` on the chosen backend with `intervene`'s interventions applied.
fn load_backend(
    args: &ModelArgs,
    dtypes: (Dtype, Option<Dtype>),
    intervene: &InterveneArgs,
) -> Result<(Box<dyn Backend>, Tokenizer)> {
    // Mistyped interventions fail before the model loads.
    let wanted = intervene.parse()?;
    let (model, tokenizer) = load_model(args, dtypes)?;
    let set = Interventions::new(wanted, &model.config)?;
    Ok((backend_for(model, args, dtypes, set)?, tokenizer))
}

/// `model` on the backend `args` name, stored in `dtypes`, with the interventions `set`.
fn backend_for(
    model: Model,
    args: &ModelArgs,
    dtypes: (Dtype, Option<Dtype>),
    set: Interventions,
) -> Result<Box<dyn Backend>> {
    Ok(match args.backend {
        BackendKind::Cpu => {
            let mut cpu = cpu_backend(model, dtypes, args.kv_cache)?;
            cpu.set_interventions(set);
            Box::new(cpu)
        }
        BackendKind::Gpu => {
            let mut gpu = gpu_backend(&model, dtypes, args.gpu_options())?;
            gpu.set_interventions(set);
            Box::new(gpu)
        }
    })
}

/// The CPU backend on `model`, its matrices converted to `dtypes` one tensor at a time (none if
/// already so), its KV cache in `kv` (default f32).
fn cpu_backend(model: Model, (dtype, embedding): (Dtype, Option<Dtype>), kv: Option<KvDtype>) -> Result<CpuBackend> {
    let mut cpu = CpuBackend::new(Arc::new(model.into_dtype(dtype, embedding)?));
    if let Some(kv) = kv {
        cpu.set_kv_cache(kv);
    }
    Ok(cpu)
}

/// One line per kind of dispatch: its workgroups, device time and share of `total`, and the rate its
/// weights were read at against the copy-shader `limit`.
fn print_kinds(kinds: &[DispatchReport], total: Option<f64>, limit: f64) {
    for k in kinds {
        let groups = if k.min_workgroups == k.max_workgroups {
            k.min_workgroups.to_string()
        } else {
            format!("{}-{}", k.min_workgroups, k.max_workgroups)
        };
        let mut line = format!("    {:<16} {:>4} dispatches of {groups:<8} workgroups", k.kind, k.dispatches);
        if let (Some(ms), Some(total)) = (k.gpu_ms, total) {
            line += &format!(" {ms:>9.2} ms {:>3.0} %", 100.0 * ms / total.max(1e-9));
        }
        if let Some(gb) = k.weight_gb_per_s {
            line += &format!("  weights at {gb:.2} GB/s ({:.2} of the copy limit)", gb / limit);
        }
        println!("{line}");
    }
}

/// Uploads `model` to the default GPU adapter, stored in `dtypes`; the host copy can be dropped
/// afterwards. `shapes` overrides the kernel shapes chosen for the adapter (`GpuOptions`).
fn gpu_backend(model: &Model, (dtype, embedding): (Dtype, Option<Dtype>), shapes: GpuOptions) -> Result<GpuBackend> {
    let spinner = ProgressBar::new_spinner().with_message("uploading weights to the GPU");
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let options = GpuOptions { dtype, embedding, ..shapes };
    let backend = pollster::block_on(GpuBackend::open(model, &options));
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
    let (mut backend, tokenizer) = load_backend(&args.model, args.model.storage.dtypes(), &args.intervene)?;
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
    let (mut backend, _) = load_backend(&args.model, args.model.storage.dtypes(), &args.intervene)?;
    let logits = backend.forward(&ids, true)?;
    let rows: Vec<&[f32]> = logits.chunks(backend.vocab_size()).collect();
    println!("{}", serde_json::json!({ "logits": rows }));
    Ok(())
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let (mut backend, tokenizer) = load_backend(&args.model, args.model.storage.dtypes(), &args.intervene)?;
    let bytes = tokenformer::loader::read(&args.text)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::File { path: args.text.display().to_string(), message: "not UTF-8 text".into() })?;
    let ids = tokenizer.encode(&text)?;
    let window = args.window.unwrap_or(backend.max_positions());
    let stride = args.stride.unwrap_or(window.div_ceil(2));
    if let Some(reference) = args.compare {
        // The same file read again, stored in the reference dtype (its embedding as that dtype's
        // default), on the same backend.
        let (mut reference_backend, _) = load_backend(&args.model, (reference.into(), None), &args.intervene)?;
        let c = compare(reference_backend.as_mut(), backend.as_mut(), &ids, window, stride)?;
        let (name, reference) = (Dtype::from(args.model.storage.dtype).as_str(), Dtype::from(reference).as_str());
        if args.json {
            let p = |p: &tokenformer::generation::Perplexity| serde_json::json!({"perplexity": p.perplexity, "nll_mean": p.nll_mean});
            println!(
                "{}",
                serde_json::json!({"dtype": name, "reference_dtype": reference, "tokens_scored": c.other.tokens_scored,
                                   "window": window, "stride": stride, "reference": p(&c.reference), "model": p(&c.other),
                                   "perplexity_change": c.other.perplexity / c.reference.perplexity - 1.0,
                                   "mean_kl": c.mean_kl, "top1_agreement": c.top1_agreement})
            );
        } else {
            println!(
                "{name}: perplexity {:.4} against {reference}'s {:.4} ({:+.2} %), mean KL {:.5} nats, same top token at {:.2} % of {} positions (window {window}, stride {stride})",
                c.other.perplexity,
                c.reference.perplexity,
                100.0 * (c.other.perplexity / c.reference.perplexity - 1.0),
                c.mean_kl,
                100.0 * c.top1_agreement,
                c.other.tokens_scored
            );
        }
        return Ok(());
    }
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
    let dtypes = args.storage.dtypes();
    let (model, name) = match (&args.synthetic, &args.model) {
        (Some(size), _) => (Model::synthetic(size, 0)?.into_dtype(dtypes.0, dtypes.1)?, format!("synthetic {size}")),
        (None, Some(path)) => (load(&ModelPaths::resolve(path, None, None)?, dtypes)?.0, path.display().to_string()),
        (None, None) => (default_model::load(dtypes)?.0, default_model::NAME.to_string()),
    };
    let params = if args.sample {
        SamplingParams {
            temperature: 0.7,
            top_k: args.top_k,
            top_p: 0.95,
            repetition_penalty: 1.2,
            seed: 1,
            max_tokens: args.gen,
        }
    } else {
        SamplingParams::greedy(args.gen)
    };
    let timing =
        |backend: &mut dyn Backend| tokenformer::bench::time_generation(backend, args.prompt_len, args.gen, &params);
    // gpu_probes: the GPU's read-only bandwidth and the cost of an empty dispatch.
    let (label, bytes_per_token, times, limit, measured_by, gpu_probes, stats) = match args.backend {
        BackendKind::Cpu => {
            let mut cpu = cpu_backend(model, dtypes, args.kv_cache)?;
            let (dtype, kv) = (cpu.model().dtype(), cpu.kv_dtype());
            let bytes = cpu.model().weight_bytes_per_token();
            let times = timing(&mut cpu)?;
            drop(cpu);
            let limit = tokenformer::bench::cpu_read_bandwidth_gb_s();
            let threads = tokenformer::cpu::parallel::threads();
            let plural = if threads == 1 { "" } else { "s" };
            let label = format!("cpu ({threads} thread{plural}, {dtype} weights, {} KV cache)", kv.as_str());
            (label, bytes, times, limit, "streaming read of 512 MiB by the same threads", None, None)
        }
        BackendKind::Gpu => {
            let mut gpu = gpu_backend(&model, dtypes, args.gpu_shapes())?;
            drop(model);
            let times = timing(&mut gpu)?;
            let (limit, read) = tokenformer::bench::gpu_bandwidth_gb_s(gpu.context())?;
            let (adapter, dtype, kv) = (gpu.context().adapter_name(), gpu.dtype().as_str(), gpu.kv_dtype().as_str());
            let label = format!("gpu {adapter} ({dtype} weights, {kv} KV cache; {})", gpu.kernel_shapes());
            let bytes = gpu.weight_bytes_per_token() as usize;
            // More steps, each dispatch timed by the device (where it has timestamps); each kind's
            // fastest.
            let (pass, encode_ns) = (gpu.last_pass(), gpu.last_encode_ns());
            let mut timed = Vec::new();
            for _ in 0..args.timed_steps {
                match pollster::block_on(gpu.profile_decode_step(&params)) {
                    Ok(stats) => timed.push(stats),
                    Err(e) => {
                        eprintln!("no GPU time per dispatch: {e}");
                        break;
                    }
                }
            }
            let stats = (tokenformer::bench::fastest_per_kind(&timed).unwrap_or(pass), encode_ns);
            // And the prompt's first chunk again from position 0, each dispatch timed.
            gpu.reset();
            let prompt = tokenformer::bench::prompt_ids(args.prompt_len.min(PREFILL_CHUNK), gpu.vocab_size());
            let prefill = match pollster::block_on(gpu.profile_prefill(&prompt)) {
                Ok(timed) => Some((prompt.len(), timed)),
                Err(e) => {
                    eprintln!("no GPU time per prefill dispatch: {e}");
                    None
                }
            };
            // After the timed steps, which it could otherwise disturb.
            let dispatch_us = tokenformer::bench::gpu_dispatch_us(gpu.context())?;
            let stats = Some((stats, prefill));
            (
                label,
                bytes,
                times,
                limit,
                "copy shader over 256 MiB, bytes read + written",
                Some((read, dispatch_us)),
                stats,
            )
        }
    };
    let decode_stats = stats.as_ref().map(|(decode, _)| decode);
    let prefill_stats = stats.as_ref().and_then(|(_, prefill)| prefill.as_ref());
    let (dispatch_kinds, gpu_ms_per_token) = decode_stats.map(|(s, _)| DispatchReport::of_pass(s)).unwrap_or_default();
    let (prefill_kinds, prefill_gpu_ms) = prefill_stats.map(|(_, s)| DispatchReport::of_pass(s)).unwrap_or_default();
    let decode_tps = args.gen as f64 / times.decode;
    let achieved = bytes_per_token as f64 * decode_tps / 1e9;
    let report = tokenformer::bench::BenchReport {
        backend: label,
        model: name,
        prompt_len: args.prompt_len,
        generated: args.gen,
        sampling: if args.sample {
            format!(
                "temperature {}, top-k {}, top-p {}, repetition penalty {}",
                params.temperature, params.top_k, params.top_p, params.repetition_penalty
            )
        } else {
            "greedy".into()
        },
        time_to_first_token_ms: times.time_to_first_token * 1e3,
        first_decode_step_ms: times.first_step * 1e3,
        prefill_tokens_per_s: args.prompt_len as f64 / times.prefill,
        decode_tokens_per_s: decode_tps,
        weight_bytes_per_token: bytes_per_token,
        achieved_gb_per_s: achieved,
        limit_gb_per_s: limit,
        limit_measured_by: measured_by.into(),
        ratio: achieved / limit,
        read_limit_gb_per_s: gpu_probes.map(|(read, _)| read),
        read_ratio: gpu_probes.map(|(read, _)| achieved / read),
        empty_dispatch_us: gpu_probes.map(|(_, us)| us),
        dispatches_per_token: decode_stats.map(|(s, _)| s.dispatches),
        submissions_per_token: decode_stats.map(|(s, _)| s.submissions),
        dispatches_per_block: decode_stats.map(|(s, _)| s.per_block),
        dispatch_kinds,
        gpu_ms_per_token,
        encode_ms_per_token: decode_stats.map(|&(_, ns)| ns as f64 / 1e6),
        prefill_timed_tokens: prefill_stats.map(|&(t, _)| t),
        prefill_gpu_ms,
        prefill_kinds,
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
        println!(
            "  decode   {:>9.2} tokens/s ({} tokens, {}; after a first step of {:.0} ms, not counted)",
            r.decode_tokens_per_s, r.generated, r.sampling, r.first_decode_step_ms
        );
        println!(
            "  weights  {:>9.1} MB read per token -> {:.2} GB/s",
            r.weight_bytes_per_token as f64 / 1e6,
            r.achieved_gb_per_s
        );
        println!("  limit    {:>9.2} GB/s ({}), ratio {:.2}", r.limit_gb_per_s, r.limit_measured_by, r.ratio);
        if let (Some(read), Some(ratio)) = (r.read_limit_gb_per_s, r.read_ratio) {
            println!("  reads    {read:>9.2} GB/s (read-only shader over 256 MiB), ratio {ratio:.2}");
        }
        if let (Some(d), Some(s), Some(b)) = (r.dispatches_per_token, r.submissions_per_token, r.dispatches_per_block) {
            println!("  per token {d} dispatches ({b} per block), {s} submission(s)");
            if let Some(us) = r.empty_dispatch_us {
                // Weights at the copy limit plus every dispatch's fixed cost: the best this
                // adapter could do with this many dispatches.
                let (floor, weights) = (d as f64 * us / 1e3, r.weight_bytes_per_token as f64 / r.limit_gb_per_s / 1e6);
                println!(
                    "  floor    {us:>9.1} µs per empty dispatch: {floor:.1} ms of each token, besides {weights:.1} ms for the weights at the copy limit (ratio at most {:.2})",
                    weights / (weights + floor)
                );
            }
        }
        if let Some(e) = r.encode_ms_per_token {
            let total = 1e3 / r.decode_tokens_per_s;
            println!(
                "  time     {total:>9.2} ms per token: {e:.2} ms recording commands (CPU), {:.2} ms the rest (GPU, submission, read-back)",
                total - e
            );
        }
        if let Some(g) = r.gpu_ms_per_token {
            println!(
                "  device   {g:>9.2} ms per token in dispatches ({} more steps, each dispatch timed in a pass of its own; each kind's fastest)",
                args.timed_steps
            );
        }
        print_kinds(&r.dispatch_kinds, r.gpu_ms_per_token, r.limit_gb_per_s);
        if let (Some(t), Some(g)) = (r.prefill_timed_tokens, r.prefill_gpu_ms) {
            println!("  prefill  {g:>9.2} ms in dispatches for {t} tokens from position 0, each dispatch timed");
            print_kinds(&r.prefill_kinds, r.prefill_gpu_ms, r.limit_gb_per_s);
        }
    }
    Ok(())
}
