//! The streaming weights reader (what the browser runs on a download) against the whole-file
//! reader: real torch.save files and every fixture, cut into pieces of every awkward size, give the
//! same tensors bit for bit, and the same model.

use tokenformer::loader::ModelPaths;
use tokenformer::model::{Dtype, ModelBuilder};
use tokenformer::weights::index;
use tokenformer::weights::stream::{verify, TensorInfo, TensorSink, WeightStream};

/// Every tensor's values as they stream, by name.
#[derive(Default)]
struct Values {
    tensors: Vec<TensorInfo>,
    values: Vec<Vec<f32>>,
}

impl TensorSink for Values {
    fn begin(&mut self, tensors: &[TensorInfo]) -> tokenformer::Result<()> {
        self.tensors = tensors.to_vec();
        self.values = vec![Vec::new(); tensors.len()];
        Ok(())
    }

    fn rows(&mut self, index: usize, row0: usize, values: &[f32]) -> tokenformer::Result<()> {
        let cols = self.tensors[index].cols();
        assert_eq!(row0 * cols, self.values[index].len(), "{}: rows out of order", self.tensors[index].name);
        self.values[index].extend_from_slice(values);
        Ok(())
    }

    fn blocks(&mut self, index: usize, row0: usize, blocks: &[u8]) -> tokenformer::Result<()> {
        let t = &self.tensors[index];
        let format = t.dtype.quant().expect("blocks of a quantized tensor");
        assert_eq!(row0 * t.cols(), self.values[index].len(), "{}: rows out of order", t.name);
        self.values[index].extend(format.dequantize_rows(t.cols(), blocks));
        Ok(())
    }
}

