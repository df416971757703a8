//! The `tokenformer` binary as a person runs it: outputs on the fixtures, and one clear error
//! line with a non-zero exit for every bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{expected, fixture_dir, inspect_fixture, max_abs_diff, top_values};

fn tokenformer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenformer"))
        .args(args)
        // Set on the project's machines; user errors must still print one line, not a backtrace.
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokenformer-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ids_arg(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_json_gives_the_reference_greedy_tokens() {
    let exp = expected("softmax");
    let model = fixture_dir("softmax");
    for case in &exp.cases {
        let out = tokenformer(&[
            "generate",
            "--model",
            path(&model),
            "--ids",
            &ids_arg(&case.ids),
            "--max-tokens",
            "32",
            "--json",
        ]);
        let json = stdout_json(&out);
        let ids: Vec<u32> = serde_json::from_value(json["ids"].clone()).unwrap();
        assert_eq!(ids, case.greedy);
        assert!(json["text"].is_string());
    }
    // Text prompt, streamed: the output is the decoded continuation.
    let case = exp.cases.iter().find(|c| c.text.is_some()).unwrap();
    let out = tokenformer(&[
        "generate",
        "--model",
        path(&model),
        "--prompt",
        case.text.as_deref().unwrap(),
        "--max-tokens",
        "32",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stdout.is_empty());
}

#[test]
fn logits_prints_every_position_over_the_vocabulary() {
    let exp = expected("gelu_l2_norm");
    let case = &exp.cases[1];
    let out = tokenformer(&["logits", "--model", path(&fixture_dir("gelu_l2_norm")), "--ids", &ids_arg(&case.ids)]);
    let rows: Vec<Vec<f64>> = serde_json::from_value(stdout_json(&out)["logits"].clone()).unwrap();
    assert_eq!(rows.len(), case.ids.len());
    assert!(rows.iter().all(|r| r.len() == exp.vocab_size));
    let err = max_abs_diff(rows.into_iter().flatten(), case.logits.iter().flatten().copied());
    assert!(err < 1e-4, "{err:e}");
}

#[test]
fn convert_writes_a_folder_that_loads_the_same() {
    let exp = expected("l2_norm_gelu");
    let ids = ids_arg(&exp.cases[2].ids);
    let original = stdout_json(&tokenformer(&["logits", "--model", path(&fixture_dir("l2_norm_gelu")), "--ids", &ids]));
    for dtype in ["f32", "f16"] {
        let out_dir = scratch(&format!("convert-{dtype}"));
        let out = tokenformer(&["convert", path(&fixture_dir("l2_norm_gelu")), path(&out_dir), "--dtype", dtype]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(out_dir.join(f).is_file(), "{f} missing");
        }
        let converted = stdout_json(&tokenformer(&["logits", "--model", path(&out_dir), "--ids", &ids]));
        if dtype == "f32" {
            assert_eq!(converted, original);
        } else {
            let flat = |v: &serde_json::Value| -> Vec<f64> {
                serde_json::from_value::<Vec<Vec<f64>>>(v["logits"].clone()).unwrap().concat()
            };
            assert!(max_abs_diff(flat(&converted), flat(&original)) < 5e-2);
        }
        std::fs::remove_dir_all(out_dir).unwrap();
    }
    // Quantized, with the embedding in q8 rather than the default f16: the file says so.
    let out_dir = scratch("convert-q4");
    let out = tokenformer(&[
        "convert",
        path(&fixture_dir("l2_norm_gelu")),
        path(&out_dir),
        "--dtype",
        "q4",
        "--embedding-dtype",
        "q8",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = std::fs::read(out_dir.join("model.safetensors")).unwrap();
    let len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&file[8..8 + len]).unwrap();
    assert!(header.contains_key("embed.weight.q8"), "{:?}", header.keys());
    assert!(header.contains_key("blocks.0.ffn.key_param_tokens.q4"));
    // The file's blocks are the ones quantizing on load makes: the same logits either way.
    let logits = |model: &Path| {
        let args = ["logits", "--model", path(model), "--ids", &ids, "--dtype", "q4", "--embedding-dtype", "q8"];
        stdout_json(&tokenformer(&args))
    };
    assert_eq!(logits(&out_dir), logits(&fixture_dir("l2_norm_gelu")));
    std::fs::remove_dir_all(out_dir).unwrap();
}

#[test]
fn eval_reports_the_reference_perplexity() {
    let eval = expected("l2_norm_gelu").eval.unwrap();
    let dir = scratch("eval");
    let text_file = dir.join("text.txt");
    let exp_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir("l2_norm_gelu").join("expected.json")).unwrap())
            .unwrap();
    std::fs::write(&text_file, exp_json["eval"]["text"].as_str().unwrap()).unwrap();
    let (w, s) = (eval.window.to_string(), eval.stride.to_string());
    let fixture = fixture_dir("l2_norm_gelu");
    let run = |extra: &[&str]| {
        let common = ["eval", "--model", path(&fixture), "--text", path(&text_file), "--window", &w, "--stride", &s];
        stdout_json(&tokenformer(&[&common[..], extra, &["--json"]].concat()))
    };
    let json = run(&[]);
    let ppl = json["perplexity"].as_f64().unwrap();
    assert!((ppl / eval.perplexity - 1.0).abs() < 1e-5, "{ppl} vs {}", eval.perplexity);

    // The quality command: the file quantized as it loads against itself in f32, each perplexity
    // the reference's for its weights (the q4 fixture is this model quantized).
    let quantized = expected("l2_norm_gelu_q4").eval.unwrap().perplexity;
    let json = run(&["--dtype", "q4", "--compare", "f32"]);
    assert_eq!((json["dtype"].as_str(), json["reference_dtype"].as_str()), (Some("q4"), Some("f32")));
    let (reference, model) =
        (json["reference"]["perplexity"].as_f64().unwrap(), json["model"]["perplexity"].as_f64().unwrap());
    assert!((reference / eval.perplexity - 1.0).abs() < 1e-5, "{reference} vs {}", eval.perplexity);
    assert!((model / quantized - 1.0).abs() < 1e-5, "{model} vs {quantized}");
    assert!((json["perplexity_change"].as_f64().unwrap() - (model / reference - 1.0)).abs() < 1e-9);
    let (kl, top1) = (json["mean_kl"].as_f64().unwrap(), json["top1_agreement"].as_f64().unwrap());
    // A tiny random model: q4 moves its distributions far (the built-in model's figures are in the
    // README); these only have to be measured.
    assert!(kl > 0.0 && kl.is_finite(), "mean KL {kl}");
    assert!(top1 > 0.0 && top1 < 1.0, "top-1 agreement {top1}");
    assert_eq!(json["tokens_scored"].as_u64(), Some(eval.tokens_scored as u64));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn inspect_json_prints_the_reference_theta_rows_top_k_and_attention_on_both_backends() {
    let fixture = inspect_fixture();
    let mut checked_attention = 0;
    for backend in ["cpu", "gpu"] {
        for entry in &fixture.models {
            let model = fixture_dir(&entry.model);
            let layer = entry.layers.last().unwrap();
            let (l, ids) = (layer.layer.to_string(), ids_arg(&entry.ids));
            // Ids for one model, the same prompt as text for the others: the two forms must agree.
            let prompt: [&str; 2] =
                if entry.model == "softmax" { ["--ids", &ids] } else { ["--prompt", &fixture.text] };
            let base = ["inspect", "--model", path(&model), prompt[0], prompt[1], "--layer", &l, "--backend", backend];
            let what = format!("{backend} {} layer {l}", entry.model);
            for (proj, want) in &layer.theta {
                let json = stdout_json(&tokenformer(&[&base[..], &["--proj", proj, "--json"]].concat()));
                assert_eq!(json.as_object().unwrap().len(), 3, "{json}");
                assert_eq!(json["layer"], layer.layer);
                assert_eq!(json["proj"], proj.as_str());
                let rows: Vec<Vec<f64>> = serde_json::from_value(json["weights"].clone()).unwrap();
                assert_eq!(rows.len(), want.len());
                assert!(rows.iter().zip(want).all(|(a, b)| a.len() == b.len()));
                let err = max_abs_diff(rows.iter().flatten().copied(), want.iter().flatten().copied());
                assert!(err < 1e-4, "{what} {proj}: {err:e}");

                let json =
                    stdout_json(&tokenformer(&[&base[..], &["--proj", proj, "--top-k", "4", "--json"]].concat()));
                assert_eq!(json.as_object().unwrap().len(), 3, "{json}");
                assert_eq!(
                    (&json["layer"], &json["proj"]),
                    (&serde_json::json!(layer.layer), &serde_json::json!(proj))
                );
                let top: Vec<Vec<(usize, f64)>> = serde_json::from_value(json["top"].clone()).unwrap();
                assert_eq!(top.len(), want.len());
                for ((pairs, row), want_row) in top.iter().zip(&rows).zip(want) {
                    assert_eq!(pairs.len(), 4);
                    // Each pair is a slot and its weight as the same backend prints it in the full form
                    // (on the GPU the selection ran on the device over the same numbers).
                    assert!(pairs.iter().all(|&(slot, v)| row[slot] == v), "{what} {proj}: {pairs:?}");
                    let values: Vec<f64> = pairs.iter().map(|p| p.1).collect();
                    assert!(max_abs_diff(values, top_values(want_row, 4)) < 1e-4, "{pairs:?} vs {want_row:?}");
                }
            }
            for (al, want) in entry.layers.iter().filter_map(|al| Some((al.layer.to_string(), al.attention.as_ref()?)))
            {
                let args =
                    ["inspect", "--model", path(&model), prompt[0], prompt[1], "--layer", &al, "--backend", backend];
                let json = stdout_json(&tokenformer(&[&args[..], &["--attention", "--json"]].concat()));
                checked_attention += 1;
                let heads: Vec<Vec<Vec<f64>>> = serde_json::from_value(json["attention"].clone()).unwrap();
                assert_eq!((heads.len(), heads[0].len()), (want.len(), entry.ids.len()));
                let err =
                    max_abs_diff(heads.iter().flatten().flatten().copied(), want.iter().flatten().flatten().copied());
                assert!(err < 1e-4, "{what} attention: {err:e}");
            }
        }
    }
    assert!(checked_attention >= 2 * fixture.models.len(), "{checked_attention}");
}

#[test]
fn dictionary_json_lists_the_vocabulary_tokens_a_slot_value_points_at_on_both_backends() {
    let (model, tokenizer) = common::load("l2_norm_gelu");
    let d = model.config.hidden_size;
    for (layer, proj, slot) in [(0usize, "ffn", 3usize), (2, "key", 0)] {
        let p = model.blocks[layer].get(tokenformer::Projection::parse(proj).unwrap());
        let (values, embedding) = (p.value_param_tokens.to_f32(), model.embedding.to_f32());
        let value = &values[slot * d..(slot + 1) * d];
        // Independently, in f64: every vocabulary row against the value vector, best first.
        let mut want: Vec<(usize, f64)> = (0..model.vocab_size)
            .map(|id| (id, embedding[id * d..(id + 1) * d].iter().zip(value).map(|(&e, &v)| e as f64 * v as f64).sum()))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for backend in ["cpu", "gpu"] {
            let (l, s) = (layer.to_string(), slot.to_string());
            let m = fixture_dir("l2_norm_gelu");
            let args = [
                "dictionary",
                "--model",
                path(&m),
                "--layer",
                &l,
                "--proj",
                proj,
                "--slot",
                &s,
                "--top-k",
                "5",
                "--json",
                "--backend",
                backend,
            ];
            let json = stdout_json(&tokenformer(&args));
            assert_eq!(
                (&json["layer"], &json["proj"], &json["slot"]),
                (&serde_json::json!(layer), &serde_json::json!(proj), &serde_json::json!(slot))
            );
            let top: Vec<(usize, f64, String)> = serde_json::from_value(json["top"].clone()).unwrap();
            assert_eq!(top.len(), 5);
            for ((id, score, text), (want_id, want_score)) in top.iter().zip(&want) {
                assert_eq!(id, want_id, "{backend} layer {layer} {proj} slot {slot}");
                assert!((score - want_score).abs() < 1e-4, "{backend}: {score} vs {want_score}");
                assert_eq!(text, &tokenizer.decode(&[*id as u32]).unwrap());
            }
        }
    }
}

/// Runs a command that must fail and returns its single stderr line.
fn fails(args: &[&str]) -> String {
    let out = tokenformer(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail with exit 1; stderr: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

#[test]
fn bad_inputs_give_one_clear_line() {
    let model = fixture_dir("l2_norm_gelu");
    let m = path(&model);
    let dir = scratch("bad");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let config = model.join("config.json");
    let tokenizer = model.join("tokenizer.json");
    let with_companions = |weights: &Path| -> Vec<String> {
        vec![
            "logits".into(),
            "--model".into(),
            path(weights).into(),
            "--config".into(),
            path(&config).into(),
            "--tokenizer".into(),
            path(&tokenizer).into(),
            "--ids".into(),
            "1,2".into(),
        ]
    };
    let run = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let empty = write("empty.bin", b"");
    assert!(run(with_companions(&empty)).contains("weights file is empty"));
    let random =
        write("random.bin", &(0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>());
    assert!(run(with_companions(&random)).contains("neither a PyTorch zip archive nor safetensors"));
    // A real torch archive whose pickle would run `os.system` under Python's unpickler.
    let evil = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pytorch/evil.bin");
    assert!(run(with_companions(&evil)).contains("forbidden global posix.system"));
    let transposed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pytorch/transposed.bin");
    assert!(run(with_companions(&transposed)).contains("pytorch_model.bin"));
    let huge_header = write("huge.safetensors", &[&u64::MAX.to_le_bytes()[..], b"{}"].concat());
    assert!(run(with_companions(&huge_header)).contains("safetensors"));

    assert!(fails(&["logits", "--model", "/no/such/model", "--ids", "1"]).contains("no such file or folder"));
    assert!(fails(&["logits", "--model", path(&dir), "--ids", "1"])
        .contains("neither model.safetensors nor pytorch_model.bin"));
    assert!(fails(&["generate", "--model", m, "--prompt", ""]).contains("prompt is empty"));
    let too_long = ids_arg(&[5; 65]);
    assert!(fails(&["logits", "--model", m, "--ids", &too_long]).contains("at most 64"));
    assert!(fails(&["logits", "--model", m, "--ids", "1,99999"]).contains("outside the vocabulary"));
    assert!(fails(&["logits", "--model", m, "--ids", "1,x"]).contains("not a token id"));
    assert!(fails(&["generate", "--model", m, "--ids", "1", "--top-p", "0"]).contains("top_p"));

    let bad_config = write("config.json", b"{ not json");
    let args = ["logits", "--model", m, "--config", path(&bad_config), "--ids", "1"];
    assert!(fails(&args).contains("config.json is not valid JSON"));
    let bad_tokenizer = write("tokenizer.json", b"[1, 2, 3]");
    assert!(
        fails(&["logits", "--model", m, "--tokenizer", path(&bad_tokenizer), "--ids", "1"]).contains("tokenizer.json")
    );

    assert!(fails(&["convert", m, m]).contains("the model's own folder"));

    let inspect = |extra: &[&str]| fails(&[&["inspect", "--model", m, "--ids", "1,2,3"][..], extra].concat());
    let line = inspect(&["--layer", "3", "--proj", "ffn", "--json"]);
    assert!(line.contains("layer 3 is out of range") && line.contains("numbered 0 to 2"), "{line}");
    let line = inspect(&["--layer", "0", "--proj", "mlp", "--json"]);
    assert!(line.contains("unknown projection \"mlp\"") && line.contains("query, key, value, proj, ffn"), "{line}");
    assert!(inspect(&["--layer", "0", "--proj", "ffn", "--top-k", "0"]).contains("--top-k"));
    let line = fails(&["dictionary", "--model", m, "--layer", "0", "--proj", "query", "--slot", "999"]);
    assert!(line.contains("parameter token 999 is out of range"), "{line}");
    assert!(fails(&["inspect", "--model", m, "--ids", "1,99999", "--layer", "0", "--proj", "key"])
        .contains("outside the vocabulary"));

    let logits = |spec: &str| fails(&["logits", "--model", m, "--ids", "1,2", "--intervene", spec]);
    assert!(logits("0:ffn:1").contains("LAYER:PROJ:SLOT=FACTOR"));
    assert!(logits("3:ffn:1=0").contains("layer 3 is out of range"));
    assert!(logits("0:ffn:83=0").contains("parameter token 83 is out of range"));
    assert!(logits("0:mlp:1=0").contains("unknown projection"));
    assert!(logits("0:ffn:1=nan").contains("finite"));
    let line = fails(&["search", "--model", m, "--token", "the keeper"]);
    assert!(line.contains("tokens (") && line.contains("search takes one token"), "{line}");
    assert!(fails(&["search", "--model", m, "--id", "99999"]).contains("outside the vocabulary"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `--intervene`, `search` and `inspect --logit-lens` print the float64 reference's numbers
/// (`tests/fixtures/actions.json`), on both backends.
#[test]
fn interventions_search_and_the_logit_lens_on_both_backends() {
    let fixture = common::actions_fixture();
    let entry = fixture.models.iter().find(|e| e.model == "softmax").unwrap();
    let model = fixture_dir(&entry.model);
    let specs: Vec<String> = entry.interventions.iter().map(|(l, p, s, f)| format!("{l}:{p}:{s}={f}")).collect();
    let ids = ids_arg(&entry.ids);
    for backend in ["cpu", "gpu"] {
        let mut args = vec!["logits", "--model", path(&model), "--ids", &ids, "--backend", backend];
        for spec in &specs {
            args.extend(["--intervene", spec.as_str()]);
        }
        let json = stdout_json(&tokenformer(&args));
        let got: Vec<Vec<f64>> = serde_json::from_value(json["logits"].clone()).unwrap();
        let err = max_abs_diff(got.into_iter().flatten(), entry.logits.iter().flatten().copied());
        assert!(err < 1e-3, "{backend}: logits under --intervene {err:e}");
        if let Some(greedy) = &entry.greedy {
            let n = greedy.len().to_string();
            let mut args = vec!["generate", "--model", path(&model), "--ids", &ids, "--max-tokens", &n, "--json"];
            args.extend(["--backend", backend]);
            for spec in &specs {
                args.extend(["--intervene", spec.as_str()]);
            }
            let got: Vec<u32> = serde_json::from_value(stdout_json(&tokenformer(&args))["ids"].clone()).unwrap();
            assert_eq!(&got, greedy, "{backend}: greedy under --intervene");
        }

        let token = entry.search.token.to_string();
        let args = ["search", "--model", path(&model), "--id", &token, "--top-k", "5", "--json", "--backend", backend];
        let json = stdout_json(&tokenformer(&args));
        let top = json["top"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        let mut want: Vec<f64> = entry.search.scores.clone();
        want.sort_by(|a, b| b.total_cmp(a));
        for (hit, want) in top.iter().zip(want) {
            assert!((hit[3].as_f64().unwrap() - want).abs() < 1e-3, "{backend}: {hit} vs {want}");
        }
        // The same token given as text.
        let text = json["text"].as_str().unwrap().to_string();
        let by_text = stdout_json(&tokenformer(&["search", "--model", path(&model), "--token", &text, "--json"]));
        assert_eq!((&by_text["id"], &by_text["top"][0][2]), (&json["id"], &json["top"][0][2]));

        let args = ["inspect", "--model", path(&model), "--ids", &ids, "--logit-lens", "--json", "--backend", backend];
        let lens: Vec<Vec<Vec<(u32, f64, String)>>> =
            serde_json::from_value(stdout_json(&tokenformer(&args))["lens"].clone()).unwrap();
        assert_eq!(lens.len(), entry.lens.len());
        for (got, want) in lens.iter().flatten().zip(entry.lens.iter().flatten()) {
            let err = max_abs_diff(got.iter().map(|p| p.1), want.iter().map(|p| p.1));
            assert!(err < 1e-3, "{backend}: lens {got:?} vs {want:?}");
        }
    }
}
