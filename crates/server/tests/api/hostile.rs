//! Clients that attack the connection itself, against the real binary: a head or a body
//! trickled a byte at a time, ten thousand idle connections, heads far over any sane size,
//! pipelining without reading. Each is answered or cut within the configured time, the
//! server's memory stays bounded, and other clients are served meanwhile.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{create_session_at, get_json_at, plain, serve, Metrics, Process};

/// Longest a test waits for something the server must do within a second or two: a guard
/// against hanging, not a measure.
const GUARD: Duration = Duration::from_secs(60);

/// A `sessiond serve` process with `settings` above the demo configuration, its base URL and
/// its address.
struct Server {
    process: Process,
    base: String,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(settings: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sessiond.toml");
        std::fs::write(
            &config,
            format!("{settings}\n{}", sessiond::config::DEMO_CONFIG),
        )
        .unwrap();
        let (process, base) = serve(&[
            "--config".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            dir.path().as_os_str(),
        ]);
        let addr = base.trim_start_matches("http://").to_owned();
        Server {
            process,
            base,
            addr,
            _dir: dir,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).await.unwrap()
    }

    /// Resident memory of the server process, bytes.
    fn resident(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .expect("the server process runs");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Another client meanwhile: a session is created and read back.
    async fn serves_others(&self) {
        let created = create_session_at(&self.base, json!({"public": {"k": {"value": "v"}}}));
        let token = tokio::time::timeout(GUARD, created)
            .await
            .expect("another client is answered");
        let cookie = format!("vtex_session={token}");
        let read = get_json_at(&self.base, "/api/sessions?items=public.k", cookie).await;
        assert_eq!(read["namespaces"]["public"]["k"]["value"], "v");
    }
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed the connection");
    got
}

/// Pipelines requests on `stream` without reading an answer until a write stays blocked for a
/// second (the connection is full both ways) or fails (the server cut it): the bytes sent, and
/// whether it was cut.
async fn pipeline_unread(stream: &mut TcpStream) -> (usize, bool) {
    let requests = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let mut sent = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stream.write_all(&requests)).await {
            Ok(Ok(())) => sent += requests.len(),
            Ok(Err(_)) => return (sent, true),
            Err(_) => return (sent, false),
        }
        assert!(
            sent < 1 << 30,
            "the server read 1 GiB of requests without blocking"
        );
    }
}

