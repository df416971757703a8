//! The streaming reader of both weights formats, as a download feeds it: chunk size from the first byte.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenformer::fuzzing::weights_stream(data));
