//! The API end to end, as one test binary: a real server on port 0, a real HTTP client, the real
//! embedded store in a temp dir, and the real `sessiond` binary for the command-line tests. One
//! module per feature, one shared harness.

mod harness;

mod admin;
mod builtin_apps;
mod cli;
mod console;
mod durability;
mod fast_paths;
mod hostile;
mod http_app;
mod identity;
mod operations;
mod redis;
mod sessions;
mod soak;
mod tokens_and_tenancy;
