use super::pickle::*;
use super::*;
use std::io::Cursor;

fn read_state_dict(file: &[u8]) -> Result<Vec<PickledTensor>> {
    super::read_state_dict(&file)
}
use std::io::Write;

macro_rules! testdata {
    ($file:literal) => {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pytorch/", $file))
            .expect(concat!("missing test file ", $file))
    };
}

// --- decoding helpers ---

fn f32s(file: &[u8], t: &PickledTensor) -> Vec<f32> {
    assert_eq!(t.dtype, DType::F32);
    file[t.data.clone()].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f32::from(h & 0x3ff);
    sign * match exp {
        0 => man * 2f32.powi(-24),
        31 if man == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        _ => (1.0 + man / 1024.0) * 2f32.powi(exp - 15),
    }
}

fn halves(file: &[u8], t: &PickledTensor) -> Vec<f32> {
    file[t.data.clone()]
        .chunks_exact(2)
        .map(|c| {
            let bits = u16::from_le_bytes([c[0], c[1]]);
            match t.dtype {
                DType::F16 => f16_to_f32(bits),
                DType::BF16 => f32::from_bits(u32::from(bits) << 16),
                other => panic!("{other:?} is not a half type"),
            }
        })
        .collect()
}

fn find<'t>(ts: &'t [PickledTensor], name: &str) -> &'t PickledTensor {
    ts.iter().find(|t| t.name == name).expect(name)
}

// --- builders for hand-made archives and pickles ---

fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A torch-like archive under `archive/`, with `storages` as `archive/data/<key>`.
fn archive(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut entries: Vec<(String, &[u8])> =
        vec![("archive/data.pkl".into(), pkl), ("archive/byteorder".into(), b"little")];
    for (k, d) in storages {
        entries.push((format!("archive/data/{k}"), d));
    }
    entries.push(("archive/version".into(), b"3\n"));
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    zip(&refs)
}

/// Emits protocol-2 pickles shaped like torch's.
struct P(Vec<u8>);

