//! Sessions as this process last saw them, shared by `Arc`, with the parts of their answers
//! that depend only on the stored session computed once: the `?items=*` body, the segment
//! token and the `Set-Cookie` lines.
//!
//! [`SessionCache`] keeps recently used snapshots by id. It is only correct when this process
//! is the store's only writer (the embedded and memory stores), because every save goes through
//! the service, which replaces the cached snapshot after the store accepted the write.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock};

use axum::body::Bytes;
use axum::http::HeaderValue;
use indexmap::IndexMap;
use serde::Serialize;
use sessiond_core::items::Selection;
use sessiond_core::{Items, Key, Segment, Session, SessionId};

use crate::prehashed::RandomKeys;
use crate::request::{set_cookie, SEGMENT_COOKIE, SESSION_COOKIE};

/// Longest `items` filter whose answer is kept with a snapshot: a request cannot make every
/// cached session hold a long string of its choosing.
const MAX_KEPT_FILTER: usize = 256;

/// The attributes of the token cookies (the same for every answer of a process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CookieStyle {
    /// `Max-Age`, seconds.
    pub max_age: u64,
    /// Whether cookies carry `Secure`.
    pub secure: bool,
}

/// The JSON shape of a session answer.
#[derive(Serialize)]
struct SessionAnswer<'a> {
    id: &'a SessionId,
    namespaces: Selection<'a>,
    version: u64,
    active: bool,
    debug: bool,
}

/// A segment token and its `Set-Cookie` line.
#[derive(Debug)]
struct SegmentLines {
    token: String,
    cookie: HeaderValue,
}

/// Most segments whose lines are shared (see [`shared_segment`]); past that the table starts
/// over, so requests that make up many distinct segments cannot grow it without bound.
const MAX_SHARED_SEGMENTS: usize = 4096;

/// The lines of every segment seen lately, by content and cookie style. A store's sessions
/// share a handful of segments (that is what makes the token a cache key), so snapshots hold
/// one `Arc` each instead of their own copy of about 700 bytes.
static SEGMENTS: LazyLock<Mutex<SegmentTable>> = LazyLock::new(Mutex::default);

type SegmentTable = HashMap<(CookieStyle, Segment), Arc<SegmentLines>>;

/// The shared lines of `segment` in `style`, made if not known.
fn shared_segment(segment: Segment, style: CookieStyle) -> Arc<SegmentLines> {
    // Each operation is one lookup or insert: a panic cannot leave the table half-written.
    let mut table = SEGMENTS.lock().unwrap_or_else(|p| p.into_inner());
    let key = (style, segment);
    if let Some(lines) = table.get(&key) {
        return lines.clone();
    }
    let token = key.1.encode();
    let cookie = set_cookie(SEGMENT_COOKIE, &token, style.max_age, style.secure);
    let lines = Arc::new(SegmentLines { token, cookie });
    if table.len() >= MAX_SHARED_SEGMENTS {
        table.clear();
    }
    table.insert(key, lines.clone());
    lines
}

/// The part of a `vtex_session` cookie line that names the token.
fn token_of(line: &HeaderValue) -> &[u8] {
    let bytes = line.as_bytes();
    let start = SESSION_COOKIE.len() + 1;
    let end = bytes.iter().position(|&b| b == b';').unwrap_or(bytes.len());
    bytes.get(start..end).unwrap_or_default()
}

/// A stored session and what its answers are made of.
pub struct Snapshot {
    /// The session as stored.
    pub session: Session,
    all: OnceLock<Bytes>,
    /// The answer to the first other `items` filter asked for (storefronts ask the same one on
    /// every page view).
    filtered: OnceLock<(Box<str>, Bytes)>,
    segment: OnceLock<Arc<SegmentLines>>,
    /// The `Set-Cookie` line of the first session token asked for.
    token: OnceLock<HeaderValue>,
}

impl Snapshot {
    /// A snapshot of `session`; nothing is computed until asked for.
    pub fn new(session: Session) -> Self {
        Snapshot {
            session,
            all: OnceLock::new(),
            filtered: OnceLock::new(),
            segment: OnceLock::new(),
            token: OnceLock::new(),
        }
    }

