//! From the dtypes a weights stream holds to the dtypes a backend stores: the one place where
//! matrices are quantized on load (and quantized files widened), so the CPU model, the GPU upload
//! and the page's cached copy all receive the same rows.
//!
//! A [`Converter`] sits in front of a sink. It announces each tensor to the sink in the dtype the
//! sink is to keep: float tensors as rows of f32 (the sink rounds them to f16 if announced so),
//! quantized ones as rows of blocks, value tensors transposed (Vᵀ, [d_out, n]: their groups run
//! along the slots, the dimension `Theta · V` reduces). A value tensor changing orientation is
//! gathered whole first (one tensor, never the model).

use std::collections::HashMap;

use super::load::row_values;
use super::{transpose, Dtype, Model, TensorPlan, WeightData};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::quant::QuantFormat;
use crate::weights::stream::{TensorInfo, TensorSink};
use crate::weights::{DType, Naming, TensorRole};

pub struct Converter<S> {
    config: ModelConfig,
    vocab: usize,
    dtype: Dtype,
    embedding: Dtype,
    sink: S,
    tensors: Vec<Conversion>,
    /// Value tensors changing orientation, gathered as f32 until whole, by index.
    gathering: HashMap<usize, Vec<f32>>,
}

/// How one tensor of the stream reaches the sink.
struct Conversion {
    name: String,
    /// The stream's block format, if it holds blocks.
    from: Option<QuantFormat>,
    /// The sink's block format, if it keeps blocks (else f32 rows).
    to: Option<QuantFormat>,
    /// Values per row as the stream holds them (the config's, not a padded block count).
    cols: usize,
    /// For a value tensor: its parameter tokens and output dims (n, d_out).
    values: Option<(usize, usize)>,
}

impl<S: TensorSink> Converter<S> {
    /// Stores the parameter tokens of a model of `config` in `dtype` and its embedding in
    /// `embedding` (default: [`Dtype::default_embedding`]) through `sink`.
    pub fn new(config: ModelConfig, vocab: usize, dtype: Dtype, embedding: Option<Dtype>, sink: S) -> Self {
        let embedding = embedding.unwrap_or(dtype.default_embedding());
        Converter { config, vocab, dtype, embedding, sink, tensors: Vec::new(), gathering: HashMap::new() }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The sink, once every tensor has passed.
    pub fn finish(self) -> Result<S> {
        match self.gathering.keys().next() {
            Some(&i) => Err(Error::Usage(format!("the weights stream ended inside tensor {}", self.tensors[i].name))),
            None => Ok(self.sink),
        }
    }

    /// Quantizes `rows` (whole rows of `cols` values, the first being `row0`) for the sink.
    fn quantize(&mut self, index: usize, row0: usize, format: QuantFormat, cols: usize, rows: &[f32]) -> Result<()> {
        let mut blocks = Vec::with_capacity(rows.len().div_ceil(cols.max(1)) * format.row_bytes(cols));
        for (r, row) in rows.chunks(cols.max(1)).enumerate() {
            format.quantize_row(row, &mut blocks).map_err(|e| {
                Error::Usage(format!("{} row {}: {e}: load it as f32 or f16", self.tensors[index].name, row0 + r))
            })?;
        }
        self.sink.blocks(index, row0, &blocks)
    }

    /// Adds `values` to value tensor `index`'s gathering; returns it when whole.
    fn gather(&mut self, index: usize, values: &[f32]) -> Option<Vec<f32>> {
        let (n, d_out) = self.tensors[index].values?;
        let all = self.gathering.entry(index).or_default();
        all.extend_from_slice(values);
        (all.len() >= n * d_out).then(|| self.gathering.remove(&index).unwrap_or_default())
    }
}

impl<S: TensorSink> TensorSink for Converter<S> {
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
        let plan = TensorPlan::new(&self.config, self.vocab, tensors)?;
        let d = self.config.hidden_size;
        let mut announced = Vec::with_capacity(tensors.len());
        self.tensors.clear();
        for (t, &role) in tensors.iter().zip(&plan.roles) {
            let (target, values) = match role {
                TensorRole::Embedding => (Some(self.embedding), None),
                TensorRole::ParamTokens { proj, values, .. } => {
                    (Some(self.dtype), values.then(|| (proj.slots(&self.config), d)))
                }
                TensorRole::FinalNormWeight | TensorRole::FinalNormBias => (None, None),
            };
            let (from, to) = (t.dtype.quant(), target.and_then(Dtype::quant));
            let cols = row_values(t, role, &self.config);
            let rows = t.rows();
            let (dtype, shape) = match (to, target, values) {
                (Some(q), _, Some((n, d_out))) => (DType::from(q), vec![d_out, n]),
                (Some(q), _, None) => (DType::from(q), vec![rows, d]),
                (None, Some(Dtype::F16), Some((n, d_out))) => (DType::F16, vec![n, d_out]),
                (None, _, Some((n, d_out))) => (DType::F32, vec![n, d_out]),
                (None, Some(Dtype::F16), None) => (DType::F16, vec![rows, d]),
                (None, Some(_), None) => (DType::F32, vec![rows, d]),
                (None, None, _) => (DType::F32, t.shape.clone()),
            };
            announced.push(TensorInfo { name: t.name.clone(), dtype, shape });
            self.tensors.push(Conversion { name: t.name.clone(), from, to, cols, values });
        }
        self.sink.begin(&announced)
    }

