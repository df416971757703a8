//! Putting a model together from its three files, given as bytes (browser) or paths (native).

use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// Parses config, tokenizer and weights (either format, either naming) into a model whose
/// parameter tokens are stored in `dtype` and embedding in `embedding` (default:
/// [`Dtype::default_embedding`]). `progress(done, total)` is called as tensors are decoded.
pub fn load_from_bytes(
    config_json: &[u8],
    weights: &[u8],
    tokenizer_json: &[u8],
    (dtype, embedding): (Dtype, Option<Dtype>),
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Model, Tokenizer)> {
    let config = ModelConfig::from_json(config_json)?;
    let tokenizer = Tokenizer::from_bytes(tokenizer_json)?;
    let model = Model::from_file(config, tokenizer.vocab_size(), weights, dtype, embedding, progress)?;
    Ok((model, tokenizer))
}

/// Where a model's three files are on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPaths {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

/// Weight file names looked for in a model folder, project layout first.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

impl ModelPaths {
    /// `path` is a model folder (project or authors' layout) or a weights file; `config` and
    /// `tokenizer` override the files found next to it.
    pub fn resolve(path: &Path, config: Option<&Path>, tokenizer: Option<&Path>) -> Result<Self> {
        let (dir, weights) = if path.is_dir() {
            let weights =
                WEIGHT_FILES.iter().map(|f| path.join(f)).find(|p| p.is_file()).ok_or_else(|| Error::File {
                    path: path.display().to_string(),
                    message: format!("folder holds neither {}", WEIGHT_FILES.join(" nor ")),
                })?;
            (path.to_path_buf(), weights)
        } else if path.is_file() {
            (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.to_path_buf())
        } else {
            return Err(Error::File { path: path.display().to_string(), message: "no such file or folder".into() });
        };
        let pick = |given: Option<&Path>, name: &str| -> Result<PathBuf> {
            let p = given.map(Path::to_path_buf).unwrap_or_else(|| dir.join(name));
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::File {
                    path: p.display().to_string(),
                    message: format!("not found (a model needs {name}; pass its path with --{})", flag_of(name)),
                })
            }
        };
        Ok(ModelPaths { config: pick(config, "config.json")?, weights, tokenizer: pick(tokenizer, "tokenizer.json")? })
    }

    /// The model stored as [`load_from_bytes`] says.
    pub fn load(
        &self,
        dtypes: (Dtype, Option<Dtype>),
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Model, Tokenizer)> {
        load_from_bytes(&read(&self.config)?, &map_weights(&self.weights)?, &read(&self.tokenizer)?, dtypes, progress)
    }
}

fn flag_of(name: &str) -> &'static str {
    if name == "config.json" {
        "config"
    } else {
        "tokenizer"
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::File { path: path.display().to_string(), message: e.to_string() })
}

/// Maps a weights file instead of reading it, so loading a multi-GB checkpoint holds only the
/// decoded f32 model in memory, not a second copy of the file.
#[cfg(feature = "cli")]
fn map_weights(path: &Path) -> Result<memmap2::Mmap> {
    let file_error = |e: std::io::Error| Error::File { path: path.display().to_string(), message: e.to_string() };
    let file = std::fs::File::open(path).map_err(file_error)?;
    // SAFETY: the map is read-only and dropped when loading ends; a file truncated by another
    // process meanwhile is outside what any reader can defend against.
    unsafe { memmap2::Mmap::map(&file) }.map_err(file_error)
}

#[cfg(not(feature = "cli"))]
fn map_weights(path: &Path) -> Result<Vec<u8>> {
    read(path)
}
