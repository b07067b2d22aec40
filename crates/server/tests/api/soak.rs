//! Crash soak: concurrent writers create, edit, log in and reset sessions on the real `sessiond`
//! binary while it is SIGKILLed again and again (on Redis, also while `redis-server` is
//! SIGKILLed under a running `sessiond`). After each kill, and once the store serves again,
//! every session the writers touched is read back: each acknowledged write is there, a write
//! in flight at the kill is there entirely or not at all, and nothing else.
//!
//! Each writer keeps a model of its sessions: the token, the counter `k` of the last
//! acknowledged edit (every edit writes `public.a` and `public.b`, both `k`, in one request),
//! whether the session is logged in, and whether its token was ended by a reset or a log-in.
//! What a writer sent and got no 2xx for when the kill came is its write in flight.
//!
//! Knobs, from the environment:
//! - `SESSIOND_SOAK_KILLS`: kills per soak (default 20; 10 when Redis is the one killed);
//! - `SESSIOND_SOAK_STORE` (`embedded` or `redis`) and `SESSIOND_SOAK_KILL` (`sessiond` or
//!   `redis`): when set, only the soaks of that store, or that kill target, run;
//! - `SESSIOND_SOAK_SEED`: the seed of the random choices (printed by every run), to replay
//!   the kill points and the writers' choices of a run (the interleaving stays the machine's).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sessiond_testkit::RedisServer;
use tokio::sync::mpsc;

use crate::harness::{listening_base, mint, sessiond, token_id, STORE_COOKIE};

/// Concurrent writers.
const WRITERS: usize = 8;
/// The demo customer the writers log in as.
const EMAIL: &str = "alice@example.com";
/// Kills per soak unless `SESSIOND_SOAK_KILLS` says otherwise: a kill of Redis costs more
/// (every request then waits for the store timeout to answer 503), so it has fewer.
fn default_kills(target: Target) -> usize {
    match target {
        Target::Sessiond => 20,
        Target::Redis => 10,
    }
}
/// A kill comes after this many acknowledged writes (all writers together) at least…
const KILL_AFTER_MIN: u64 = 20;
/// …and at most.
const KILL_AFTER_MAX: u64 = 200;
/// Live sessions of earlier rounds each writer reads again after a kill (all are read after
/// the last one).
const SAMPLE: usize = 4;
/// Longer than this without an answer is a hang, not a slow machine.
const REQUEST_BOUND: Duration = Duration::from_secs(60);
/// How long a restarted process, or a restarted Redis, may take to be ready.
const READY_BOUND: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Embedded,
    Redis,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::Redis => "redis",
        }
    }
}

/// The process SIGKILLed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Sessiond,
    Redis,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Sessiond => "sessiond",
            Target::Redis => "redis",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_every_acknowledged_write_across_sigkills_of_sessiond() {
    soak(Store::Embedded, Target::Sessiond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_every_acknowledged_write_across_sigkills_of_sessiond() {
    soak(Store::Redis, Target::Sessiond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_every_acknowledged_write_across_sigkills_of_redis() {
    soak(Store::Redis, Target::Redis).await;
}

/// The number of kills, or `None` when the environment selects other soaks.
fn configured(store: Store, target: Target) -> Option<usize> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    for (name, wanted, choices) in [
        ("SESSIOND_SOAK_STORE", store.name(), ["embedded", "redis"]),
        ("SESSIOND_SOAK_KILL", target.name(), ["sessiond", "redis"]),
    ] {
        if let Some(value) = var(name) {
            assert!(
                choices.contains(&value.as_str()),
                "{name}={value}: one of {choices:?}"
            );
            if value != wanted {
                eprintln!(
                    "soak {}/{}: not run ({name}={value})",
                    store.name(),
                    target.name()
                );
                return None;
            }
        }
    }
    Some(
        var("SESSIOND_SOAK_KILLS").map_or(default_kills(target), |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("SESSIOND_SOAK_KILLS={v}: a number"))
        }),
    )
}

/// Runs blocking work (starting or killing a process) from the test's runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// SplitMix64: small, seedable, good enough to choose operations.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A `sessiond serve` process, SIGKILLed (and waited for) when dropped. Its log goes to a file
/// that survives it, so that a process that fails to start again can say why.
struct Sessiond(Child);

impl Sessiond {
    /// Starts `sessiond serve --listen 127.0.0.1:0 args…`: the process and its base URL.
    fn start(args: &[OsString], log: &Path) -> (Sessiond, String) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = sessiond()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("the sessiond binary starts");
        let base =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listening_base(&mut child)));
        match base {
            Ok(base) => (Sessiond(child), base),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "sessiond did not start on its data ({status:?}); its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            }
        }
    }
}