    fn rows(&mut self, index: usize, row0: usize, values: &[f32]) -> Result<()> {
        let c = &self.tensors[index];
        match (c.to, c.values) {
            (None, _) => self.sink.rows(index, row0, values),
            (Some(format), None) => self.quantize(index, row0, format, c.cols, values),
            (Some(format), Some((n, d_out))) => match self.gather(index, values) {
                Some(v) => self.quantize(index, 0, format, n, &transpose(&v, n, d_out)),
                None => Ok(()),
            },
        }
    }

    fn blocks(&mut self, index: usize, row0: usize, blocks: &[u8]) -> Result<()> {
        let c = &self.tensors[index];
        let Some(from) = c.from else {
            return Err(Error::Usage(format!("{} arrived as blocks but holds floats", c.name)));
        };
        let cols = c.cols;
        match (c.to, c.values) {
            (Some(to), _) if to == from => self.sink.blocks(index, row0, blocks),
            // Same orientation (Vᵀ for values), another block format.
            (Some(to), _) => self.quantize(index, row0, to, cols, &from.dequantize_rows(cols, blocks)),
            (None, None) => self.sink.rows(index, row0, &from.dequantize_rows(cols, blocks)),
            (None, Some((n, d_out))) => match self.gather(index, &from.dequantize_rows(cols, blocks)) {
                Some(vt) => self.sink.rows(index, 0, &transpose(&vt, d_out, n)),
                None => Ok(()),
            },
        }
    }
}

impl Model {
    /// Feeds every tensor to `sink` as stored (project names; quantized values as Vᵀ): the
    /// stream a model in memory gives, like a file's.
    pub fn feed(&self, sink: &mut dyn TensorSink) -> Result<()> {
        let layers = self.config.num_layers;
        let roles = TensorRole::all(layers);
        let infos: Vec<TensorInfo> = roles
            .iter()
            .map(|&role| {
                let name = role.name(Naming::Project, layers);
                let mut shape = self.shape(role);
                let dtype = self.stored(role).map_or(DType::F32, |w| w.dtype().into());
                if matches!(role, TensorRole::ParamTokens { values: true, .. }) && dtype.quant().is_some() {
                    shape.reverse();
                }
                TensorInfo { name, dtype, shape }
            })
            .collect();
        sink.begin(&infos)?;
        for (i, &role) in roles.iter().enumerate() {
            match self.stored(role) {
                Some(WeightData::Quant(q)) => sink.blocks(i, 0, &q.blocks)?,
                Some(w) => sink.rows(i, 0, &w.to_f32())?,
                None => sink.rows(i, 0, &self.tensor(role).1)?,
            }
        }
        Ok(())
    }

    /// The model with its parameter tokens in `dtype` and its embedding in `embedding` (default:
    /// [`Dtype::default_embedding`]), converted one tensor at a time.
    pub fn into_dtype(self, dtype: Dtype, embedding: Option<Dtype>) -> Result<Model> {
        let embedding = embedding.unwrap_or(dtype.default_embedding());
        if self.dtype() == dtype && self.embedding_dtype() == embedding {
            return Ok(self);
        }
        let builder = super::ModelBuilder::new(self.config.clone(), self.vocab_size, None);
        let mut converter = Converter::new(self.config.clone(), self.vocab_size, dtype, Some(embedding), builder);
        self.feed(&mut converter)?;
        converter.finish()?.finish()
    }
}
