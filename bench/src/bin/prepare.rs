//! Creates N sessions on a running sessiond (or a peer of the benchmark) and writes their session
//! tokens (or session cookies), one per line, for
//! the load scripts. Sessions are created over 64 keep-alive connections.
//!
//! Usage: `prepare BASE_URL COUNT OUT_FILE`

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const CONNECTIONS: usize = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, count, out] = args.as_slice() else {
        bail!("usage: prepare BASE_URL COUNT OUT_FILE");
    };
    let count: usize = count.parse().context("COUNT must be a number")?;
    let url: hyper::Uri = format!("{base}/api/sessions").parse()?;
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONNECTIONS)
        .build_http::<Full<Bytes>>();
    let next = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let workers = (0..CONNECTIONS).map(|_| {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tokio::spawn(async move {
            let mut tokens = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let request = hyper::Request::post(url.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"public":{"k":{"value":"v"}}}"#,
                    )))?;
                let response = client.request(request).await?;
                if response.status() != 201 {
                    bail!("creating a session answered {}", response.status());
                }
                // A peer of the benchmark (bench/peers) sends its session only as a cookie.
                let cookie = response
                    .headers()
                    .get_all(hyper::header::SET_COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(|v| v.strip_prefix("vtex_session="))
                    .map(|v| v.split(';').next().unwrap_or_default().to_owned());
                let body = response.into_body().collect().await?.to_bytes();
                let pair: serde_json::Value = serde_json::from_slice(&body)?;
                let token = match pair["sessionToken"].as_str() {
                    Some(token) => token.to_owned(),
                    None => cookie.context("no sessionToken in the answer, nor a cookie")?,
                };
                tokens.push(token);
            }
            Ok::<_, anyhow::Error>(tokens)
        })
    });
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for tokens in futures::future::join_all(workers).await {
        for token in tokens?? {
            writeln!(file, "{token}")?;
        }
    }
    file.flush()?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "prepared {count} sessions in {secs:.1} s ({:.0} creates/s)",
        count as f64 / secs
    );
    Ok(())
}
