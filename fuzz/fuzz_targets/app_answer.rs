#![no_main]
// sessiond::fuzz::app_answer: see crates/server/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sessiond::fuzz::app_answer(data));
