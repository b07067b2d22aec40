//! The load generator of the benchmarks: keeps C connections busy (closed loop, one request in
//! flight per connection) for a given time and reports requests/s and latency percentiles.
//!
//! It runs on one thread (the benchmarks pin it to a core of its own) and does little per
//! request, so that the figure measures the server: every request is built from parts made
//! before the run (the session cookies as shared header values, one per prepared token, taken
//! in turn across all connections), and answers are read
//! into one buffer per connection, with `httparse`.
//!
//! Usage: `load MODE URL [TOKENS] [--connections C] [--duration SECONDS]`
//!
//! MODE is a scenario: `baseline` and `get_all` (`GET /api/sessions?items=*`), `get_items`
//! (a 3-item filter), `patch` (one `public` key, a new value each time), `login` (PATCH with an
//! identity cookie, `$IDENTITY`), `create` (POST with one value) and `visit` (GET without a
//! token). TOKENS is the file of session tokens, one per line (`prepare` writes it).
//!
//! Prints `RESULT MODE REQUESTS/S P50_MS P99_MS REQUESTS FAILED`, where a failure is a
//! connection error or an answer outside 2xx, then `IDLE P0 P1 …`: the idle share (%, I/O wait
//! included) of each core during the run, from `/proc/stat`. It is measured here, over the run
//! alone: reading a large TOKENS file first (6 s for the 1,100,000 tokens of the step at
//! 10,000,000 sessions) would otherwise count as idle time of the server.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// The scenarios, as `bench/run` names them.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    GetAll,
    GetItems,
    Patch,
    Login,
    Create,
    Visit,
}

impl Mode {
    fn parse(name: &str) -> anyhow::Result<Mode> {
        Ok(match name {
            "baseline" | "get_all" => Mode::GetAll,
            "get_items" => Mode::GetItems,
            "patch" => Mode::Patch,
            "login" => Mode::Login,
            "create" => Mode::Create,
            "visit" => Mode::Visit,
            other => bail!("unknown mode {other}"),
        })
    }

    fn needs_tokens(self) -> bool {
        !matches!(self, Mode::Create | Mode::Visit)
    }
}

/// Everything a request is built from, made before the run.
struct Plan {
    mode: Mode,
    /// The complete request (head and body) of each prepared token, or the one request of a
    /// scenario without tokens; for `patch`, the head up to the body.
    requests: Vec<Vec<u8>>,
    /// The next request to send, shared by all connections (one thread).
    next: Cell<usize>,
}

impl Plan {
    fn new(mode: Mode, host: &str, cookies: &[String]) -> Plan {
        let (method, target) = match mode {
            Mode::GetAll | Mode::Visit => ("GET", "/api/sessions?items=*"),
            Mode::GetItems => (
                "GET",
                "/api/sessions?items=account.id,store.channel,public.k",
            ),
            Mode::Patch | Mode::Login => ("PATCH", "/api/sessions"),
            Mode::Create => ("POST", "/api/sessions"),
        };
        let head = |cookie: Option<&str>| {
            let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {host}\r\n");
            if mode != Mode::Visit {
                head.push_str("content-type: application/json\r\n");
            }
            if let Some(cookie) = cookie {
                head.push_str(&format!("cookie: {cookie}\r\n"));
            }
            head
        };
        let finish = |mut head: String, body: &str| {
            if mode != Mode::Patch {
                if !body.is_empty() || method != "GET" {
                    head.push_str(&format!("content-length: {}\r\n", body.len()));
                }
                head.push_str("\r\n");
                head.push_str(body);
            }
            head.into_bytes()
        };
        let body = match mode {
            Mode::Login => "{}",
            Mode::Create => r#"{"public":{"k":{"value":"v"}}}"#,
            _ => "",
        };
        let requests = if cookies.is_empty() || matches!(mode, Mode::Create | Mode::Visit) {
            vec![finish(head(None), body)]
        } else {
            cookies
                .iter()
                .map(|c| finish(head(Some(c)), body))
                .collect()
        };
        Plan {
            mode,
            requests,
            next: Cell::new(0),
        }
    }

    /// Writes the next request into `out`.
    fn request(&self, out: &mut Vec<u8>) {
        let n = self.next.get();
        self.next.set(n + 1);
        out.clear();
        out.extend_from_slice(&self.requests[n % self.requests.len()]);
        if self.mode == Mode::Patch {
            let mut digits = itoa::Buffer::new();
            let value = digits.format(n);
            let length = r#"{"public":{"k":{"value":""}}}"#.len() + value.len();
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n\r\n{\"public\":{\"k\":{\"value\":\"");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\"}}}");
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Latency of every answered request, in microseconds.
    latencies: Vec<u32>,
    failed: u64,
    /// The first failure, for the report.
    error: Option<String>,
}

impl Tally {
    fn fail(&mut self, error: String) {
        self.failed += 1;
        self.error.get_or_insert(error);
    }
}

/// The length of the answer at the start of `buffer` (head and body), once all of it is
/// there, and whether its status is 2xx.
fn answer(buffer: &[u8]) -> Result<Option<(usize, bool)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buffer) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("unreadable answer: {e}")),
    };
    let mut length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a chunked answer (the generator reads Content-Length only)".into());
        }
    }
    let length = length.ok_or("an answer without Content-Length")?;
    let ok = matches!(response.code, Some(200..=299));
    Ok((buffer.len() >= head + length).then_some((head + length, ok)))
}

