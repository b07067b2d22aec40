#![no_main]
// sessiond::fuzz::app_entry: see crates/server/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sessiond::fuzz::app_entry(data));