impl P {
    fn new() -> P {
        P(vec![0x80, 2])
    }
    fn op(&mut self, bytes: &[u8]) -> &mut P {
        self.0.extend_from_slice(bytes);
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut P {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn str(&mut self, s: &str) -> &mut P {
        self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
    }
    fn int(&mut self, v: i64) -> &mut P {
        self.op(&[0x8a, 8]).op(&v.to_le_bytes())
    }
    fn ints(&mut self, vs: &[i64]) -> &mut P {
        self.op(b"(");
        for &v in vs {
            self.int(v);
        }
        self.op(b"t")
    }
    fn storage(&mut self, class: &str, key: &str, numel: i64) -> &mut P {
        self.op(b"(").str("storage").global("torch", class).str(key).str("cpu").int(numel).op(b"tQ")
    }
    #[allow(clippy::too_many_arguments)]
    fn tensor(&mut self, class: &str, key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> &mut P {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(")
            .storage(class, key, numel)
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(&[0x89])
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    fn dict_start(&mut self) -> &mut P {
        self.global("collections", "OrderedDict").op(b")R(")
    }
    fn dict_end(&mut self) -> Vec<u8> {
        self.op(b"u.").done()
    }
    fn done(&mut self) -> Vec<u8> {
        self.0.clone()
    }
}

/// `{name: f32 tensor over storage "0"}`.
fn one_tensor(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    P::new().dict_start().str("w").tensor("FloatStorage", "0", numel, offset, size, stride).dict_end()
}

fn f32_bytes(vs: &[f32]) -> Vec<u8> {
    vs.iter().flat_map(|v| v.to_le_bytes()).collect()
}

// --- real torch.save files (tools/make_pytorch_testdata.py) ---

fn check_mixed(file: &[u8]) {
    let ts = read_state_dict(file).unwrap();
    let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w_f32", "w_f16", "w_bf16", "scalar", "view_a", "view_b", "empty"]);

    let t = find(&ts, "w_f32");
    assert_eq!((t.dtype, t.shape.as_slice()), (DType::F32, &[2, 3][..]));
    assert_eq!(f32s(file, t), [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);

    let t = find(&ts, "w_f16");
    assert_eq!((t.dtype, t.shape.as_slice()), (DType::F16, &[3][..]));
    assert_eq!(halves(file, t), [1.5, -2.0, 0.25]);

    let t = find(&ts, "w_bf16");
    assert_eq!((t.dtype, t.shape.as_slice()), (DType::BF16, &[2, 2][..]));
    assert_eq!(halves(file, t), [1.0, -1.5, 3.0, 0.125]);

    let t = find(&ts, "scalar");
    assert_eq!((t.dtype, t.shape.as_slice()), (DType::F32, &[][..]));
    assert_eq!(f32s(file, t), [3.25]);

    // Two views of one arange(10) storage, at element offsets 2 and 5.
    let a = find(&ts, "view_a");
    let b = find(&ts, "view_b");
    assert_eq!(a.shape, [4]);
    assert_eq!(b.shape, [2, 2]);
    assert_eq!(f32s(file, a), [2.0, 3.0, 4.0, 5.0]);
    assert_eq!(f32s(file, b), [5.0, 6.0, 7.0, 8.0]);
    assert_eq!(b.data.start - a.data.start, 3 * 4);

    let t = find(&ts, "empty");
    assert_eq!(t.shape, [0, 3]);
    assert!(t.data.is_empty());
}

#[test]
fn real_mixed_dtypes_scalar_shared_storage() {
    check_mixed(&testdata!("mixed.bin"));
}

#[test]
fn real_protocol4_pickle() {
    check_mixed(&testdata!("mixed_proto4.bin"));
}

#[test]
fn real_module_state_dict_with_metadata_build() {
    let file = testdata!("module_f16.bin");
    let ts = read_state_dict(&file).unwrap();
    let got: Vec<(&str, DType, &[usize])> = ts.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice())).collect();
    assert_eq!(
        got,
        [
            ("0.weight", DType::F16, &[3, 2][..]),
            ("0.bias", DType::F16, &[3][..]),
            ("1.weight", DType::F16, &[3][..]),
            ("1.bias", DType::F16, &[3][..]),
        ]
    );
    assert_eq!(halves(&file, &ts[0]), [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]);
    assert_eq!(halves(&file, &ts[1]), [-1.0, 0.0, 1.0]);
    assert_eq!(halves(&file, &ts[2]), [2.0, 4.0, 8.0]);
    assert_eq!(halves(&file, &ts[3]), [0.5, 0.75, 1.0]);
}

#[test]
fn real_transposed_tensor_is_refused() {
    let err = read_state_dict(&testdata!("transposed.bin")).unwrap_err();
    assert!(matches!(&err, PytorchError::NonContiguous(n) if n == "t"), "{err}");
}

#[test]
fn real_deflated_archive_is_refused() {
    let err = read_state_dict(&testdata!("deflated.bin")).unwrap_err();
    assert!(matches!(&err, PytorchError::CompressedEntry(n) if n.starts_with("mixed/")), "{err}");
}

#[test]
fn legacy_non_zip_format_is_refused() {
    let err = read_state_dict(&testdata!("legacy.bin")).unwrap_err();
    assert!(matches!(err, PytorchError::NotZip), "{err}");
}

// --- archive-level errors ---

#[test]
fn empty_and_random_files_are_not_zip() {
    assert!(matches!(read_state_dict(&[]), Err(PytorchError::NotZip)));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert!(matches!(read_state_dict(&random), Err(PytorchError::NotZip)));
    // Zip magic followed by garbage.
    let mut fake = b"PK\x03\x04".to_vec();
    fake.extend_from_slice(&random);
    assert!(matches!(read_state_dict(&fake), Err(PytorchError::BadArchive(_))));
}

#[test]
fn zip_without_data_pkl() {
    let file = zip(&[("archive/version", b"3\n"), ("archive/data/0", &[0; 4])]);
    assert!(matches!(read_state_dict(&file), Err(PytorchError::NoDataPkl)));
    // data.pkl must sit in a top folder, not at the root.
    let file = zip(&[("data.pkl", b"\x80\x02}.")]);
    assert!(matches!(read_state_dict(&file), Err(PytorchError::NoDataPkl)));
}

#[test]
fn two_data_pkl_entries_are_ambiguous() {
    let pkl = P::new().dict_start().dict_end();
    let file = zip(&[("a/data.pkl", &pkl), ("b/data.pkl", &pkl)]);
    assert!(matches!(read_state_dict(&file), Err(PytorchError::BadArchive(_))));
}

#[test]
fn big_endian_is_refused() {
    let pkl = P::new().dict_start().dict_end();
    let file = zip(&[("archive/data.pkl", &pkl), ("archive/byteorder", b"big")]);
    assert!(matches!(read_state_dict(&file), Err(PytorchError::BigEndian)));
}

#[test]
fn any_top_folder_name_and_no_byteorder() {
    let pkl = one_tensor(2, 0, &[2], &[1]);
    let data = f32_bytes(&[7.0, 8.0]);
    let file = zip(&[("pytorch_model/data.pkl", &pkl), ("pytorch_model/data/0", &data)]);
    let ts = read_state_dict(&file).unwrap();
    assert_eq!(ts.len(), 1);
    assert_eq!(f32s(&file, &ts[0]), [7.0, 8.0]);
}

// --- malicious pickles ---

fn forbidden(pkl: &[u8], module: &str, name: &str) {
    let err = read_state_dict(&archive(pkl, &[])).unwrap_err();
    assert!(matches!(&err, PytorchError::ForbiddenGlobal { module: m, name: n } if m == module && n == name), "{err}");
}

#[test]
fn python_reduce_exploits_are_refused() {
    // pickle.dumps(obj, protocol=2) where obj.__reduce__ returns (os.system, ("echo pwned",)).
    forbidden(b"\x80\x02cposix\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.", "posix", "system");
    // Same with builtins.eval (protocol 2 spells it __builtin__).
    forbidden(
        b"\x80\x02c__builtin__\neval\nq\x00X%\x00\x00\x00__import__('os').system('echo pwned')q\x01\x85q\x02Rq\x03.",
        "__builtin__",
        "eval",
    );
    forbidden(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.", "os", "system");
    forbidden(b"\x80\x02csubprocess\nPopen\nX\x02\x00\x00\x00id\x85R.", "subprocess", "Popen");
    // Protocol 4 STACK_GLOBAL route.
    forbidden(b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x85R.", "builtins", "eval");
    // Not needed by plain state dicts, so not allowed either.
    forbidden(
        &P::new().global("torch._utils", "_rebuild_parameter").op(b")R.").done(),
        "torch._utils",
        "_rebuild_parameter",
    );
    // Inside an otherwise valid state dict: refused at the GLOBAL, before any call.
    let pkl = P::new().dict_start().str("w").global("os", "system").str("id").op(&[0x85]).op(b"R").dict_end();
    forbidden(&pkl, "os", "system");
}

#[test]
fn allowed_but_wrong_callables_are_refused() {
    // A storage class is allowed as a type tag, never as a function.
    let pkl = P::new().global("torch", "FloatStorage").op(b")R.").done();
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::ForbiddenCall(_)), "{err}");
    // Calling a non-global (a string).
    let pkl = P::new().str("os.system").op(b")R.").done();
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::ForbiddenCall(_)), "{err}");
    // OrderedDict with arguments is not what torch writes.
    let pkl = P::new().global("collections", "OrderedDict").op(b"]").op(&[0x85]).op(b"R.").done();
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
}

#[test]
fn unsupported_opcode_is_named() {
    // INST (`i`) can instantiate arbitrary classes.
    let pkl = b"\x80\x02(ios\nsystem\n.";
    let err = read_state_dict(&archive(pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::UnsupportedOpcode { opcode: b'i', offset: 3 }), "{err}");
}

#[test]
fn truncated_pickles_are_errors() {
    let data = f32_bytes(&[1.0, 2.0]);
    let pkl = one_tensor(2, 0, &[2], &[1]);
    assert!(read_state_dict(&archive(&pkl, &[("0", &data)])).is_ok());
    for cut in 0..pkl.len() {
        let err = read_state_dict(&archive(&pkl[..cut], &[("0", &data)])).unwrap_err();
        assert!(matches!(err, PytorchError::Truncated), "cut {cut}: {err}");
    }
    // A string length running past the end.
    let err = read_state_dict(&archive(b"\x80\x02X\xff\xff\xff\x7fab", &[])).unwrap_err();
    assert!(matches!(err, PytorchError::Truncated), "{err}");
}

#[test]
fn top_level_must_be_a_dict_of_tensors() {
    let err = read_state_dict(&archive(b"\x80\x02]q\x00(K\x01K\x02e.", &[])).unwrap_err();
    assert!(matches!(&err, PytorchError::NotStateDict(m) if m.contains("list")), "{err}");
    let pkl = P::new().dict_start().str("w").int(3).dict_end();
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(&err, PytorchError::NotStateDict(m) if m.contains("int")), "{err}");
    // A training checkpoint ({'model': {...}}) is not a state dict either.
    let pkl = P::new().dict_start().str("model").op(b"}").dict_end();
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::NotStateDict(_)), "{err}");
}

