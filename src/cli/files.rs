//! `tokenformer convert` and `tokenformer synthetic`: model folders written in either layout.

use crate::*;

pub(crate) fn run_convert(args: ConvertArgs) -> Result<()> {
    let paths = ModelPaths::resolve(&args.input, args.config.as_deref(), args.tokenizer.as_deref())?;
    let out_dir = &args.out_dir;
    if same_dir(paths.weights.parent(), out_dir) {
        return Err(Error::Usage(format!("OUT_DIR {} is the model's own folder; pick another", out_dir.display())));
    }
    let (model, _) = load(&paths, args.storage.dtypes())?;
    write_model_folder(&model, &tokenformer::loader::read(&paths.tokenizer)?, out_dir)
}

pub(crate) fn run_synthetic(args: SyntheticArgs) -> Result<()> {
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
    write_model_folder(&model.into_dtype(args.dtype.into(), None)?, &tokenizer, &args.out_dir)
}

/// config.json + model.safetensors (each tensor as `model` stores it) + tokenizer.json in
/// `out_dir`.
pub(crate) fn write_model_folder(model: &Model, tokenizer: &[u8], out_dir: &Path) -> Result<()> {
    let bar = ProgressBar::new_spinner().with_message("writing model.safetensors");
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let bytes = to_safetensors(model)?;
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

pub(crate) fn same_dir(a: Option<&Path>, b: &Path) -> bool {
    match (a.and_then(|a| a.canonicalize().ok()), b.canonicalize().ok()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
