//! config.json parsing and validation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenformer::fuzzing::config(data));