#[test]
fn missing_storage() {
    let pkl = P::new().dict_start().str("w").tensor("FloatStorage", "7", 1, 0, &[1], &[1]).dict_end();
    let data = f32_bytes(&[1.0]);
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(&err, PytorchError::MissingStorage(k) if k == "7"), "{err}");
}

#[test]
fn size_overflow() {
    let data = f32_bytes(&[1.0]);
    let big = 1i64 << 62;
    let pkl = one_tensor(1, 0, &[big, big], &[big, 1]);
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(&err, PytorchError::SizeOverflow { name } if name == "w"), "{err}");
    // numel fits but bytes do not.
    let pkl = one_tensor(1, 0, &[big], &[1]);
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(err, PytorchError::SizeOverflow { .. }), "{err}");
    // Storage offset in bytes overflows.
    let pkl = one_tensor(1, i64::MAX, &[1], &[1]);
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(err, PytorchError::SizeOverflow { .. }), "{err}");
    // Negative sizes never reach the arithmetic.
    let pkl = one_tensor(1, 0, &[-1], &[1]);
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
}

#[test]
fn storage_too_short_for_tensor() {
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    // Storage of 4 floats, tensor wants elements 2..6.
    let pkl = one_tensor(4, 2, &[4], &[1]);
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(
        matches!(&err, PytorchError::OutOfBounds { name, start: 8, end: 24, storage_len: 16 } if name == "w"),
        "{err}"
    );
    // The pickle claims 100 floats but the entry holds 4.
    let pkl = one_tensor(100, 0, &[4], &[1]);
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(&err, PytorchError::StorageTooShort { key, declared: 400, actual: 16 } if key == "0"), "{err}");
    // In bounds at the very end is fine.
    let pkl = one_tensor(4, 2, &[2], &[1]);
    let file = archive(&pkl, &[("0", &data)]);
    let ts = read_state_dict(&file).unwrap();
    assert_eq!(f32s(&file, &ts[0]), [3.0, 4.0]);
}

