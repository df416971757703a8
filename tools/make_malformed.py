"""Writes tests/malformed/: one malformed model file per case, plus cases.json (read by tests/malformed.rs).

    python3 tools/make_malformed.py           # from the repository root; standard library only, deterministic

Every case is a single file that replaces one file of the valid fixture tests/fixtures/l2_norm_gelu/ (config.json,
pytorch_model.bin or model.safetensors, tokenizer.json). cases.json lists

    {"file": "<name>", "role": "weights" | "config" | "tokenizer", "error": "<substring of the expected message>"}

and, for a case whose message is not yet what it should be, "known_failure": true (the test skips it, loudly).
Weights cases are loaded as model.safetensors or pytorch_model.bin according to their extension.

Real tensor values come from the fixture's pytorch_model.bin, read with a restricted pickle.Unpickler (only the five
globals a state dict needs); the malformed pickles are written opcode by opcode. Files are kept tiny (the whole folder
is well under 300 KB): a case carries only the tensors needed to reach its error.
"""

import collections
import io
import json
import os
import pickle
import random
import shutil
import struct
import warnings
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "l2_norm_gelu")
OUT = os.path.join(REPO, "tests", "malformed")

CASES = []


def case(file, role, error, data, known_failure=False, note=None):
    """Records one case and its bytes (str is written as UTF-8)."""
    assert not any(c["file"] == file for c in CASES), file
    entry = {"file": file, "role": role, "error": error}
    if known_failure:
        entry["known_failure"] = True
    if note:
        entry["note"] = note
    CASES.append(entry)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(OUT, file), "wb") as f:
        f.write(data)


# ------------------------------------------------------------------------------ reading the valid fixture


def read_fixture_tensors():
    """name -> (shape, list of floats) from the fixture's pytorch_model.bin (f32 storages, contiguous)."""

    def rebuild(storage, offset, size, stride, requires_grad, hooks, metadata=None):
        return {"storage": storage, "offset": offset, "shape": tuple(size), "stride": tuple(stride)}

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if module == "torch" and name == "FloatStorage":
                return name
            raise pickle.UnpicklingError(f"global {module}.{name} refused")

        def persistent_load(self, pid):
            tag, cls, key, _location, numel = pid
            assert tag == "storage" and cls == "FloatStorage"
            return (key, numel)

    with zipfile.ZipFile(os.path.join(FIXTURE, "pytorch_model.bin")) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        state = Restricted(io.BytesIO(z.read(pkl))).load()
        out = collections.OrderedDict()
        for name, t in state.items():
            key, _numel = t["storage"]
            raw = z.read(f"{prefix}data/{key}")
            n = 1
            for d in t["shape"]:
                n *= d
            values = struct.unpack_from(f"<{n}f", raw, 4 * t["offset"])
            out[name] = (list(t["shape"]), list(values))
    return out


# ------------------------------------------------------------------------------ safetensors


def f32_bytes(values):
    return struct.pack(f"<{len(values)}f", *values)


def f16_bytes(values):
    return struct.pack(f"<{len(values)}e", *values)


def bf16_bytes(values):
    return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in values)


def safetensors(tensors):
    """tensors: [(name, dtype, shape, bytes)] laid out back to back in that order."""
    header, at, data = {}, 0, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(raw)]}
        at += len(raw)
        data += raw
    return raw_safetensors(json.dumps(header, separators=(",", ":")), data)


