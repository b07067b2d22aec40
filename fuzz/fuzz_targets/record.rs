#![no_main]
// sessiond::fuzz::record: see crates/server/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sessiond::fuzz::record(data));