#[test]
fn strides_contiguity() {
    let data = f32_bytes(&[0.0; 6]);
    let ok = |size: &[i64], stride: &[i64]| read_state_dict(&archive(&one_tensor(6, 0, size, stride), &[("0", &data)]));
    assert!(ok(&[2, 3], &[3, 1]).is_ok());
    // Size-1 dims may have any stride (torch writes such strides for unsqueezed views).
    assert!(ok(&[2, 1, 3], &[3, 99, 1]).is_ok());
    assert!(ok(&[], &[]).is_ok());
    assert!(matches!(ok(&[2, 3], &[1, 2]), Err(PytorchError::NonContiguous(_))));
    assert!(matches!(ok(&[3, 2], &[2, 2]), Err(PytorchError::NonContiguous(_))));
    assert!(matches!(ok(&[2, 3], &[3]), Err(PytorchError::BadPickle { .. })));
}

#[test]
fn views_with_conflicting_dtypes_or_names() {
    let data = f32_bytes(&[1.0, 2.0]);
    let pkl = P::new()
        .dict_start()
        .str("a")
        .tensor("FloatStorage", "0", 2, 0, &[2], &[1])
        .str("b")
        .tensor("HalfStorage", "0", 4, 0, &[4], &[1])
        .dict_end();
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(err, PytorchError::StorageDtypeConflict(_)), "{err}");

    let pkl = P::new()
        .dict_start()
        .str("a")
        .tensor("FloatStorage", "0", 2, 0, &[1], &[1])
        .str("a")
        .tensor("FloatStorage", "0", 2, 1, &[1], &[1])
        .dict_end();
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(&err, PytorchError::DuplicateName(n) if n == "a"), "{err}");
}

#[test]
fn bad_persistent_ids_and_build_states() {
    // A persistent id that is not a storage reference.
    let pkl = P::new().str("storage").op(b"Q.").done();
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
    // BUILD with a tuple state (slot state) is not something a state dict needs.
    let pkl = P::new().dict_start().op(b"u").op(b")b.").done();
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
    // Tensor metadata with the neg bit set would change the values.
    let pkl = P::new()
        .dict_start()
        .str("w")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"(")
        .storage("FloatStorage", "0", 1)
        .int(0)
        .ints(&[1])
        .ints(&[1])
        .op(&[0x89])
        .op(b"}")
        .op(b"}")
        .str("neg")
        .op(&[0x88])
        .op(b"s")
        .op(b"tR")
        .dict_end();
    let data = f32_bytes(&[1.0]);
    let err = read_state_dict(&archive(&pkl, &[("0", &data)])).unwrap_err();
    assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
}