    /// A snapshot of `session`, the next stored version of `previous`'s session, which differs
    /// from it in the keys `changed` yields (or fewer): what does not depend on the change (the
    /// segment, when none of its inputs changed, and the session-token cookie line) is carried
    /// over instead of computed again.
    pub fn successor<'k>(
        session: Session,
        previous: &Snapshot,
        mut changed: impl Iterator<Item = &'k Key>,
    ) -> Self {
        let next = Snapshot::new(session);
        if let Some(segment) = previous.segment.get() {
            if !changed.any(Segment::reads) {
                let _ = next.segment.set(segment.clone());
            }
        }
        if let Some(token) = previous.token.get() {
            if previous.session.id == next.session.id {
                let _ = next.token.set(token.clone());
            }
        }
        next
    }

    /// The session answer (`{"id","namespaces","version","active","debug"}`) for the raw
    /// `items` filter (`None`: no values).
    pub fn answer(&self, raw_items: Option<&str>) -> Bytes {
        let Some(raw) = raw_items else {
            return self.render(&Items::default());
        };
        if let Some((kept, answer)) = self.filtered.get() {
            if **kept == *raw {
                return answer.clone();
            }
        }
        let items = Items::parse(raw);
        if items.selects_all() {
            return self.all.get_or_init(|| self.render(&items)).clone();
        }
        if raw.len() > MAX_KEPT_FILTER {
            return self.render(&items);
        }
        let (kept, answer) = self
            .filtered
            .get_or_init(|| (raw.into(), self.render(&items)));
        if **kept == *raw {
            answer.clone()
        } else {
            self.render(&items)
        }
    }

    fn render(&self, items: &Items) -> Bytes {
        let s = &self.session;
        let answer = SessionAnswer {
            id: &s.id,
            namespaces: items.view(&s.namespaces),
            version: s.version,
            active: s.active,
            debug: s.debug,
        };
        Bytes::from(serde_json::to_vec(&answer).expect("answers serialize"))
    }

    fn segment(&self, style: CookieStyle) -> &SegmentLines {
        self.segment
            .get_or_init(|| shared_segment(Segment::of(&self.session), style))
    }

    /// The segment token (`vtex_segment`) of the session.
    pub fn segment_token(&self, style: CookieStyle) -> &str {
        &self.segment(style).token
    }

    /// The `Set-Cookie` line of the segment token.
    pub fn segment_cookie(&self, style: CookieStyle) -> HeaderValue {
        self.segment(style).cookie.clone()
    }

    /// The `Set-Cookie` line of session token `token`. The line of the first token asked for is
    /// kept (a session is nearly always named by one token at a time).
    pub fn session_cookie(&self, token: &str, style: CookieStyle) -> HeaderValue {
        let make = || set_cookie(SESSION_COOKIE, token, style.max_age, style.secure);
        let line = self.token.get_or_init(make);
        if token_of(line) == token.as_bytes() {
            line.clone()
        } else {
            make()
        }
    }
}

/// Shards of the cache (each a mutex over its own map).
const SHARDS: usize = 16;

/// One shard: snapshots by id (indexable for random eviction), and how many times a save or a
/// removal changed it.
#[derive(Default)]
struct Shard {
    snapshots: IndexMap<SessionId, Arc<Snapshot>, RandomKeys>,
    changes: u64,
}

/// Where a shard stood when a read of the store began (see [`SessionCache::stamp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(u64);

/// Recently used snapshots by session id, at most `capacity` of them. When a shard is full, a
/// random entry of it makes room: no bookkeeping on the read path, and a hot session that is
/// evicted comes back at its next read.
pub struct SessionCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomKeys,
    /// State of the generator that picks evictions (xorshift).
    dice: AtomicU64,
}