async fn connection(address: String, plan: Rc<Plan>, until: Instant, tally: Rc<RefCell<Tally>>) {
    let mut out = Vec::with_capacity(4096);
    let mut buffer = Vec::with_capacity(16384);
    'connect: while Instant::now() < until {
        let mut stream = match TcpStream::connect(&address).await {
            Ok(stream) => stream,
            Err(e) => {
                tally.borrow_mut().fail(format!("connect: {e}"));
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        buffer.clear();
        loop {
            let sent = Instant::now();
            if sent >= until {
                return;
            }
            plan.request(&mut out);
            if let Err(e) = stream.write_all(&out).await {
                tally.borrow_mut().fail(format!("write: {e}"));
                continue 'connect;
            }
            let (length, ok) = loop {
                match answer(&buffer) {
                    Ok(Some(done)) => break done,
                    Ok(None) => {}
                    Err(e) => {
                        tally.borrow_mut().fail(e);
                        continue 'connect;
                    }
                }
                if buffer.capacity() - buffer.len() < 4096 {
                    buffer.reserve(16384);
                }
                match stream.read_buf(&mut buffer).await {
                    Ok(0) => {
                        tally.borrow_mut().fail("closed by the server".into());
                        continue 'connect;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tally.borrow_mut().fail(format!("read: {e}"));
                        continue 'connect;
                    }
                }
            };
            buffer.drain(..length);
            if buffer.is_empty() {
                // The whole answer is read and the server sends nothing unasked: the socket is
                // empty, so the next read waits for readiness instead of first trying a
                // receive that would find nothing (a system call per request saved).
                let _ = stream.try_io(Interest::READABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
            let mut tally = tally.borrow_mut();
            tally
                .latencies
                .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            if !ok {
                tally.fail("an answer outside 2xx".into());
            }
        }
    }
}

/// Idle and total time of each core so far (jiffies): its `cpuN` line of `/proc/stat`, idle
/// and I/O wait against every field.
fn cores() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let n: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let idle = n.get(3).copied().unwrap_or(0) + n.get(4).copied().unwrap_or(0);
            (idle, n.iter().take(8).sum())
        })
        .collect()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut option = |name: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == name) {
            Some(i) if i + 1 < args.len() => {
                let value = args.remove(i + 1).parse().context(name.to_owned())?;
                args.remove(i);
                Ok(value)
            }
            Some(_) => bail!("{name} takes a value"),
            None => Ok(default),
        }
    };
    let connections = option("--connections", 64)?;
    let seconds = option("--duration", 10)?;
    let (name, url, tokens) = match args.as_slice() {
        [mode, url] => (mode.clone(), url.clone(), None),
        [mode, url, tokens] => (mode.clone(), url.clone(), Some(tokens.clone())),
        _ => bail!("usage: load MODE URL [TOKENS] [--connections C] [--duration SECONDS]"),
    };
    let mode = Mode::parse(&name)?;
    let address = url
        .strip_prefix("http://")
        .context("URL must be http://HOST:PORT")?
        .trim_end_matches('/')
        .to_owned();
    let identity = std::env::var("IDENTITY").unwrap_or_default();
    let mut cookies = Vec::new();
    if let Some(path) = tokens.filter(|p| !p.is_empty()) {
        let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        for token in text.lines().filter(|l| !l.is_empty()) {
            cookies.push(match mode {
                Mode::Login => {
                    format!("vtex_session={token}; VtexIdclientAutCookie_demo={identity}; _ga=1")
                }
                _ => format!("vtex_session={token}"),
            });
        }
    }
    if mode.needs_tokens() && name != "baseline" && cookies.is_empty() {
        bail!("{name} needs a TOKENS file");
    }
    let plan = Rc::new(Plan::new(mode, &address, &cookies));
    drop(cookies);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let before = cores();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tallies: Vec<_> = (0..connections)
        .map(|_| Rc::new(RefCell::new(Tally::default())))
        .collect();
    local.block_on(&runtime, async {
        let tasks: Vec<_> = tallies
            .iter()
            .map(|tally| {
                tokio::task::spawn_local(connection(
                    address.clone(),
                    plan.clone(),
                    until,
                    tally.clone(),
                ))
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let idle: Vec<String> = cores()
        .iter()
        .zip(&before)
        .map(|(&(idle, total), &(idle0, total0))| {
            let share = 100.0 * idle.saturating_sub(idle0) as f64;
            format!("{:.1}", share / total.saturating_sub(total0).max(1) as f64)
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut error = None;
    for tally in &tallies {
        let tally = tally.borrow();
        latencies.extend_from_slice(&tally.latencies);
        failed += tally.failed;
        error = error.or(tally.error.clone());
    }
    if let Some(error) = error {
        eprintln!("load: {failed} failed requests, the first: {error}");
    }
    latencies.sort_unstable();
    println!(
        "RESULT {name} {:.1} {:.3} {:.3} {} {failed}",
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.len(),
    );
    println!("IDLE {}", idle.join(" "));
    Ok(())
}