def raw_safetensors(header, data=b"", length=None):
    """A safetensors file with `header` (str) verbatim and an optional lying `length`."""
    h = header.encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def weights_cases(real):
    emb_shape, emb = real["sequential.0.word_embeddings.weight"]
    d = emb_shape[1]
    norm_w = real[f"sequential.{3 + 3}.norm.weight"][1]
    norm_b = real[f"sequential.{3 + 3}.norm.bias"][1]
    row = emb[:d]  # one real embedding row
    w = "weights"

    small = safetensors([("final_norm.weight", "F32", [d], f32_bytes(norm_w))])

    case("st_empty.safetensors", w, "weights file is empty", b"")
    case("st_5_bytes.safetensors", w, "neither a PyTorch zip archive nor safetensors: 5 bytes", b"\x05\0\0\0\0")
    case(
        "st_random_bytes.safetensors",
        w,
        "neither a PyTorch zip archive nor safetensors: 4096 bytes",
        random.Random(7).randbytes(4096),
    )
    case(
        "st_header_len_2pow63.safetensors",
        w,
        "header of 9223372036854775808 bytes does not fit in the 10-byte file",
        raw_safetensors("{}", length=1 << 63),
    )
    case(
        "st_header_len_past_end.safetensors",
        w,
        "header of 1000 bytes does not fit in the",
        raw_safetensors('{"final_norm.weight":{}}', length=1000),
    )
    case(
        "st_header_not_json.safetensors",
        w,
        "safetensors: invalid header: key must be a string",
        raw_safetensors("{not json at all}"),
    )
    case(
        "st_header_invalid_utf8.safetensors",
        w,
        "safetensors: invalid header",
        struct.pack("<Q", 8) + b'{"\xff\xfe":1}',
    )
    case(
        "st_header_wrong_schema.safetensors",
        w,
        'tensor "final_norm.weight": invalid record',
        raw_safetensors('{"final_norm.weight":{"dtype":"F32","shape":"72"}}'),
    )
    case("st_truncated.safetensors", w, "the tensors end at byte", small[:-5])
    case("st_padded.safetensors", w, "(truncated or padded)", small + b"\0" * 16)
    case(
        "st_shape_overflow.safetensors",
        w,
        'tensor "final_norm.weight": shape [4611686018427387904, 4611686018427387904] does not match bytes 0..288',
        raw_safetensors(
            '{"final_norm.weight":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],'
            '"data_offsets":[0,288]}}',
            f32_bytes(norm_w),
        ),
    )
    case(
        "st_shape_vs_bytes.safetensors",
        w,
        'tensor "final_norm.weight": shape [71] does not match bytes 0..288',
        raw_safetensors(
            '{"final_norm.weight":{"dtype":"F32","shape":[71],"data_offsets":[0,288]}}', f32_bytes(norm_w)
        ),
    )
    case(
        "st_offsets_gap.safetensors",
        w,
        'tensor "final_norm.bias" starts at byte',
        raw_safetensors(
            '{"final_norm.weight":{"dtype":"F32","shape":[72],"data_offsets":[0,288]},'
            '"final_norm.bias":{"dtype":"F32","shape":[72],"data_offsets":[292,580]}}',
            f32_bytes(norm_w) + b"\0" * 4 + f32_bytes(norm_b),
        ),
    )
    case(
        "st_offsets_overlap.safetensors",
        w,
        'tensor "final_norm.bias" starts at byte',
        raw_safetensors(
            '{"final_norm.weight":{"dtype":"F32","shape":[72],"data_offsets":[0,288]},'
            '"final_norm.bias":{"dtype":"F32","shape":[72],"data_offsets":[144,432]}}',
            f32_bytes(norm_w) + f32_bytes(norm_b)[:144],
        ),
    )
    case(
        "st_dtype_i64.safetensors",
        w,
        "tensor embed.weight has dtype I64; supported: F32, F16, BF16",
        safetensors([("embed.weight", "I64", [1, d], struct.pack(f"<{d}q", *range(d)))]),
    )
    case(
        "st_dtype_unknown.safetensors",
        w,
        "tensor embed.weight has dtype Q4; supported: F32, F16, BF16",
        raw_safetensors('{"embed.weight":{"dtype":"Q4","shape":[72],"data_offsets":[0,36]}}', b"\0" * 36),
    )
    nan = row[:]
    nan[17] = float("nan")
    case(
        "st_nan.safetensors",
        w,
        "tensor embed.weight holds a non-finite value (NaN or infinity)",
        safetensors([("embed.weight", "F32", [1, d], f32_bytes(nan))]),
    )
    inf = row[:]
    inf[-1] = float("-inf")
    case(
        "st_infinity_bf16.safetensors",
        w,
        "tensor embed.weight holds a non-finite value (NaN or infinity)",
        safetensors([("embed.weight", "BF16", [1, d], bf16_bytes(inf))]),
    )
    big = row[:]
    big[3] = 1e6  # rounds to infinity in f16 (max 65504)
    case(
        "st_infinity_f16.safetensors",
        w,
        "tensor embed.weight holds a non-finite value (NaN or infinity)",
        safetensors([("embed.weight", "F16", [1, d], f16_bytes(big[:3]) + b"\x00\x7c" + f16_bytes(big[4:]))]),
    )
    case("st_missing_tensor.safetensors", w, "missing tensor embed.weight", small)
    case("st_no_tensors.safetensors", w, "missing tensor sequential.0.word_embeddings.weight", raw_safetensors("{}"))
    case(
        "st_unexpected_tensor.safetensors",
        w,
        "unexpected tensor blocks.3.query.key_param_tokens (not part of a TokenFormer model with this config)",
        safetensors(
            [
                ("embed.weight", "F32", [1, d], f32_bytes(row)),
                ("blocks.3.query.key_param_tokens", "F32", [1, d], f32_bytes(row)),
            ]
        ),
    )
    case(
        "st_untied_head.safetensors",
        w,
        "unexpected tensor lm_head.weight",
        safetensors(
            [("embed.weight", "F32", [1, d], f32_bytes(row)), ("lm_head.weight", "F32", [1, d], f32_bytes(row))]
        ),
    )
    case(
        "st_wrong_shape.safetensors",
        w,
        "tensor embed.weight has shape [8, 9], expected [rows, 72]",
        safetensors([("embed.weight", "F32", [8, 9], f32_bytes(row))]),
    )
    case(
        "st_wrong_rank.safetensors",
        w,
        "tensor embed.weight has shape [72], expected [rows, 72]",
        safetensors([("embed.weight", "F32", [d], f32_bytes(row))]),
    )
    case(
        "st_embedding_too_small.safetensors",
        w,
        "the tokenizer has 300 ids but the embedding has only 2 rows",
        safetensors([("embed.weight", "F16", [2, d], f16_bytes(emb[: 2 * d]))]),
    )
    case(
        "st_mixed_names.safetensors",
        w,
        "weights mix the authors' names (sequential.N...) with the project's names: embed.weight and "
        "sequential.6.norm.weight",
        safetensors(
            [
                ("embed.weight", "F32", [1, d], f32_bytes(row)),
                ("sequential.6.norm.weight", "F32", [d], f32_bytes(norm_w)),
            ]
        ),
    )
    case(
        "st_negative_dim.safetensors",
        w,
        "invalid value: integer `-1`",
        raw_safetensors('{"embed.weight":{"dtype":"F32","shape":[-1,72],"data_offsets":[0,288]}}', f32_bytes(row)),
    )
    case(
        "st_offsets_past_end.safetensors",
        w,
        "the tensors end at byte 1152921504606847084 but the file has 108 bytes",
        raw_safetensors(
            '{"embed.weight":{"dtype":"F32","shape":[288230376151711744],"data_offsets":[0,1152921504606846976]}}'
        ),
    )
    case(
        "st_metadata_not_strings.safetensors",
        w,
        "__metadata__ must map strings to strings",
        raw_safetensors('{"__metadata__":{"format":1}}'),
    )
    case(
        "st_zero_rows.safetensors",
        w,
        "tensor embed.weight has shape [0, 72], expected [rows, 72]",
        raw_safetensors('{"embed.weight":{"dtype":"F32","shape":[0,72],"data_offsets":[0,0]}}'),
    )
    case(
        "st_dtype_f4.safetensors",
        w,
        "tensor embed.weight has dtype F4; supported: F32, F16, BF16",
        raw_safetensors('{"embed.weight":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', b"\0\0"),
    )
    one = '{"dtype":"F32","shape":[1,72],"data_offsets":[0,288]}'
    case(
        "st_duplicate_name.safetensors",
        w,
        'tensor name "embed.weight" appears twice',
        raw_safetensors('{"embed.weight":%s,"embed.weight":%s}' % (one, one), f32_bytes(row)),
    )
    quantized_cases(d)


