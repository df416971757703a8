//! The restricted zip + pickle reader of pytorch_model.bin.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenformer::fuzzing::pytorch_state_dict(data));