/// Sends `bytes` one at a time, 100 ms apart, until the server closes the connection; how many
/// it took before that.
async fn trickle(stream: &mut TcpStream, bytes: &[u8]) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if stream.write_all(&[*b]).await.is_err() {
            return i;
        }
        // The peer's close shows as a readable end of stream.
        let mut probe = [0u8; 1024];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), stream.peek(&mut probe)).await
        {
            if n == 0 || probe.starts_with(b"HTTP/1.1 ") {
                return i + 1;
            }
        }
    }
    bytes.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_a_byte_at_a_time_is_cut_at_header_read_timeout() {
    let server = Server::start("header_read_timeout = \"1s\"");
    let mut slow = server.connect().await;
    let head = format!(
        "GET /api/sessions?items=public.k HTTP/1.1\r\nHost: {}\r\nX-Padding: {}\r\n\r\n",
        server.addr,
        "p".repeat(200)
    );
    // 100 ms a byte: the whole head would take over 25 s.
    let sent = trickle(&mut slow, head.as_bytes()).await;
    assert!(
        sent < head.len() / 2,
        "the server waited for {sent} of {} bytes trickled 100 ms apart",
        head.len()
    );
    let answer = until_closed(&mut slow).await;
    // hyper closes without an answer, or answers 408; never a session.
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // A kept-alive connection that made a request and then idles is closed too.
    let mut kept = server.connect().await;
    let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    kept.write_all(request.as_bytes()).await.unwrap();
    let answer = String::from_utf8(until_closed(&mut kept).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        answer.ends_with(r#"{"status":"ok"}"#),
        "one answer, then closed: {answer}"
    );
    server.serves_others().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_or_never_sent_answers_408_at_request_timeout() {
    let server = Server::start("request_timeout = \"1s\"\nheader_read_timeout = \"30s\"");
    let body = br#"{"public":{"k":{"value":"a value trickled one byte at a time"}}}"#;
    for trickled in [true, false] {
        let mut slow = server.connect().await;
        let head = format!(
            "POST /api/sessions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            server.addr,
            body.len()
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        if trickled {
            let sent = trickle(&mut slow, body).await;
            assert!(sent < body.len(), "the whole body was waited for");
        }
        let answer = String::from_utf8(until_closed(&mut slow).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        let json = answer.split("\r\n\r\n").nth(1).unwrap();
        let error: Value = serde_json::from_str(json).unwrap();
        assert_eq!(error["type"], "RequestTimeout");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("request_timeout"),
            "{error}"
        );
    }
    server.serves_others().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_are_held_in_bounded_memory_and_closed() {
    const IDLE: usize = 10_000;
    // Both ends of every connection are on this machine: this process needs a descriptor for
    // each too.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= IDLE as u64 + 1_000,
        "the open file limit ({limit}) is too low to open {IDLE} connections"
    );
    let server = Server::start("header_read_timeout = \"5s\"");
    server.serves_others().await;
    let before = server.resident();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(server.connect().await);
    }
    // Others are served while every idle connection is open.
    server.serves_others().await;
    let during = server.resident();
    let per_connection = during.saturating_sub(before) / IDLE as u64;
    eprintln!(
        "{IDLE} idle connections: resident {} MiB -> {} MiB, {per_connection} B each",
        before >> 20,
        during >> 20
    );
    // hyper's 8 KiB read buffer, the connection's task and its socket: 16.5 KiB measured.
    assert!(
        per_connection < 32 * 1024,
        "{per_connection} bytes resident per idle connection"
    );
    // Each is closed by the server (header_read_timeout) without an answer.
    let mut closed = 0;
    for mut stream in idle {
        assert!(until_closed(&mut stream).await.is_empty());
        closed += 1;
    }
    assert_eq!(closed, IDLE);
    server.serves_others().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_new_client_waits_for_a_free_slot() {
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
    let server = Server::start(&format!(
        "header_read_timeout = \"{}s\"\nlimits = {{ max_connections = 8 }}",
        HEADER_READ_TIMEOUT.as_secs()
    ));
    // No one of the eight below can be cut for being idle, and so free its slot, before this
    // instant plus the header read timeout.
    let held_from = std::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(server.connect().await);
    }
    let (closed, mut closes) = tokio::sync::mpsc::unbounded_channel();
    for mut stream in idle {
        let closed = closed.clone();
        tokio::spawn(async move {
            assert!(until_closed(&mut stream).await.is_empty());
            let _ = closed.send(());
        });
    }
    // The ninth is not refused, nor served while the eight hold every slot: it is served once
    // one of them is cut. (Whether this side sees that cut or the answer first is up to its
    // scheduler, so the answer's time is what tells.)
    let health = format!("{}/health", server.base);
    let answer = tokio::time::timeout(GUARD, plain().get(health).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let waited = held_from.elapsed();
    assert!(
        waited >= HEADER_READ_TIMEOUT,
        "answered after {waited:?}, while max_connections were held"
    );
    for _ in 0..8 {
        closes.recv().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_max_header_bytes_are_refused_431() {
    let server = Server::start("");
    let long_target = format!(
        "GET /api/sessions?items={} HTTP/1.1\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..50)
            .map(|i| format!("X-Header-{i}: {}\r\n", "v".repeat(1000)))
            .collect::<String>()
    );
    let huge_cookie = format!(
        "GET /api/sessions HTTP/1.1\r\nHost: x\r\nCookie: vtex_session={}\r\n\r\n",
        "t".repeat(1 << 20)
    );
    for head in [long_target, many_headers, huge_cookie] {
        let mut stream = server.connect().await;
        // The server may close before the whole head is written.
        let _ = stream.write_all(head.as_bytes()).await;
        let answer = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    // Just under the limit is served.
    let client = plain();
    let r = client
        .get(format!("{}/health", server.base))
        .header("x-padding", "p".repeat(30 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.serves_others().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_an_unread_flood_holds_no_memory() {
    let server = Server::start("");
    // A thousand requests in one write, answered in order.
    let mut stream = server.connect().await;
    let mut requests = String::new();
    for i in 0..1000 {
        requests.push_str(&format!(
            "GET /api/sessions/nope-{i} HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
    }
    requests.push_str("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(requests.as_bytes()).await.unwrap();
    let answers = String::from_utf8(until_closed(&mut stream).await).unwrap();
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 1001);
    assert_eq!(answers.matches("\"namespaces\"").count(), 1000);
    assert!(
        answers.ends_with(r#"{"status":"ok"}"#),
        "{}",
        &answers[answers.len() - 200..]
    );

    // Requests sent without ever reading an answer: the server stops reading when its answers
    // fill the connection, so its memory does not grow with what is sent.
    let before = server.resident();
    let mut flood = server.connect().await;
    let (sent, cut) = pipeline_unread(&mut flood).await;
    assert!(!cut, "cut before write_timeout (30 s)");
    server.serves_others().await;
    let during = server.resident();
    eprintln!(
        "unread pipelining: {} KiB sent, resident {} MiB -> {} MiB",
        sent >> 10,
        before >> 20,
        during >> 20
    );
    assert!(
        during.saturating_sub(before) < 16 << 20,
        "resident memory grew by {} bytes",
        during - before
    );
    drop(flood);
    server.serves_others().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_none_of_its_answers_is_cut_at_write_timeout() {
    let server = Server::start("write_timeout = \"2s\"");
    // One kept-alive client reads the open-connection gauge: it counts itself and the flood.
    let client = plain();
    let open = || async {
        Metrics::fetch_with(&client, &server.base)
            .await
            .get("sessiond_http_connections", &[])
    };
    let before = open().await;
    let mut flood = server.connect().await;
    let (_, cut) = pipeline_unread(&mut flood).await;
    if !cut {
        assert_eq!(open().await, before + 1.0, "the flood's connection is open");
    }
    // The server gives up on it: the gauge drops back, and the socket ends after the answers
    // it did send.
    tokio::time::timeout(GUARD, async {
        while open().await > before {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the connection that takes nothing is cut");
    let answers = until_closed(&mut flood).await;
    assert!(answers.starts_with(b"HTTP/1.1 200 "));
    server.serves_others().await;
}