#[test]
fn limits_hold() {
    // Deep nesting: () wrapped in TUPLE1 again and again.
    let mut pkl = b"\x80\x02)".to_vec();
    pkl.extend(std::iter::repeat_n(0x85u8, 100));
    pkl.push(b'.');
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::LimitExceeded(_)), "{err}");

    // Too many open MARKs.
    let mut pkl = b"\x80\x02".to_vec();
    pkl.extend(std::iter::repeat_n(b'(', 1000));
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::LimitExceeded(_)), "{err}");

    // Memoizing a dict before every SETITEM forces a copy each time: quadratic work,
    // which the slot budget stops.
    let mut pkl = b"\x80\x02}".to_vec();
    for i in 0..5000u16 {
        pkl.extend_from_slice(b"q\x00M");
        pkl.extend_from_slice(&i.to_le_bytes());
        pkl.extend_from_slice(b"Ns");
    }
    pkl.push(b'.');
    let err = read_state_dict(&archive(&pkl, &[])).unwrap_err();
    assert!(matches!(err, PytorchError::LimitExceeded(_)), "{err}");

    // Memo gets of a missing index, underflow past a MARK.
    let err = read_state_dict(&archive(b"\x80\x02h\x05.", &[])).unwrap_err();
    assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
    let err = read_state_dict(&archive(b"\x80\x02N(\x85.", &[])).unwrap_err();
    assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
    // Absolute caps, each reached with a small input (unzipped, to keep debug runs fast).
    let mut pkl = b"\x80\x02".to_vec();
    pkl.extend(std::iter::repeat_n(b'N', MAX_STACK + 1));
    let err = Unpickler::new(&pkl).run().unwrap_err();
    assert!(matches!(err, PytorchError::LimitExceeded(m) if m.contains("stack")), "{err}");
    let mut pkl = b"\x80\x02N".to_vec();
    pkl.extend(std::iter::repeat_n(0x94, MAX_MEMO + 1));
    let err = Unpickler::new(&pkl).run().unwrap_err();
    assert!(matches!(err, PytorchError::LimitExceeded(m) if m.contains("memo")), "{err}");
    let mut pkl = b"\x80\x02]".to_vec();
    for _ in 0..=MAX_SLOTS / 1000 {
        pkl.push(b'(');
        pkl.extend(std::iter::repeat_n(b'N', 1000));
        pkl.push(b'e');
    }
    let err = Unpickler::new(&pkl).run().unwrap_err();
    assert!(matches!(err, PytorchError::LimitExceeded(m) if m.contains("items")), "{err}");

    // A sparse memo key cannot inflate the memo table.
    let err = Unpickler::new(b"\x80\x02Nr\xff\xff\xff\xff.").run().unwrap_err();
    assert!(matches!(err, PytorchError::LimitExceeded(_)), "{err}");

    // Over-wide LONG1.
    let err = read_state_dict(&archive(b"\x80\x02\x8a\x09123456789.", &[])).unwrap_err();
    assert!(matches!(err, PytorchError::BadPickle { .. }), "{err}");
}

#[test]
fn mutated_files_never_panic() {
    let originals = [testdata!("mixed.bin"), testdata!("module_f16.bin")];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut ok, mut err) = (0, 0);
    for i in 0..2000 {
        let mut file = originals[i % 2].clone();
        let pkl = Archive::open(&&file[..]).unwrap().pickle;
        for _ in 0..1 + next() % 8 {
            // Half the hits go into data.pkl so the unpickler sees most of them.
            let pos = if next() % 2 == 0 {
                pkl.start + (next() as usize) % pkl.len()
            } else {
                (next() as usize) % file.len()
            };
            file[pos] = match next() % 3 {
                0 => file[pos] ^ (1 << (next() % 8)),
                1 => next() as u8,
                _ => [0x00, 0x7f, 0x80, 0xff][(next() % 4) as usize],
            };
        }
        if next() % 8 == 0 {
            file.truncate((next() as usize) % file.len());
        }
        match read_state_dict(&file) {
            Ok(ts) => {
                ok += 1;
                for t in ts {
                    assert!(t.data.end <= file.len());
                }
            }
            Err(_) => err += 1,
        }
    }
    // Both outcomes must occur, or the mutations are not reaching anything.
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}
