//! The loader that combines a config with a weights file (either format) into a model.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenformer::fuzzing::load_model(data));
