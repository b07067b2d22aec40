#![no_main]
// sessiond::fuzz::session_token: see crates/server/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sessiond::fuzz::session_token(data));