fn streamed(bytes: &[u8], piece: usize, size_known: bool) -> tokenformer::Result<Vec<(String, Vec<f32>)>> {
    let mut sink = Values::default();
    let mut stream = WeightStream::new(size_known.then_some(bytes.len() as u64));
    for chunk in bytes.chunks(piece) {
        stream.push(chunk, &mut sink)?;
    }
    stream.finish()?;
    let mut out: Vec<_> = sink.tensors.into_iter().map(|t| t.name).zip(sink.values).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What the whole-file reader gives (header or zip directory first, then each tensor's range).
fn whole(bytes: &[u8]) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<_> = index(&bytes)
        .unwrap()
        .into_iter()
        .map(|t| {
            let values = t.read_f32(&bytes).unwrap();
            (t.name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn same_bits(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.0 == y.0 && x.1.len() == y.1.len() && x.1.iter().zip(&y.1).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

const PIECES: [usize; 6] = [1, 2, 7, 64, 4093, usize::MAX];

#[test]
fn real_torch_save_files_stream_like_they_read_whole() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pytorch");
    for name in ["mixed.bin", "mixed_proto4.bin", "module_f16.bin"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let reference = whole(&bytes);
        assert!(!reference.is_empty());
        for piece in PIECES {
            for size_known in [true, false] {
                let got = streamed(&bytes, piece, size_known).unwrap_or_else(|e| panic!("{name} in {piece}: {e}"));
                assert!(same_bits(&got, &reference), "{name} in {piece}-byte pieces");
            }
        }
    }
    // Files the whole reader refuses, the stream refuses too.
    for name in ["deflated.bin", "evil.bin", "legacy.bin", "transposed.bin"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        for piece in PIECES {
            assert!(verify(&bytes, piece).is_err(), "{name} in {piece}-byte pieces");
        }
    }
}

#[test]
fn every_fixture_streams_to_the_same_tensors_and_model() {
    let quantized = ["l2_norm_gelu_q8", "l2_norm_gelu_q4", "gelu_l2_norm_q4", "softmax_q4"];
    for fixture in ["l2_norm_gelu", "gelu_l2_norm", "softmax", "l2_norm_gelu_bf16"].into_iter().chain(quantized) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
        let paths = ModelPaths::resolve(&dir, None, None).unwrap();
        let bytes = std::fs::read(&paths.weights).unwrap();
        let reference = whole(&bytes);
        for piece in [7, 4093, 1 << 20] {
            let got = streamed(&bytes, piece, piece != 7).unwrap_or_else(|e| panic!("{fixture} in {piece}: {e}"));
            assert!(same_bits(&got, &reference), "{fixture} in {piece}-byte pieces");
        }
        // The model the CLI loads (one stream of the mapped file) equals one built from odd pieces.
        let (model, tokenizer) = paths.load((Dtype::F32, None), &mut |_, _| {}).unwrap();
        let mut builder = ModelBuilder::new(model.config.clone(), tokenizer.vocab_size(), None);
        let mut stream = WeightStream::new(None);
        for chunk in bytes.chunks(331) {
            stream.push(chunk, &mut builder).unwrap();
        }
        stream.finish().unwrap();
        let rebuilt = builder.finish().unwrap();
        for ((name, _, a), (_, _, b)) in model.tensors().iter().zip(rebuilt.tensors().iter()) {
            assert!(a.iter().zip(b.iter()).all(|(p, q)| p.to_bits() == q.to_bits()), "{fixture}: {name}");
        }
    }
}

#[test]
fn a_stream_cut_short_or_corrupted_is_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/l2_norm_gelu");
    let bytes = std::fs::read(dir.join("pytorch_model.bin")).unwrap();
    // Cut anywhere: an error, never a model.
    for cut in [10, 100, 1000, bytes.len() / 2, bytes.len() - 100, bytes.len() - 1] {
        assert!(verify(&bytes[..cut], 4093).is_err(), "cut at {cut}");
    }
    // One flipped bit in a storage: the entry's CRC-32 no longer matches.
    let mut flipped = bytes.clone();
    let at = bytes.len() / 2;
    flipped[at] ^= 0x10;
    let err = verify(&flipped, 4093).unwrap_err().to_string();
    assert!(err.contains("CRC-32"), "{err}");
    // safetensors padded or cut: the reader's own message, whichever the chunking.
    let st = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/l2_norm_gelu_bf16/model.safetensors"),
    )
    .unwrap();
    let mut padded = st.clone();
    padded.extend_from_slice(&[0; 3]);
    for piece in [5, 4093] {
        let err = verify(&padded, piece).unwrap_err().to_string();
        assert!(err.contains("(truncated or padded)"), "{err}");
        let err = verify(&st[..st.len() - 3], piece).unwrap_err().to_string();
        assert!(err.contains("(truncated or padded)"), "{err}");
    }
}

#[test]
fn the_authors_layout_writer_makes_files_both_readers_load() {
    // A fixture model written as the hub serves it: same tensors through the stream and through
    // the zip directory, and the same model.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gelu_l2_norm");
    let (model, _) = ModelPaths::resolve(&dir, None, None).unwrap().load((Dtype::F32, None), &mut |_, _| {}).unwrap();
    let out = std::env::temp_dir().join(format!("tokenformer-authors-{}", std::process::id()));
    let tokenizer = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let size = tokenformer::convert::write_authors_folder(&model, &tokenizer, &out).unwrap();
    let bytes = std::fs::read(out.join("pytorch_model.bin")).unwrap();
    assert_eq!(bytes.len() as u64, size);
    let reference = whole(&bytes);
    for piece in [1, 61, 4093] {
        assert!(same_bits(&streamed(&bytes, piece, false).unwrap(), &reference), "{piece}-byte pieces");
    }
    let (written, _) = ModelPaths::resolve(&out, None, None).unwrap().load((Dtype::F32, None), &mut |_, _| {}).unwrap();
    for ((name, shape, a), (_, shape_b, b)) in model.tensors().iter().zip(written.tensors().iter()) {
        assert_eq!(shape, shape_b, "{name}");
        assert!(a.iter().zip(b.iter()).all(|(p, q)| p.to_bits() == q.to_bits()), "{name}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
