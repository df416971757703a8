//! Entry points of the fuzz targets (`fuzz/`, run by `tools/fuzz.sh`) and of the corpus replay test
//! (`tests/fuzz_corpus.rs`): each feeds arbitrary bytes to one parser of outside data. Any `Err` is
//! a correct answer; only a panic, a hang, a crash or a runaway allocation is a bug.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::model::{Dtype, Model};
use crate::weights::stream::{TensorInfo, TensorSink, WeightStream};
use crate::weights::{pytorch, safetensors};

/// The safetensors header reader.
pub fn safetensors_index(data: &[u8]) {
    let _ = safetensors::index(&data);
}

/// The restricted zip + pickle reader of `pytorch_model.bin`.
pub fn pytorch_state_dict(data: &[u8]) {
    let _ = pytorch::read_state_dict(&data);
}

/// A sink that takes any tensors and checks only what the stream promises: whole rows, each
/// tensor's rows in order and never more than its shape holds.
struct Checking {
    next_row: Vec<usize>,
    tensors: Vec<TensorInfo>,
}

impl TensorSink for Checking {
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
        self.tensors = tensors.to_vec();
        self.next_row = vec![0; tensors.len()];
        Ok(())
    }

    fn rows(&mut self, index: usize, row0: usize, values: &[f32]) -> Result<()> {
        let t = &self.tensors[index];
        assert_eq!(values.len() % t.cols(), 0, "a partial row of {}", t.name);
        assert_eq!(row0, self.next_row[index], "rows of {} out of order", t.name);
        self.next_row[index] += values.len() / t.cols();
        assert!(self.next_row[index] <= t.rows(), "more rows than {} holds", t.name);
        Ok(())
    }

    fn blocks(&mut self, index: usize, row0: usize, blocks: &[u8]) -> Result<()> {
        let t = &self.tensors[index];
        let row_bytes = t.dtype.row_bytes(t.cols());
        assert!(t.dtype.quant().is_some(), "blocks of {}, a float tensor", t.name);
        assert_eq!(blocks.len() % row_bytes, 0, "a partial row of {}", t.name);
        assert_eq!(row0, self.next_row[index], "rows of {} out of order", t.name);
        self.next_row[index] += blocks.len() / row_bytes;
        assert!(self.next_row[index] <= t.rows(), "more rows than {} holds", t.name);
        Ok(())
    }
}

/// The streaming reader of either weights format (what the browser runs on a download): the
/// first byte picks the chunk size (1 to 256 bytes), the rest is the file.
pub fn weights_stream(data: &[u8]) {
    let Some((&chunk, file)) = data.split_first() else { return };
    let mut sink = Checking { next_row: Vec::new(), tensors: Vec::new() };
    let mut stream = WeightStream::new(if chunk % 2 == 0 { Some(file.len() as u64) } else { None });
    let ok = file.chunks(chunk as usize + 1).all(|c| stream.push(c, &mut sink).is_ok());
    if ok && stream.finish().is_ok() {
        for (t, &rows) in sink.tensors.iter().zip(&sink.next_row) {
            assert!(t.cols() == 0 || rows == t.rows(), "the stream finished without all of {}", t.name);
        }
    }
}

/// `config.json` parsing and validation.
pub fn config(data: &[u8]) {
    let _ = ModelConfig::from_json(data);
}

/// The whole loader: `config.json`, a NUL byte, then a weights file in either format.
pub fn load_model(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0) else { return };
    let (config, weights) = (&data[..split], &data[split + 1..]);
    if let Ok(config) = ModelConfig::from_json(config) {
        for dtype in [Dtype::F32, Dtype::Q4] {
            let _ = Model::from_file(config.clone(), 1, weights, dtype, None, &mut |_, _| {});
        }
    }
}
