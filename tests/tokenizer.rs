//! The GPT-NeoX-20B tokenizer the released models use, through the HF `tokenizers` crate.

use serde::Deserialize;
use tokenformer::Tokenizer;

#[derive(Deserialize)]
struct Cases {
    vocab_size: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn neox() -> Tokenizer {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tokenizers/gpt-neox-20b.json");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Tokenizer::from_bytes(&bytes).unwrap()
}

#[test]
fn neox_encodes_like_python_and_round_trips() {
    let tok = neox();
    assert_eq!(tok.vocab_size(), 50_277);
    assert_eq!(tok.eos_id(), Some(0));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/neox_tokenizer_cases.json");
    let fixture: Cases = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(tok.vocab_size(), fixture.vocab_size);
    assert!(fixture.cases.len() >= 5);
    for case in fixture.cases {
        assert_eq!(tok.encode(&case.text).unwrap(), case.ids, "{:?}", case.text);
        assert_eq!(tok.decode(&case.ids).unwrap(), case.text);
    }
}

#[test]
fn streaming_decode_never_splits_a_character() {
    let tok = neox();
    let text = "Café — 東京 🐳 whale";
    let ids = tok.encode(text).unwrap();
    let mut stream = tokenformer::tokenizer::TextStream::default();
    let mut out = String::new();
    for id in ids {
        let piece = stream.push(&tok, id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        out.push_str(&piece);
    }
    assert_eq!(out, text);
}