def q_blocks(fmt, rows, cols, nan_group=None):
    """Rows of quantized blocks (docs/formats.md, "Quantized weights (q8, q4)") standing for zeros: scale 0, quants 0; with `nan_group`,
    that group of the first row has a NaN scale."""
    size = {"q8": 34, "q4": 20}[fmt]
    data = bytearray(rows * -(-cols // 32) * size)
    if nan_group is not None:
        data[nan_group * size : nan_group * size + 2] = b"\x00\x7e"  # f16 NaN
    return bytes(data)


def quantized_cases(d):
    """Quantized matrices (NAME.q8 / NAME.q4, U8 rows of blocks) that the reader or the model refuses."""
    w = "weights"
    q4_row = -(-d // 32) * 20
    case(
        "st_q4_not_u8.safetensors",
        w,
        'tensor "blocks.0.query.key_param_tokens.q4": q4 blocks are stored as U8, not F16',
        safetensors([("blocks.0.query.key_param_tokens.q4", "F16", [37, d], f16_bytes([0.0] * 37 * d))]),
    )
    case(
        "st_u8_without_format.safetensors",
        w,
        "tensor embed.weight has dtype U8; supported: F32, F16, BF16, and U8 blocks named NAME.q8 or NAME.q4",
        safetensors([("embed.weight", "U8", [1, d], bytes(d))]),
    )
    case(
        "st_q4_partial_block.safetensors",
        w,
        "is not [rows, bytes per row] of whole 20-byte q4 blocks",
        safetensors([("blocks.0.query.key_param_tokens.q4", "U8", [37, q4_row - 7], bytes(37 * (q4_row - 7)))]),
    )
    case(
        "st_q4_too_few_groups.safetensors",
        w,
        "tensor blocks.0.query.key_param_tokens has shape [37, 64], expected [37, 72 (or its 32-value groups)]",
        safetensors(
            [
                ("embed.weight.q4", "U8", [300, q4_row], q_blocks("q4", 300, d)),
                ("blocks.0.query.key_param_tokens.q4", "U8", [37, 40], q_blocks("q4", 37, 64)),
            ]
        ),
    )
    case(
        "st_q8_values_not_transposed.safetensors",
        w,
        "tensor blocks.0.query.value_param_tokens has shape [37, 96], expected [72, 37 (or its 32-value groups)] "
        "(values quantized as Vᵀ)",
        safetensors(
            [
                ("embed.weight.q4", "U8", [300, q4_row], q_blocks("q4", 300, d)),
                ("blocks.0.query.key_param_tokens.q8", "U8", [37, 102], q_blocks("q8", 37, d)),
                ("blocks.0.query.value_param_tokens.q8", "U8", [37, 102], q_blocks("q8", 37, d)),
            ]
        ),
    )
    # A whole model (every matrix q4, zeros) but one group of the first key matrix has a NaN scale.
    slots = {"query": 37, "key": 37, "value": 37, "proj": 29, "ffn": 83}
    tensors = [("embed.weight.q4", "U8", [320, q4_row], q_blocks("q4", 320, d))]
    for j in range(3):
        for p, n in slots.items():
            nan = 1 if (j, p) == (0, "query") else None
            keys = q_blocks("q4", n, d, nan)
            tensors.append((f"blocks.{j}.{p}.key_param_tokens.q4", "U8", [n, q4_row], keys))
            values = q_blocks("q4", d, n)
            tensors.append((f"blocks.{j}.{p}.value_param_tokens.q4", "U8", [d, len(values) // d], values))
    tensors += [("final_norm.weight", "F32", [d], f32_bytes([1.0] * d)), ("final_norm.bias", "F32", [d], bytes(4 * d))]
    case(
        "st_q4_nan_scale.safetensors",
        w,
        "tensor blocks.0.query.key_param_tokens.q4: row 0: group 1 has a NaN or infinite scale or minimum",
        safetensors(tensors),
    )


# ------------------------------------------------------------------------------ pytorch_model.bin


def X(s):
    """BINUNICODE."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def INT(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    return b"\x8a\x08" + struct.pack("<q", n)  # LONG1


def GLOBAL(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def TUPLE(items):
    return b"(" + b"".join(items) + b"t"


def storage(key, numel, cls="FloatStorage"):
    """torch's persistent id ('storage', cls, key, 'cpu', numel), loaded by BINPERSID."""
    return TUPLE([X("storage"), GLOBAL("torch", cls), X(key), X("cpu"), INT(numel)]) + b"Q"


def tensor(stor, offset, shape, stride):
    """_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    args = [
        stor,
        INT(offset),
        TUPLE([INT(s) for s in shape]),
        TUPLE([INT(s) for s in stride]),
        b"\x89",
        GLOBAL("collections", "OrderedDict") + b")R",
    ]
    return GLOBAL("torch._utils", "_rebuild_tensor_v2") + TUPLE(args) + b"R"


def contiguous(shape):
    stride, acc = [], 1
    for s in reversed(shape):
        stride.insert(0, acc)
        acc *= s
    return stride


def state_dict(items):
    """OrderedDict() filled by one SETITEMS; items are (name, pickled tensor)."""
    body = b"".join(X(name) + t for name, t in items)
    return b"\x80\x02" + GLOBAL("collections", "OrderedDict") + b")R(" + body + b"u."


def archive(pkl, storages=(), byteorder=b"little", extra=(), compress=()):
    """A torch.save-like zip under archive/, stored (uncompressed) unless the name is in `compress`;
    no data.pkl entry if `pkl` is None."""
    entries = [] if pkl is None else [("archive/data.pkl", pkl)]
    if byteorder is not None:
        entries.append(("archive/byteorder", byteorder))
    entries += [(f"archive/data/{k}", v) for k, v in storages]
    entries.append(("archive/version", b"3\n"))
    entries += list(extra)
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as z:
        warnings.simplefilter("ignore")  # "Duplicate name", on purpose in one case
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED
            z.writestr(info, data)
    return buf.getvalue()


def patch_central(zip_bytes, name, field, value):
    """Overwrites a 4-byte field of `name`'s central directory record (20: compressed size, 24: size, 42: local
    header offset)."""
    z = bytearray(zip_bytes)
    i = z.index(b"PK\x01\x02")
    while z[i + 46 : i + 46 + struct.unpack_from("<H", z, i + 28)[0]] != name.encode():
        i = z.index(b"PK\x01\x02", i + 4)
    struct.pack_into("<I", z, i + field, value)
    return bytes(z)


def pytorch_cases(real):
    emb_shape, emb = real["sequential.0.word_embeddings.weight"]
    d = emb_shape[1]
    w = "weights"
    EMB = "sequential.0.word_embeddings.weight"

    def one_tensor(name=EMB, shape=(2, 72), numel=None, stride=None, offset=0, cls="FloatStorage", data=None):
        n = shape[0] * shape[1] if len(shape) == 2 else shape[0]
        raw = f32_bytes(emb[:n]) if data is None else data
        stor = storage("0", n if numel is None else numel, cls)
        return state_dict([(name, tensor(stor, offset, shape, contiguous(shape) if stride is None else stride))]), raw

    good_pkl, good_raw = one_tensor()
    # Sanity: a well-formed small archive really is well formed (it fails only on the embedding size).
    case(
        "pt_embedding_too_small.bin",
        w,
        "the tokenizer has 300 ids but the embedding has only 2 rows",
        archive(good_pkl, [("0", good_raw)]),
    )
    case(
        "pt_empty_state_dict.bin",
        w,
        "missing tensor sequential.0.word_embeddings.weight",
        archive(state_dict([])),
    )

    fixture = open(os.path.join(FIXTURE, "pytorch_model.bin"), "rb").read()
    case("pt_truncated_zip.bin", w, "pytorch_model.bin: malformed zip archive", fixture[:2048])
    case(
        "pt_no_data_pkl.bin",
        w,
        "archive has no <folder>/data.pkl entry, so it is not a torch.save checkpoint",
        archive(None, [("0", good_raw)], extra=[("archive/data.pickle", good_pkl)]),
    )
    case(
        "pt_deflated_entry.bin",
        w,
        "zip entry archive/data/0 is compressed or encrypted; torch.save stores entries uncompressed",
        archive(good_pkl, [("0", good_raw)], compress={"archive/data/0"}),
    )
    case(
        "pt_big_endian.bin",
        w,
        "checkpoint was written big-endian; only little-endian checkpoints are supported",
        archive(good_pkl, [("0", good_raw)], byteorder=b"big"),
    )
    case(
        "pt_unknown_byteorder.bin",
        w,
        "unknown byteorder",
        archive(good_pkl, [("0", good_raw)], byteorder=b"middle"),
    )
    case(
        "pt_duplicate_zip_entry.bin",
        w,
        "duplicate entry names",
        archive(good_pkl, [("0", good_raw), ("0", good_raw)]),
    )
    case(
        "pt_two_data_pkl.bin",
        w,
        "several data.pkl entries",
        archive(good_pkl, [("0", good_raw)], extra=[("other/data.pkl", good_pkl)]),
    )
    # The classic exploit: os.system("...") via GLOBAL + REDUCE.
    evil = b"\x80\x02" + GLOBAL("posix", "system") + X("echo pwned > /tmp/tokenformer-pwned") + b"\x85R."
    case(
        "pt_forbidden_global_posix_system.bin",
        w,
        "pickle references forbidden global posix.system; only plain tensor state dicts are accepted",
        archive(evil),
    )
    # Protocol 4 spelling: STACK_GLOBAL builtins.eval.
    body4 = b"\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x15print('pwned') or {}\x94\x85\x94R\x94."
    evil4 = b"\x80\x04\x95" + struct.pack("<Q", len(body4)) + body4
    case(
        "pt_forbidden_global_builtins_eval.bin",
        w,
        "pickle references forbidden global builtins.eval",
        archive(evil4),
    )
    case(
        "pt_forbidden_call.bin",
        w,
        "pickle calls torch storage class (F32), which is not an allowed callable",
        archive(b"\x80\x02" + GLOBAL("torch", "FloatStorage") + b")R."),
    )
    # NEWOBJ (0x81), which a state dict never needs.
    case(
        "pt_unsupported_opcode.bin",
        w,
        "unsupported pickle opcode 0x81 at offset 28",
        archive(b"\x80\x02" + GLOBAL("collections", "OrderedDict") + b")\x81."),
    )
    deep = 40
    case(
        "pt_nesting_too_deep.bin",
        w,
        "pickle exceeds a safety limit: nesting too deep",
        archive(b"\x80\x02" + b"]" * deep + b"a" * (deep - 1) + b"."),
    )
    case(
        "pt_too_many_marks.bin",
        w,
        "pickle exceeds a safety limit: too many nested MARKs",
        archive(b"\x80\x02" + b"(" * 100 + b"t" * 100 + b"."),
    )
    case("pt_truncated_pickle.bin", w, "pickle is truncated", archive(good_pkl[: len(good_pkl) // 2]))
    case(
        "pt_not_a_dict.bin",
        w,
        "pickle is not a state dict of tensors: the top-level object is a list, not a dict",
        archive(b"\x80\x02]."),
    )
    case(
        "pt_value_not_tensor.bin",
        w,
        'pickle is not a state dict of tensors: entry "sequential.0.word_embeddings.weight" is a int, not a tensor',
        archive(b"\x80\x02" + GLOBAL("collections", "OrderedDict") + b")R" + X(EMB) + INT(7) + b"s."),
    )
    pkl, raw = one_tensor(numel=2 * d)
    case(
        "pt_storage_too_short.bin",
        w,
        'storage "0" declares 576 bytes but its zip entry holds 16',
        archive(pkl, [("0", raw[:16])]),
    )
    pkl, raw = one_tensor(stride=(1, 2))
    case(
        "pt_non_contiguous.bin",
        w,
        'tensor "sequential.0.word_embeddings.weight" is not contiguous; only contiguous tensors are supported',
        archive(pkl, [("0", raw)]),
    )
    pkl, raw = one_tensor(offset=100)
    case(
        "pt_out_of_bounds.bin",
        w,
        'tensor "sequential.0.word_embeddings.weight": bytes 400..976 lie outside its storage of 576 bytes',
        archive(pkl, [("0", raw)]),
    )
    pkl, raw = one_tensor(shape=(1 << 40, 1 << 40), numel=2 * d)
    case(
        "pt_size_overflow.bin",
        w,
        'tensor "sequential.0.word_embeddings.weight": its size in bytes overflows usize',
        archive(pkl, [("0", good_raw)]),
    )
    case(
        "pt_missing_storage.bin",
        w,
        'storage "0" referenced by the pickle is not in the archive',
        archive(good_pkl),
    )
    t = tensor(storage("0", 2 * d), 0, (2, d), (d, 1))
    case(
        "pt_duplicate_name.bin",
        w,
        'tensor name "sequential.0.word_embeddings.weight" appears twice',
        archive(state_dict([(EMB, t), (EMB, t)]), [("0", good_raw)]),
    )
    t16 = tensor(storage("0", 2 * d, "HalfStorage"), 0, (d,), (1,))
    case(
        "pt_storage_dtype_conflict.bin",
        w,
        'storage "0" is referenced with two different dtypes',
        archive(state_dict([(EMB, t), ("sequential.6.norm.weight", t16)]), [("0", good_raw)]),
    )
    case(
        "pt_negative_stride.bin",
        w,
        "_rebuild_tensor_v2: negative offset, size or stride",
        archive(state_dict([(EMB, tensor(storage("0", 2 * d), 0, (2, d), (-d, 1)))]), [("0", good_raw)]),
    )
    a = archive(good_pkl, [("0", good_raw)])
    case(
        "pt_stored_sizes_disagree.bin",
        w,
        "stored entry archive/data/0 has inconsistent sizes",
        patch_central(a, "archive/data/0", 24, 100),
    )
    case(
        "pt_entry_past_end.bin",
        w,
        "entry archive/data/0 extends past the end of the file",
        patch_central(patch_central(a, "archive/data/0", 20, 10**9), "archive/data/0", 24, 10**9),
    )
    case(
        "pt_local_header_past_end.bin",
        w,
        "pytorch_model.bin: malformed zip archive:",
        patch_central(a, "archive/data/0", 42, 10**8),
    )
    case(
        "pt_local_header_wrong.bin",
        w,
        "the central directory places its local header at byte",
        patch_central(a, "archive/data.pkl", 42, len(a) - 30),
    )
    case("pt_empty_pickle.bin", w, "pickle is truncated", archive(b""))
    case(
        "pt_protocol_6.bin", w, "malformed pickle at offset 0: unknown pickle protocol", archive(b"\x80\x06}.")
    )
    case(
        "pt_frame_past_end.bin",
        w,
        "pickle is truncated",
        archive(b"\x80\x04\x95" + struct.pack("<Q", 2**64 - 1) + b"}."),
    )
    case(
        "pt_string_past_end.bin",
        w,
        "pickle is truncated",
        archive(b"\x80\x04\x8d" + struct.pack("<Q", 2**64 - 1) + b"."),
    )
    case("pt_memo_missing.bin", w, "malformed pickle at offset 2: memo entry 5 is missing", archive(b"\x80\x02h\x05."))
    case(
        "pt_memo_index_huge.bin",
        w,
        "pickle exceeds a safety limit: memo index too large",
        archive(b"\x80\x02}r\xff\xff\xff\xff."),
    )
    case(
        "pt_int_wider_than_64_bits.bin",
        w,
        "integer wider than 64 bits",
        archive(b"\x80\x02\x8a\x09" + b"\x01" * 9 + b"."),
    )
    case(
        "pt_stop_with_extra_items.bin",
        w,
        "STOP with a MARK open or extra stack items",
        archive(b"\x80\x02}}."),
    )
    case(
        "pt_global_name_too_long.bin",
        w,
        "GLOBAL name too long",
        archive(b"\x80\x02c" + b"a" * 300 + b"\nb\n."),
    )
    case(
        "pt_persistent_id_not_tuple.bin",
        w,
        "persistent id is not a tuple",
        archive(b"\x80\x02K\x01Q."),
    )
    case(
        "pt_string_not_utf8.bin",
        w,
        "string is not valid UTF-8",
        archive(b"\x80\x02X\x02\0\0\0\xff\xfe."),
    )
    # torch.save(..., _use_new_zipfile_serialization=False): a bare pickle, no zip.
    legacy = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}q\x00."
    case(
        "pt_legacy_format.bin",
        w,
        "neither a PyTorch zip archive nor safetensors",
        legacy,
    )


# ------------------------------------------------------------------------------ config.json


def config_cases():
    base = json.load(open(os.path.join(FIXTURE, "config.json")))

    def cfg(name, error, known_failure=False, drop=(), **overrides):
        c = {k: v for k, v in base.items() if k not in drop}
        c.update(overrides)
        case(name, "config", error, json.dumps(c, indent=1) + "\n", known_failure)

    case("cfg_not_json.json", "config", "config.json is not valid JSON for a TokenFormer model", "num_layers = 3\n")
    case("cfg_empty.json", "config", "config.json is not valid JSON for a TokenFormer model: EOF while parsing", "")
    case(
        "cfg_array.json",
        "config",
        "JSON object",
        "[3, 72]\n",
    )
    cfg("cfg_missing_hidden_size.json", "missing field `hidden_size`", drop=("hidden_size",))
    cfg("cfg_negative_layers.json", "invalid value: integer `-3`, expected usize", num_layers=-3)
    cfg("cfg_string_size.json", 'invalid type: string "72", expected usize', hidden_size="72")
    cfg("cfg_float_size.json", "invalid type: floating point `72.5`, expected usize", hidden_size=72.5)
    cfg("cfg_zero_layers.json", "config.json: num_layers is 0; it must be between 1 and 1024", num_layers=0)
    cfg("cfg_zero_heads.json", "num_attention_heads is 0; it must be between 1 and 65536", num_attention_heads=0)
    cfg(
        "cfg_heads_not_dividing.json",
        "num_attention_heads (5) does not divide hidden_size (72)",
        num_attention_heads=5,
    )
    cfg(
        "cfg_unknown_activation.json",
        'unknown norm_activation_type "relu" (known: l2_norm_gelu, gelu_l2_norm, softmax)',
        norm_activation_type="relu",
    )
    cfg(
        "cfg_hidden_1e12.json",
        "hidden_size is 1000000000000; it must be between 1 and 65536",
        hidden_size=10**12,
        num_attention_heads=8,
    )
    cfg("cfg_layers_1e6.json", "num_layers is 1000000; it must be between 1 and 1024", num_layers=10**6)
    cfg("cfg_ffn_slots_1e9.json", "ffn_slot_num is 1000000000; it must be between 1 and 1048576", ffn_slot_num=10**9)
    cfg("cfg_qkv_slots_zero.json", "qkv_slot_num is 0", qkv_slot_num=0)
    cfg(
        "cfg_positions_huge.json",
        "max_position_embeddings is 100000000; it must be between 1 and 1048576",
        max_position_embeddings=10**8,
    )
    cfg("cfg_size_u64_overflow.json", "expected usize", hidden_size=2**64)
    cfg("cfg_rotary_pct.json", "rotary_pct is 1.5; it must be in [0, 1]", rotary_pct=1.5)
    cfg("cfg_rotary_odd.json", "rotary dims int(head_dim 24 * rotary_pct 0.125) = 3 is odd", rotary_pct=0.125)
    cfg("cfg_rotary_base.json", "rotary_emb_base is -1; it must be a finite number above 1", rotary_emb_base=-1)
    cfg("cfg_eps_zero.json", "layernorm_epsilon is 0; it must be positive", layernorm_epsilon=0)
    cfg("cfg_norm.json", 'unsupported norm "rmsnorm"', norm="rmsnorm")
    cfg("cfg_final_norm.json", 'unsupported final_norm "rmsnorm"', final_norm="rmsnorm")
    cfg("cfg_untied.json", "no_weight_tying is true", no_weight_tying=True)
    case(
        "cfg_duplicate_key.json",
        "config",
        "duplicate field `num_layers`",
        json.dumps(base, indent=1)[:-2] + ',\n "num_layers": 2\n}\n',
    )
    case(
        "cfg_number_out_of_range.json",
        "config",
        "number out of range",
        json.dumps(base, indent=1).replace('"layernorm_epsilon": 1e-05', '"layernorm_epsilon": 1e400') + "\n",
    )
    cfg("cfg_activation_null.json", "invalid type: null, expected a string", norm_activation_type=None)
    # Valid configs that do not describe the fixture's weights.
    cfg(
        "cfg_hidden_mismatch.json",
        "tensor sequential.0.word_embeddings.weight has shape [320, 72], expected [rows, 64]",
        hidden_size=64,
        num_attention_heads=4,
    )
    cfg(
        "cfg_layers_mismatch.json",
        "unexpected tensor sequential.4.attention.query.key_param_tokens",
        num_layers=2,
    )
    cfg(
        "cfg_slots_mismatch.json",
        "tensor sequential.2.attention.query.key_param_tokens has shape [37, 72], expected [36, 72]",
        qkv_slot_num=36,
    )


# ------------------------------------------------------------------------------ tokenizer.json


def tokenizer_cases():
    base = json.load(open(os.path.join(FIXTURE, "tokenizer.json")))
    t = "tokenizer"

    def tok(name, error, edit, known_failure=False, note=None):
        doc = json.loads(json.dumps(base))
        edit(doc)
        case(name, t, error, json.dumps(doc, separators=(",", ":"), ensure_ascii=False), known_failure, note)

    case("tok_not_json.json", t, "tokenizer.json: expected value at line 1 column 1", "<html>not found</html>\n")
    case("tok_empty.json", t, "tokenizer.json: EOF while parsing", "")

    def extra_id(doc):
        doc["added_tokens"].append(
            {
                "id": 400,
                "content": "<|extra|>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )

    tok(
        "tok_added_token_id_mismatch.json",
        'added token "<|extra|>" declares id 400',
        extra_id,
    )

    def sparse_id(doc):
        # Without added tokens, which a sparse vocabulary would renumber (another error).
        doc["added_tokens"] = []
        doc["model"]["vocab"]["<|far|>"] = 400

    tok("tok_vocab_too_large.json", "the tokenizer has 401 ids but the embedding has only 320 rows", sparse_id)

    def empty_vocab(doc):
        doc["added_tokens"] = []
        doc["model"]["vocab"] = {}
        doc["model"]["merges"] = []

    tok("tok_empty_vocab.json", "tokenizer.json: the vocabulary is empty", empty_vocab)

    def unknown_model(doc):
        doc["model"] = {"type": "Transformer", "vocab": {}}

    tok(
        "tok_unknown_model.json",
        '"Transformer"',
        unknown_model,
    )

    def bad_merge(doc):
        doc["model"]["merges"] = doc["model"]["merges"][:5] + [["notatoken", "either"]]

    tok("tok_merge_out_of_vocab.json", "tokenizer.json: Token `notatoken` out of vocabulary", bad_merge)

    tok(
        "tok_huge_id.json",
        "the tokenizer has 4294967296 ids but the embedding has only 320 rows",
        lambda doc: doc.update(added_tokens=[]) or doc["model"]["vocab"].update({"<|far|>": 2**32 - 1}),
    )
    tok(
        "tok_bad_regex.json",
        "tokenizer.json: Parsing error at position 1: Opening parenthesis without closing parenthesis",
        lambda doc: doc.update(
            pre_tokenizer={"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated", "invert": False}
        ),
    )
    tok(
        "tok_dropout.json",
        "tokenizer.json: Dropout should be between 0 and 1",
        lambda doc: doc["model"].update(dropout=2.0),
    )
    tok(
        "tok_unigram_unk_id.json",
        "tokenizer.json: Unable to load vocab UnkIdNotInVocabulary",
        lambda doc: doc.update(model={"type": "Unigram", "unk_id": 5, "vocab": [["a", 0.0]]}, added_tokens=[]),
    )
    tok(
        "tok_precompiled_charsmap.json",
        "the \"Precompiled\" (SentencePiece) normalizer is not supported",
        # The tokenizers crate panics on this charsmap: refused before it gets there.
        lambda doc: doc.update(normalizer={"type": "Precompiled", "precompiled_charsmap": "AAAA"}),
    )


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    real = read_fixture_tensors()
    weights_cases(real)
    pytorch_cases(real)
    config_cases()
    tokenizer_cases()
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(CASES, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    roles = collections.Counter(c["role"] for c in CASES)
    print(f"{len(CASES)} cases ({dict(roles)}), {total} bytes in {os.path.relpath(OUT, REPO)}")
    assert total < 300_000, total


if __name__ == "__main__":
    main()
