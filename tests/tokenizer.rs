//! The GPT-NeoX-20B tokenizer the released models use, through the HF `tokenizers` crate.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenformer::Tokenizer;

#[derive(Deserialize)]
struct Cases {
    tokenizer: String,
    sha256: String,
    vocab_size: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

/// The copy committed in the repository (`models/gpt-neox-20b/`).
const NEOX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/gpt-neox-20b/tokenizer.json");

fn neox() -> Tokenizer {
    let bytes = std::fs::read(NEOX).unwrap_or_else(|e| panic!("{NEOX}: {e}"));
    Tokenizer::from_bytes(&bytes).unwrap()
}

fn fixture() -> Cases {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/neox_tokenizer_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_committed_tokenizer_is_the_one_the_fixture_was_made_with() {
    let fixture = fixture();
    assert!(NEOX.ends_with(&fixture.tokenizer), "{NEOX} vs {}", fixture.tokenizer);
    let digest = Sha256::digest(std::fs::read(NEOX).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, fixture.sha256);
    assert_eq!(hex, "56ac4821e129d2c520fdaba60abd920fa852ada51b45c0dd52bbb6bd8c985ade", "GPT-NeoX-20B's released file");
}

#[test]
fn neox_encodes_like_python_and_round_trips() {
    let tok = neox();
    assert_eq!(tok.vocab_size(), 50_277);
    assert_eq!(tok.eos_id(), Some(0));
    let fixture = fixture();
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