impl SessionCache {
    /// A cache of at most `capacity` sessions; `None` for 0 (no cache).
    pub fn new(capacity: usize) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard::default()))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let seed = RandomState::new().hash_one(0u8) | 1;
        Some(SessionCache {
            shards,
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomKeys::default(),
            dice: AtomicU64::new(seed),
        })
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        // The top bits pick the shard; the map inside uses the low ones.
        let i = (self.hasher.hash_one(id) >> 60) as usize % SHARDS;
        // Each operation is one insert or remove: a panic cannot leave a shard half-written.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn roll(&self) -> u64 {
        let mut x = self.dice.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.dice.store(x, Ordering::Relaxed);
        x
    }

    /// The cached snapshot of `id`, unless it has expired at `now_ms`.
    pub fn get(&self, id: &SessionId, now_ms: u64) -> Option<Arc<Snapshot>> {
        let mut shard = self.shard(id);
        let snapshot = shard.snapshots.get(id)?;
        if snapshot.session.is_expired(now_ms) {
            shard.snapshots.swap_remove(id);
            return None;
        }
        Some(snapshot.clone())
    }

    /// Taken before reading `id` from the store; [`SessionCache::insert_read`] caches what was
    /// read only if no save or removal touched the shard meanwhile (the read could otherwise be
    /// older than a save that was cached and then evicted).
    pub fn stamp(&self, id: &SessionId) -> Stamp {
        Stamp(self.shard(id).changes)
    }

    /// Caches `snapshot`, read from the store after `stamp` was taken, unless the shard changed
    /// since or the cache holds a version of the session already.
    pub fn insert_read(&self, snapshot: Arc<Snapshot>, stamp: Stamp) {
        let id = snapshot.session.id;
        let mut shard = self.shard(&id);
        if shard.changes == stamp.0 && !shard.snapshots.contains_key(&id) {
            self.make_room(&mut shard);
            shard.snapshots.insert(id, snapshot);
        }
    }

    /// Caches `snapshot`, just saved, unless a newer version of the session is cached already.
    pub fn insert(&self, snapshot: Arc<Snapshot>) {
        let id = snapshot.session.id;
        let mut shard = self.shard(&id);
        shard.changes += 1;
        if let Some(cached) = shard.snapshots.get_mut(&id) {
            if cached.session.version <= snapshot.session.version {
                *cached = snapshot;
            }
            return;
        }
        self.make_room(&mut shard);
        shard.snapshots.insert(id, snapshot);
    }

    fn make_room(&self, shard: &mut Shard) {
        let len = shard.snapshots.len();
        if len >= self.per_shard {
            let victim = (self.roll() % len as u64) as usize;
            shard.snapshots.swap_remove_index(victim);
        }
    }

    /// Forgets `id` (its stored record changed behind the cache's back, or is gone).
    pub fn remove(&self, id: &SessionId) {
        let mut shard = self.shard(id);
        shard.changes += 1;
        shard.snapshots.swap_remove(id);
    }

    /// How many snapshots are cached.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).snapshots.len())
            .sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::Value;

    fn session(version: u64) -> Session {
        let mut s = Session::new("demo", 1_000, 10_000);
        s.version = version;
        s.set(&Key::new("public", "k"), Value::new("v"));
        s.set(&Key::new("cookie", "c"), Value::new("secret"));
        s
    }

    #[test]
    fn keeps_the_newest_version_and_forgets_on_remove() {
        let cache = SessionCache::new(100).unwrap();
        let old = session(1);
        let id = old.id;
        let mut new = old.clone();
        new.version = 2;
        cache.insert(Arc::new(Snapshot::new(new)));
        cache.insert(Arc::new(Snapshot::new(old)));
        assert_eq!(cache.get(&id, 2_000).unwrap().session.version, 2);
        assert!(cache.get(&id, 11_000).is_none(), "expired");
        cache.insert(Arc::new(Snapshot::new(session(3))));
        assert_eq!(cache.len(), 1);
        cache.remove(&id);
        assert!(cache.get(&id, 2_000).is_none());
    }

    #[test]
    fn a_read_older_than_a_save_is_not_cached() {
        let cache = SessionCache::new(100).unwrap();
        let old = session(1);
        let id = old.id;
        // A read of version 1 begins; meanwhile version 2 is saved, cached and evicted.
        let stamp = cache.stamp(&id);
        let mut new = old.clone();
        new.version = 2;
        cache.insert(Arc::new(Snapshot::new(new)));
        cache.remove(&id);
        cache.insert_read(Arc::new(Snapshot::new(old.clone())), stamp);
        assert!(
            cache.get(&id, 2_000).is_none(),
            "the stale read was dropped"
        );
        // A read with nothing saved meanwhile is cached.
        let stamp = cache.stamp(&id);
        cache.insert_read(Arc::new(Snapshot::new(old)), stamp);
        assert_eq!(cache.get(&id, 2_000).unwrap().session.version, 1);
    }

    #[test]
    fn stays_within_its_capacity() {
        let cache = SessionCache::new(64).unwrap();
        for _ in 0..1_000 {
            cache.insert(Arc::new(Snapshot::new(session(1))));
        }
        assert!(cache.len() <= 64, "{} cached", cache.len());
        assert!(cache.len() >= 32, "{} cached", cache.len());
        assert!(SessionCache::new(0).is_none());
    }

    #[test]
    fn successors_carry_what_did_not_change() {
        let style = CookieStyle {
            max_age: 60,
            secure: false,
        };
        let first = Snapshot::new(session(1));
        let token_line = first.session_cookie("tok", style);
        let segment = first.segment_token(style).to_owned();

        let mut same = first.session.clone();
        same.version = 2;
        same.set(&Key::new("public", "other"), Value::new("x"));
        let other = Key::new("public", "other");
        let second = Snapshot::successor(same, &first, [&other].into_iter());
        assert_eq!(second.segment.get().unwrap().token, segment);
        assert_eq!(*second.token.get().unwrap(), token_line);

        let mut changed = second.session.clone();
        changed.version = 3;
        let utm = Key::new("public", "utm_source");
        changed.set(&utm, Value::new("google"));
        let third = Snapshot::successor(changed, &second, [&other, &utm].into_iter());
        assert!(third.segment.get().is_none(), "recomputed when asked");
        assert_ne!(third.segment_token(style), segment);

        let mut moved = third.session.clone();
        moved.id = SessionId::random();
        let fourth = Snapshot::successor(moved, &third, std::iter::empty());
        assert!(fourth.token.get().is_none(), "a new id has a new token");
    }

    #[test]
    fn equal_segments_share_their_lines_and_the_table_is_bounded() {
        let style = CookieStyle {
            max_age: 61,
            secure: false,
        };
        let a = Snapshot::new(session(1));
        let b = Snapshot::new(session(2));
        assert_eq!(a.segment_token(style), b.segment_token(style));
        assert!(Arc::ptr_eq(
            a.segment.get().unwrap(),
            b.segment.get().unwrap()
        ));
        let secure = CookieStyle {
            secure: true,
            ..style
        };
        let c = Snapshot::new(session(1));
        assert!(c
            .segment_cookie(secure)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        assert!(!a
            .segment_cookie(style)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        // Made-up segments (one per request, say) do not grow the table without bound.
        for i in 0..MAX_SHARED_SEGMENTS + 10 {
            let segment = Segment {
                utm_source: Some(format!("source-{i}")),
                ..Segment::default()
            };
            let lines = shared_segment(segment, style);
            assert!(lines.cookie.to_str().unwrap().starts_with("vtex_segment="));
        }
        assert!(SEGMENTS.lock().unwrap().len() <= MAX_SHARED_SEGMENTS);
    }

    #[test]
    fn answers_redact_cookies_and_cookie_lines_follow_the_token() {
        let snapshot = Snapshot::new(session(1));
        let all: serde_json::Value = serde_json::from_slice(&snapshot.answer(Some("*"))).unwrap();
        assert_eq!(all["namespaces"]["cookie"]["c"]["value"], "[redacted]");
        assert_eq!(all["namespaces"]["public"]["k"]["value"], "v");
        assert_eq!(all["version"], 1);
        for _ in 0..2 {
            let some: serde_json::Value =
                serde_json::from_slice(&snapshot.answer(Some("public.k"))).unwrap();
            assert!(some["namespaces"].get("cookie").is_none());
            assert_eq!(some["namespaces"]["public"]["k"]["value"], "v");
            let other: serde_json::Value =
                serde_json::from_slice(&snapshot.answer(Some("cookie.c"))).unwrap();
            assert_eq!(other["namespaces"]["cookie"]["c"]["value"], "[redacted]");
            assert!(other["namespaces"].get("public").is_none());
        }
        let long = format!("public.k,{}", "x.y,".repeat(100));
        let answer: serde_json::Value =
            serde_json::from_slice(&snapshot.answer(Some(&long))).unwrap();
        assert_eq!(answer["namespaces"]["public"]["k"]["value"], "v");
        let fresh = Snapshot::new(session(1));
        fresh.answer(Some(&long));
        assert!(fresh.filtered.get().is_none(), "a long filter is not kept");
        let none: serde_json::Value = serde_json::from_slice(&snapshot.answer(None)).unwrap();
        assert_eq!(none["namespaces"], serde_json::json!({}));

        let style = CookieStyle {
            max_age: 60,
            secure: true,
        };
        let a = snapshot.session_cookie("aaa", style);
        assert_eq!(
            a.to_str().unwrap(),
            "vtex_session=aaa; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let b = snapshot.session_cookie("bbb", style);
        assert!(b.to_str().unwrap().starts_with("vtex_session=bbb;"));
        let segment = snapshot.segment_token(style).to_owned();
        assert!(snapshot
            .segment_cookie(style)
            .to_str()
            .unwrap()
            .starts_with(&format!("vtex_segment={segment};")));
    }
}
