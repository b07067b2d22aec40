//! The baseline: bare hyper answering a fixed JSON body the size of a session answer, with the
//! same two `Set-Cookie` lines sessiond sends. Whatever sessiond does beyond this is its cost.
//!
//! With `--sign`, each answer first signs a session token (ES256 over a header and claims of
//! the size sessiond issues): the one piece of work every create and every log-in must do,
//! so its ratio bounds theirs from above.
//!
//! With `--work NS`, each answer first keeps the core busy for NS nanoseconds (a spin on the
//! clock): a server that does that much of its own work per request, for `bench/calibrate`.
//!
//! Usage: `baseline [--sign] [--work NS] [ADDR]` (default 127.0.0.1:0); prints
//! `listening on http://ADDR`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::net::TcpListener;

/// The allocator sessiond uses, so the ratio measures sessiond's work, not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A session answer of the demo account (`GET /api/sessions?items=*`), about 800 bytes.
const BODY: &str = r#"{"id":"3b3f2a4e-8f0e-4f7e-9a59-1b2c3d4e5f60","namespaces":{"account":{"accountName":{"value":"demo"},"id":{"value":"6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51","keepAlive":true}},"public":{"k":{"value":"v"}},"store":{"channel":{"value":"1"},"channelPrivacy":{"value":"public"},"countryCode":{"value":"BRA"},"cultureInfo":{"value":"pt-BR"},"currencyCode":{"value":"BRL"},"currencySymbol":{"value":"R$"}}},"version":2,"active":true,"debug":false}"#;

const SESSION_COOKIE: &str = "vtex_session=eyJhbGciOiJFUzI1NiIsImtpZCI6IjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAiLCJ0eXAiOiJKV1QifQ.eyJpZCI6IjNiM2YyYTRlLThmMGUtNGY3ZS05YTU5LTFiMmMzZDRlNWY2MCIsImFjY291bnQiOiJkZW1vIiwiYWNjb3VudC5pZCI6IjZjMWY3YzNlLThhNWItNGQxZS05ZjIwLTNiN2EyYzlkNGU1MSIsInZlcnNpb24iOjEsInN1YiI6InNlc3Npb24iLCJpc3MiOiJzZXNzaW9uZCIsImlhdCI6MTc5NTQwNDI5OCwiZXhwIjoxNzk1ODM2Mjk4LCJqdGkiOiI3Mjg5MDRlZS0xOTk4LTQzMjktOWE0MC0zZTI5OTNmYjQ1M2UifQ.SZzSephTF-_wb99sUCbIa4X8wgb2_XvwEjh4PqJOiuaheXYqNAp0BTdcCPaMlp4WnLmLWkIZrfhMd1xJDtBPgg; Path=/; Max-Age=432000; HttpOnly; SameSite=Lax";
const SEGMENT_COOKIE: &str = "vtex_segment=eyJjYW1wYWlnbnMiOm51bGwsImNoYW5uZWwiOiIxIiwicHJpY2VUYWJsZXMiOm51bGwsInJlZ2lvbklkIjpudWxsLCJ1dG1fY2FtcGFpZ24iOm51bGwsInV0bV9zb3VyY2UiOm51bGwsInV0bWlfY2FtcGFpZ24iOm51bGwsImN1cnJlbmN5Q29kZSI6IkJSTCIsImN1cnJlbmN5U3ltYm9sIjoiUiQiLCJjb3VudHJ5Q29kZSI6IkJSQSIsImN1bHR1cmVJbmZvIjoicHQtQlIiLCJjaGFubmVsUHJpdmFjeSI6InB1YmxpYyJ9; Path=/; Max-Age=432000; HttpOnly; SameSite=Lax";

/// The signed part of a session token: header and claims as sessiond encodes them.
const SIGNED: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6IjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAiLCJ0eXAiOiJKV1QifQ.eyJpZCI6IjNiM2YyYTRlLThmMGUtNGY3ZS05YTU5LTFiMmMzZDRlNWY2MCIsImFjY291bnQiOiJkZW1vIiwiYWNjb3VudC5pZCI6IjZjMWY3YzNlLThhNWItNGQxZS05ZjIwLTNiN2EyYzlkNGU1MSIsInZlcnNpb24iOjEsInN1YiI6InNlc3Npb24iLCJpc3MiOiJzZXNzaW9uZCIsImlhdCI6MTc5NTQwNDI5OCwiZXhwIjoxNzk1ODM2Mjk4LCJqdGkiOiI3Mjg5MDRlZS0xOTk4LTQzMjktOWE0MC0zZTI5OTNmYjQ1M2UifQ";

/// A signing key and its random source (`--sign`).
struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    fn new() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("cannot load the P-256 key"))?;
        Ok(Signer { key, rng })
    }

    /// The `Set-Cookie` line of a freshly signed token.
    fn cookie(&self) -> String {
        let signature = self
            .key
            .sign(&self.rng, SIGNED.as_bytes())
            .expect("signing with a valid key does not fail");
        let signature = URL_SAFE_NO_PAD.encode(signature.as_ref());
        format!("vtex_session={SIGNED}.{signature}; Path=/; Max-Age=432000; HttpOnly; SameSite=Lax")
    }
}

fn answer(signer: Option<&Signer>, work: Duration) -> Response<Full<Bytes>> {
    if !work.is_zero() {
        let started = Instant::now();
        while started.elapsed() < work {
            std::hint::spin_loop();
        }
    }
    let session_cookie = match signer {
        Some(signer) => signer.cookie(),
        None => SESSION_COOKIE.to_owned(),
    };
    Response::builder()
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("set-cookie", session_cookie)
        .header("set-cookie", SEGMENT_COOKIE)
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("a valid response")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let signer = match args.iter().position(|a| a == "--sign") {
        Some(i) => {
            args.remove(i);
            Some(Arc::new(Signer::new()?))
        }
        None => None,
    };
    let work = match args.iter().position(|a| a == "--work") {
        Some(i) => {
            let ns = args
                .get(i + 1)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("--work takes a number of nanoseconds"))?;
            args.drain(i..i + 2);
            Duration::from_nanos(ns)
        }
        None => Duration::ZERO,
    };
    let addr = args.pop().unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let signer = signer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<Incoming>| {
                let response = answer(signer.as_deref(), work);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
