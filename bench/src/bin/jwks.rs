//! An identity provider for the log-in benchmark: serves the JWKS document of a P-256 key it
//! generates at `/jwks.json`, and writes one store-user token of the demo account signed with
//! that key (VTEX ID's claims, kid `bench-1`, valid for a day) to TOKEN_FILE.
//!
//! Usage: `jwks TOKEN_FILE [ADDR]` (default 127.0.0.1:0); prints `listening on http://ADDR`.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::net::TcpListener;

/// Alice, a customer of the demo account.
const ALICE: &str = "c0a80101-0000-4000-8000-000000000001";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (token_file, addr) = match args.as_slice() {
        [file] => (file.clone(), "127.0.0.1:0".to_owned()),
        [file, addr] => (file.clone(), addr.clone()),
        _ => bail!("usage: jwks TOKEN_FILE [ADDR]"),
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("cannot load the P-256 key"))?;
    // An uncompressed point: 0x04, x (32 bytes), y (32 bytes).
    let point = key.public_key().as_ref();
    let document = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "bench-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]})
    .to_string();

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let header = serde_json::json!({"alg": "ES256", "kid": "bench-1", "typ": "jwt"});
    let claims = serde_json::json!({
        "sub": "alice@example.com", "userId": ALICE, "account": "demo",
        "audience": "webstore", "type": "user", "iss": "token-emitter",
        "isRepresentative": false, "iat": now, "exp": now + 86_400,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key
        .sign(&rng, signed.as_bytes())
        .map_err(|_| anyhow::anyhow!("cannot sign"))?;
    let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    std::fs::write(&token_file, token).with_context(|| format!("writing {token_file}"))?;

    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let document = Bytes::from(document);
    loop {
        let (stream, _) = listener.accept().await?;
        let document = document.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<Incoming>| {
                let response = Response::builder()
                    .header("content-type", "application/json")
                    .header("cache-control", "public, max-age=600")
                    .body(Full::new(document.clone()))
                    .expect("a valid response");
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
