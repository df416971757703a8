//! The safetensors header reader: any bytes give a tensor list or an error, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenformer::fuzzing::safetensors_index(data));