impl Drop for Sessiond {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `GET /ready` until it answers `status` (bounded).
async fn ready_becomes(client: &reqwest::Client, base: &str, status: StatusCode) {
    let started = Instant::now();
    loop {
        let answer = client.get(format!("{base}/ready")).send().await;
        if answer.as_ref().is_ok_and(|a| a.status() == status) {
            return;
        }
        assert!(
            started.elapsed() < READY_BOUND,
            "{base}/ready did not answer {status} within {READY_BOUND:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The body of one edit: `public.a` and `public.b`, both `k`.
fn counters(k: u64) -> Value {
    json!({"public": {"a": {"value": k.to_string()}, "b": {"value": k.to_string()}}})
}

/// One operation of a writer, with the counter it writes.
#[derive(Clone, Debug)]
enum Op {
    /// POST without a token: a new session with `a` = `b` = k.
    Create(u64),
    /// PATCH with the session cookie alone: `a` = `b` = k.
    Edit(u64),
    /// PATCH with the session cookie and the identity cookie: a log-in, and `a` = `b` = k.
    LogIn(u64),
    /// DELETE: the session ends, a fresh one takes its place.
    Reset,
}

/// One session as its writer knows it.
struct Tracked {
    token: String,
    id: String,
    /// The counter of the last acknowledged write (`None`: `a` and `b` absent).
    counter: Option<u64>,
    logged_in: bool,
    /// Ended by a reset or a log-in: its token must no longer read it.
    dead: bool,
    /// The last round that changed what is known of it.
    touched: usize,
    /// What happened to it, for a report.
    history: Vec<String>,
}

impl Tracked {
    fn new(token: String, counter: Option<u64>, logged_in: bool, round: usize) -> Tracked {
        Tracked {
            id: token_id(&token),
            token,
            counter,
            logged_in,
            dead: false,
            touched: round,
            history: Vec::new(),
        }
    }

    fn note(&mut self, round: usize, what: String) {
        self.touched = round;
        if self.history.len() == 12 {
            self.history.remove(0);
        }
        self.history.push(format!("round {round}: {what}"));
    }

    fn expected(&self) -> String {
        if self.dead {
            return "ended (its token reads a fresh session)".into();
        }
        format!(
            "a = b = {:?}, logged in: {}",
            self.counter.map(|k| k.to_string()),
            self.logged_in
        )
    }
}

/// What the writers of one round share.
struct Round {
    number: usize,
    base: String,
    client: reqwest::Client,
    identity: String,
    target: Target,
    /// Writes acknowledged in this round, all writers together.
    acked: AtomicUsize,
    /// The kill comes when `acked` reaches this.
    kill_at: usize,
    /// Set just before the kill: from then on a failed request is the kill's doing.
    killed: AtomicBool,
}

enum Outcome {
    /// A 2xx answer, with its body when it could be read whole.
    Acked(Option<Value>),
    /// No answer, or 503 while Redis is down: the write is in flight; the writer stops.
    InFlight,
    /// Something that must not happen.
    Failed(String),
}

/// One writer: its sessions, what it has in flight, what went wrong.
struct Writer {
    index: usize,
    rng: Rng,
    /// The next counter value: unique over all the writer's writes.
    next: u64,
    sessions: Vec<Tracked>,
    /// The session its next edit, log-in or reset goes to.
    current: Option<usize>,
    in_flight: Option<Op>,
    acked: usize,
    failures: Vec<String>,
}

impl Writer {
    fn new(index: usize, seed: u64) -> Writer {
        Writer {
            index,
            rng: Rng(seed ^ (index as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)),
            next: 1,
            sessions: Vec::new(),
            current: None,
            in_flight: None,
            acked: 0,
            failures: Vec::new(),
        }
    }

    fn choose(&mut self) -> Op {
        let k = self.next;
        self.next += 1;
        if self.current.is_none() {
            return Op::Create(k);
        }
        match self.rng.below(100) {
            0..=69 => Op::Edit(k),
            70..=81 => Op::LogIn(k),
            82..=89 => Op::Reset,
            _ => Op::Create(k),
        }
    }

    /// Writes until its request fails (the kill) or something goes wrong.
    async fn run(mut self, round: Arc<Round>, kill: mpsc::UnboundedSender<()>) -> Writer {
        loop {
            let op = self.choose();
            self.in_flight = Some(op.clone());
            match self.send(&round, &op).await {
                Outcome::Acked(body) => {
                    if body.is_none() && !matches!(op, Op::Edit(_)) {
                        // Applied, but the new token was not received whole: in flight.
                        return self;
                    }
                    self.in_flight = None;
                    self.acked += 1;
                    self.apply(round.number, op, body.as_ref());
                    if round.acked.fetch_add(1, Ordering::SeqCst) + 1 == round.kill_at {
                        let _ = kill.send(());
                    }
                    if body.is_none() || !self.failures.is_empty() {
                        return self;
                    }
                }
                Outcome::InFlight => return self,
                Outcome::Failed(why) => {
                    self.failures.push(why);
                    return self;
                }
            }
        }
    }

    async fn send(&self, round: &Round, op: &Op) -> Outcome {
        let session = self.current.map(|i| &self.sessions[i]);
        let cookie = || format!("vtex_session={}", session.unwrap().token);
        let (method, cookie, body, expected) = match op {
            Op::Create(k) => (Method::POST, None, Some(counters(*k)), StatusCode::CREATED),
            Op::Edit(k) => (
                Method::PATCH,
                Some(cookie()),
                Some(counters(*k)),
                StatusCode::OK,
            ),
            Op::LogIn(k) => (
                Method::PATCH,
                Some(format!("{}; {STORE_COOKIE}={}", cookie(), round.identity)),
                Some(counters(*k)),
                StatusCode::OK,
            ),
            Op::Reset => (Method::DELETE, Some(cookie()), None, StatusCode::OK),
        };
        let what = format!(
            "writer {} round {}: {op:?} of session {}",
            self.index,
            round.number,
            session.map_or("(new)", |s| s.id.as_str())
        );
        let mut request = round
            .client
            .request(method, format!("{}/api/sessions", round.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                return if round.target == Target::Sessiond && round.killed.load(Ordering::SeqCst) {
                    Outcome::InFlight
                } else {
                    Outcome::Failed(format!("{what}: no answer: {e}"))
                };
            }
        };
        let status = answer.status();
        let text = answer.text().await;
        let body = text
            .as_ref()
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(t).ok());
        if status == expected && body.is_none() && !round.killed.load(Ordering::SeqCst) {
            Outcome::Failed(format!("{what}: answered {status} with {text:?}"))
        } else if status == expected {
            Outcome::Acked(body)
        } else if status == StatusCode::SERVICE_UNAVAILABLE
            && round.target == Target::Redis
            && round.killed.load(Ordering::SeqCst)
            && body.as_ref().is_some_and(|b| b["type"] == "Unavailable")
        {
            Outcome::InFlight
        } else {
            Outcome::Failed(format!(
                "{what}: answered {status} (expected {expected}): {}",
                text.unwrap_or_else(|e| e.to_string())
            ))
        }
    }

    /// Records an acknowledged `op`.
    fn apply(&mut self, round: usize, op: Op, body: Option<&Value>) {
        let token = body
            .and_then(|b| b["sessionToken"].as_str())
            .map(str::to_owned);
        if let Op::Create(k) = op {
            let Some(token) = token else {
                self.failures
                    .push(format!("writer {}: a create answered {body:?}", self.index));
                return;
            };
            let mut created = Tracked::new(token, Some(k), false, round);
            created.note(round, format!("created with a = b = {k} (acknowledged)"));
            self.sessions.push(created);
            self.current = Some(self.sessions.len() - 1);
            return;
        }
        let current = self.current.expect("an edit has a session");
        let session = &mut self.sessions[current];
        let token = match token {
            Some(token) => token,
            // An edit acknowledged by its status, its body cut short by the kill.
            None if matches!(op, Op::Edit(_)) => session.token.clone(),
            None => {
                self.failures.push(format!(
                    "writer {}: {op:?} of session {} answered {body:?}",
                    self.index, session.id
                ));
                return;
            }
        };
        let moved = token_id(&token) != session.id;
        let mut failure = None;
        match op {
            Op::Create(_) => unreachable!(),
            Op::Edit(k) => {
                if moved {
                    failure = Some(format!("an edit moved it to {}", token_id(&token)));
                }
                session.counter = Some(k);
                session.note(round, format!("a = b = {k} (acknowledged)"));
            }
            Op::LogIn(k) if !moved => {
                if !session.logged_in {
                    failure = Some("a log-in kept the session id".to_owned());
                }
                session.counter = Some(k);
                session.logged_in = true;
                session.token = token;
                session.note(
                    round,
                    format!("logged in again, a = b = {k} (acknowledged)"),
                );
            }
            Op::LogIn(k) => {
                session.dead = true;
                let mut next = Tracked::new(token, Some(k), true, round);
                session.note(round, format!("ended by a log-in, now {}", next.id));
                next.note(
                    round,
                    format!("logged in from {}, a = b = {k} (acknowledged)", session.id),
                );
                self.sessions.push(next);
                self.current = Some(self.sessions.len() - 1);
            }
            Op::Reset => {
                if !moved {
                    failure = Some("a reset kept the session id".to_owned());
                }
                session.dead = true;
                let mut next = Tracked::new(token, None, false, round);
                session.note(round, format!("reset, now {}", next.id));
                next.note(round, format!("fresh after the reset of {}", session.id));
                self.sessions.push(next);
                self.current = Some(self.sessions.len() - 1);
            }
        }
        if let Some(why) = failure {
            self.failures.push(format!(
                "writer {} round {round}: session {}: {why}",
                self.index, self.sessions[current].id
            ));
        }
    }

    /// After a kill and a restart: reads back the sessions of this round, the one the write in
    /// flight went to, a sample of older ones (all of them when `all`), and settles the write
    /// in flight.
    async fn check(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        round: usize,
        all: bool,
    ) -> Checked {
        let mut checked = Checked::default();
        let in_flight = self.in_flight.take();
        let target = match in_flight {
            None => None,
            Some(Op::Create(_)) => {
                // Its token never arrived: nothing to read. (An orphan session at most.)
                checked.unknown += 1;
                None
            }
            Some(_) => self.current,
        };
        let mut older: Vec<usize> = (0..self.sessions.len())
            .filter(|&i| !self.sessions[i].dead && self.sessions[i].touched < round)
            .collect();
        let mut sample = Vec::new();
        while sample.len() < SAMPLE && !older.is_empty() {
            let pick = self.rng.below(older.len() as u64) as usize;
            sample.push(older.swap_remove(pick));
        }
        for i in 0..self.sessions.len() {
            let op = if Some(i) == target {
                in_flight.clone()
            } else {
                None
            };
            if !(all || op.is_some() || self.sessions[i].touched == round || sample.contains(&i)) {
                continue;
            }
            let session = &mut self.sessions[i];
            let seen = match read(client, base, &session.token).await {
                Ok(seen) => seen,
                Err(why) => {
                    checked.failures.push(format!(
                        "writer {} session {}: {why}\n  history: {:#?}",
                        self.index, session.id, session.history
                    ));
                    continue;
                }
            };
            checked.reads += 1;
            match settle(session, op.as_ref(), &seen) {
                Ok(Settled::Held) => {}
                Ok(Settled::NotApplied) => {
                    checked.not_applied += 1;
                    session.note(round, format!("{op:?} in flight at the kill: not applied"));
                }
                Ok(Settled::Applied { counter }) => {
                    checked.applied += 1;
                    session.counter = counter;
                    session.logged_in |= matches!(op, Some(Op::LogIn(_)));
                    session.note(round, format!("{op:?} in flight at the kill: applied"));
                }
                Ok(Settled::Ended) => {
                    // Applied: the session moved to a token that never arrived.
                    checked.applied += 1;
                    session.dead = true;
                    session.note(
                        round,
                        format!("{op:?} in flight at the kill: applied, ended"),
                    );
                    self.current = None;
                }
                Err(why) => checked.failures.push(format!(
                    "writer {} session {}: {why}\n  in flight at the kill: {op:?}\n  \
                     expected: {}\n  found: {}\n  history: {:#?}",
                    self.index,
                    session.id,
                    session.expected(),
                    seen.raw,
                    session.history
                )),
            }
        }
        checked
    }
}

/// What reading the sessions back found, all writers together.
#[derive(Default)]
struct Checked {
    reads: usize,
    /// Writes in flight at a kill found applied, whole.
    applied: usize,
    /// Writes in flight at a kill found not applied at all.
    not_applied: usize,
    /// Creates in flight at a kill: their token never arrived, nothing to read.
    unknown: usize,
    failures: Vec<String>,
}

impl Checked {
    fn add(&mut self, other: Checked) {
        self.reads += other.reads;
        self.applied += other.applied;
        self.not_applied += other.not_applied;
        self.unknown += other.unknown;
        self.failures.extend(other.failures);
    }
}

/// A session as `GET /api/sessions?items=*` answered it.
struct Seen {
    id: String,
    active: bool,
    a: Option<String>,
    b: Option<String>,
    authentication: Option<String>,
    profile: Option<String>,
    raw: Value,
}

impl Seen {
    /// `a` = `b`, as a counter; an error when they differ (a half-applied edit).
    fn counter(&self) -> Result<Option<u64>, String> {
        if self.a != self.b {
            return Err(format!(
                "half-applied edit: a = {:?}, b = {:?}",
                self.a, self.b
            ));
        }
        self.a
            .as_deref()
            .map(|a| a.parse().map_err(|_| format!("a = {a:?}: not a counter")))
            .transpose()
    }

    /// Logged in as [`EMAIL`] in both `authentication` and `profile`, or in neither.
    fn logged_in(&self) -> Result<bool, String> {
        match (self.authentication.as_deref(), self.profile.as_deref()) {
            (Some(EMAIL), Some(EMAIL)) => Ok(true),
            (None, None) => Ok(false),
            (a, p) => Err(format!(
                "half a log-in: authentication.storeUserEmail = {a:?}, profile.email = {p:?}"
            )),
        }
    }
}

async fn read(client: &reqwest::Client, base: &str, token: &str) -> Result<Seen, String> {
    let answer = client
        .get(format!("{base}/api/sessions?items=*"))
        .header("cookie", format!("vtex_session={token}"))
        .send()
        .await
        .map_err(|e| format!("reading it back: {e}"))?;
    let status = answer.status();
    let text = answer.text().await.map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!("reading it back answered {status}: {text}"));
    }
    let raw: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    let text_at = |ns: &str, key: &str| {
        raw["namespaces"][ns][key]["value"]
            .as_str()
            .map(str::to_owned)
    };
    Ok(Seen {
        id: raw["id"].as_str().unwrap_or_default().to_owned(),
        active: raw["active"] == true,
        a: text_at("public", "a"),
        b: text_at("public", "b"),
        authentication: text_at("authentication", "storeUserEmail"),
        profile: text_at("profile", "email"),
        raw,
    })
}

enum Settled {
    /// As the model says (nothing was in flight).
    Held,
    /// The write in flight was not applied.
    NotApplied,
    /// The write in flight was applied, whole.
    Applied { counter: Option<u64> },
    /// The reset or log-in in flight was applied: the session moved to a new id.
    Ended,
}

/// Whether `seen` is what `session`'s model allows, given the write `op` in flight to it.
fn settle(session: &Tracked, op: Option<&Op>, seen: &Seen) -> Result<Settled, String> {
    let counter = seen.counter()?;
    let logged_in = seen.logged_in()?;
    let same = seen.id == session.id;
    let fresh = !same && counter.is_none() && !logged_in;
    if session.dead {
        return if fresh {
            Ok(Settled::Held)
        } else if same {
            Err("the token of an ended session still reads it".into())
        } else {
            Err("the token of an ended session reads a session with data".into())
        };
    }
    let lost = |what: &str| {
        Err(format!(
            "{what} (a = b = {counter:?}, logged in: {logged_in})"
        ))
    };
    let held = same && seen.active && counter == session.counter && logged_in == session.logged_in;
    match op {
        None if held => Ok(Settled::Held),
        None if !same => lost("the session is gone: its token reads another one"),
        None => lost("not the last acknowledged state"),
        Some(_) if held => Ok(Settled::NotApplied),
        Some(Op::LogIn(_)) if fresh && !session.logged_in => Ok(Settled::Ended),
        Some(Op::Reset) if fresh => Ok(Settled::Ended),
        Some(_) if !same => lost("the session is gone: its token reads another one"),
        Some(Op::Edit(k))
            if seen.active && counter == Some(*k) && logged_in == session.logged_in =>
        {
            Ok(Settled::Applied { counter })
        }
        Some(Op::LogIn(k)) if seen.active && counter == Some(*k) && logged_in => {
            if session.logged_in {
                Ok(Settled::Applied { counter })
            } else {
                lost("a log-in applied without a new session id")
            }
        }
        Some(_) => lost("neither the last acknowledged state nor the write in flight, whole"),
    }
}

/// Every `sessiond serve` argument but `--listen`.
fn serve_args(data: &Path, redis: Option<&RedisServer>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--data-dir".into(), data.into()];
    if let Some(redis) = redis {
        args.extend(["--store".into(), redis.url().into()]);
    }
    args
}

/// While Redis is down: `/ready` says so and an edit is answered 503 `Unavailable`, in time.
async fn answers_unavailable(client: &reqwest::Client, base: &str, probe: &str, round: usize) {
    ready_becomes(client, base, StatusCode::SERVICE_UNAVAILABLE).await;
    let started = Instant::now();
    let answer = client
        .patch(format!("{base}/api/sessions"))
        .header("cookie", format!("vtex_session={probe}"))
        .json(&json!({"public": {"probe": {"value": round.to_string()}}}))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (status, &body["type"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("Unavailable")),
        "an edit while Redis is down: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503 after {:?}",
        started.elapsed()
    );
}

/// The soak on `store`, SIGKILLing `target` (see the module's documentation).
async fn soak(store: Store, target: Target) {
    let Some(kills) = configured(store, target) else {
        return;
    };
    let name = format!("soak {}/kill {}", store.name(), target.name());
    let seed = std::env::var("SESSIOND_SOAK_SEED")
        .ok()
        .map(|s| s.parse().expect("SESSIOND_SOAK_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{name}: {kills} kills, seed {seed} (SESSIOND_SOAK_SEED={seed} replays it)");
    let started = Instant::now();
    let mut rng = Rng(seed);

    let mut redis = (store == Store::Redis).then(|| {
        blocking(|| RedisServer::with_args(&["--appendonly", "yes", "--appendfsync", "always"]))
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log: PathBuf = dir.path().join("sessiond.log");
    let args = serve_args(&data, redis.as_ref());
    let client = reqwest::Client::builder()
        .timeout(REQUEST_BOUND)
        .build()
        .unwrap();
    let (process, mut base) = blocking(|| Sessiond::start(&args, &log));
    let mut process = Some(process);
    ready_becomes(&client, &base, StatusCode::OK).await;
    let identity = blocking(|| mint("demo", EMAIL, false, None));
    // A session of no writer's, edited while Redis is down.
    let probe = crate::harness::create_session_at(&base, json!({})).await;

    let mut writers: Vec<Writer> = (0..WRITERS).map(|i| Writer::new(i, seed)).collect();
    let mut totals = Checked::default();
    let mut lost = 0;
    for kill in 1..=kills {
        let round = Arc::new(Round {
            number: kill,
            base: base.clone(),
            client: client.clone(),
            identity: identity.clone(),
            target,
            acked: AtomicUsize::new(0),
            kill_at: (KILL_AFTER_MIN + rng.below(KILL_AFTER_MAX - KILL_AFTER_MIN + 1)) as usize,
            killed: AtomicBool::new(false),
        });
        let (kill_tx, mut kill_rx) = mpsc::unbounded_channel();
        let tasks: Vec<_> = writers
            .drain(..)
            .map(|w| tokio::spawn(w.run(round.clone(), kill_tx.clone())))
            .collect();
        drop(kill_tx);
        // The kill_at-th acknowledged write (or every writer stopped by a failure).
        let _ = kill_rx.recv().await;
        round.killed.store(true, Ordering::SeqCst);
        match target {
            Target::Sessiond => blocking(|| drop(process.take())),
            Target::Redis => {
                blocking(|| redis.as_mut().unwrap().stop());
                answers_unavailable(&client, &base, &probe, kill).await;
            }
        }
        for task in tasks {
            writers.push(task.await.unwrap());
        }
        match target {
            Target::Sessiond => {
                let (started, new_base) = blocking(|| Sessiond::start(&args, &log));
                process = Some(started);
                base = new_base;
            }
            Target::Redis => blocking(|| redis.as_mut().unwrap().restart()),
        }
        ready_becomes(&client, &base, StatusCode::OK).await;

        let last = kill == kills;
        let mut failures: Vec<String> = writers
            .iter_mut()
            .flat_map(|w| std::mem::take(&mut w.failures))
            .collect();
        let checks = writers
            .iter_mut()
            .map(|w| w.check(&client, &base, kill, last));
        for checked in futures::future::join_all(checks).await {
            totals.add(checked);
        }
        failures.append(&mut totals.failures);
        lost += failures.len();
        assert!(
            failures.is_empty(),
            "{name}, seed {seed}, kill {kill} of {kills} (after {} acknowledged writes of the \
             round): {} failure(s):\n{}\nsessiond's log:\n{}",
            round.acked.load(Ordering::SeqCst),
            failures.len(),
            failures.join("\n"),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let acked: usize = writers.iter().map(|w| w.acked).sum();
    let sessions: usize = writers.iter().map(|w| w.sessions.len()).sum();
    eprintln!(
        "{name}: {kills} kills in {:.1?}, seed {seed}: {acked} acknowledged writes checked \
         ({sessions} sessions, {} reads; in flight at a kill: {} applied whole, {} not applied, \
         {} creates unseen), writes lost: {lost}",
        started.elapsed(),
        totals.reads,
        totals.applied,
        totals.not_applied,
        totals.unknown,
    );
    assert_eq!(lost, 0);
}
