//! The session cache: recently used snapshots by session id, in front of a store this process
//! owns alone (the embedded and memory stores), where every save goes through the repository,
//! which replaces the cached snapshot once the store accepted the write; or in front of a
//! shared store that tells what other processes change (Redis).
//!
//! Hand-made, not a cache crate's: it must never serve a version older than one already
//! acknowledged, which takes rules a general cache does not have, checked under the same lock
//! as the insert: a save replaces a cached snapshot only with a newer version, and a read of
//! the store is cached only if no save touched its shard while it ran ([`Stamp`]). A copy a
//! shared store said changed is kept, marked stale: never served as the session, it is still a
//! good base for the next edit, whose compare-and-swap on `version` fails if it was indeed
//! overtaken (see [`SessionCache::base`]).
//!
//! Records about to be cached share their segment token with the other cached records of the
//! same segment ([`SessionCache::compact`]): it is ~340 of a record's ~900 bytes, and a store
//! has a handful of segments.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;
use sessiond_core::record::Bytes;
use sessiond_core::{Record, SessionId};

use crate::prehashed::{text_cache, RandomKeys, TextCache};
use crate::snapshot::Snapshot;

/// Shards of the cache (each a mutex over its own map).
const SHARDS: usize = 16;

/// One shard: snapshots by id (indexable for random eviction), and how many times a save, a
/// removal or news of a change changed it.
#[derive(Default)]
struct Shard {
    snapshots: IndexMap<SessionId, Entry, RandomKeys>,
    changes: u64,
}

/// A cached snapshot, and whether it may be served: false once a shared store said its session
/// changed (the change may be this process's own save: Redis also tells those made in scripts).
struct Entry {
    snapshot: Arc<Snapshot>,
    fresh: bool,
}

/// Where a shard stood when a read of the store began (see [`SessionCache::stamp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(u64);

/// Most segment tokens kept for cached records to share: requests that make up many distinct
/// segments cannot grow this without bound (a token it drops stays with the records that
/// share it, and the next record of that segment starts a new copy).
const MAX_SHARED_SEGMENTS: usize = 4096;

/// Stripes of the counters of what a shared store said changed (see [`SessionCache::invalidate`]).
const STRIPES: usize = 4096;

/// Where the changes told of a session stood when a save of it began (see
/// [`SessionCache::witness`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Witness(u64);

/// Recently used snapshots by session id, at most `capacity` of them. When a shard is full, a
/// random entry of it makes room: no bookkeeping on the read path, and a hot session that is
/// evicted comes back at its next read.
pub struct SessionCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomKeys,
    /// State of the generator that picks evictions (xorshift).
    dice: AtomicU64,
    /// How many changes a shared store told of the sessions of each stripe (by id hash).
    told: Box<[AtomicU64]>,
    /// The segment tokens cached records share, the ones seen lately (key and value are the
    /// same bytes).
    segments: TextCache<Bytes, Bytes>,
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
            told: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            segments: text_cache(MAX_SHARED_SEGMENTS),
        })
    }

    /// `record`, about to be cached, with its segment token shared with the cached records of
    /// the same segment (see [`Record::sharing_segment`]): `previous`'s (the version it
    /// follows) when that is the same, else the one seen lately, kept from now if none is.
    pub fn compact(&self, record: Record, previous: Option<&Snapshot>) -> Record {
        let record = match previous.and_then(|p| p.record().shared_segment()) {
            Some(shared) => record.sharing_segment(shared),
            None => record,
        };
        if record.shared_segment().is_some() {
            return record;
        }
        let token = record.segment_token().as_bytes();
        let shared = match self.segments.get(token) {
            Some(shared) => shared,
            None => {
                let shared = Bytes::copy_from_slice(token);
                self.segments.insert(shared.clone(), shared.clone());
                shared
            }
        };
        record.sharing_segment(&shared)
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

    /// The cached snapshot of `id`, unless it has expired at `now_ms` or may be stale.
    pub fn get(&self, id: &SessionId, now_ms: u64) -> Option<Arc<Snapshot>> {
        self.base(id, now_ms)
            .and_then(|(snapshot, fresh)| fresh.then_some(snapshot))
    }

    /// The cached snapshot of `id` unless it has expired at `now_ms`, and whether it is fresh.
    /// A stale one may only be the base of an edit saved with compare-and-swap on its version,
    /// and what follows from it may only be answered once that save succeeded.
    pub fn base(&self, id: &SessionId, now_ms: u64) -> Option<(Arc<Snapshot>, bool)> {
        let mut shard = self.shard(id);
        let entry = shard.snapshots.get(id)?;
        if entry.snapshot.record().is_expired(now_ms) {
            shard.snapshots.swap_remove(id);
            return None;
        }
        Some((entry.snapshot.clone(), entry.fresh))
    }

    /// Taken before reading `id` from the store; [`SessionCache::insert_read`] caches what was
    /// read only if no save or removal touched the shard meanwhile (the read could otherwise be
    /// older than a save that was cached and then evicted).
    pub fn stamp(&self, id: &SessionId) -> Stamp {
        Stamp(self.shard(id).changes)
    }

    /// Caches `snapshot`, read from the store after `stamp` was taken, unless the shard changed
    /// since or the cache holds a fresh version of the session already.
    pub fn insert_read(&self, snapshot: Arc<Snapshot>, stamp: Stamp) {
        let id = snapshot.id();
        let mut shard = self.shard(&id);
        if shard.changes != stamp.0 {
            return;
        }
        let fresh = true;
        match shard.snapshots.get_mut(&id) {
            Some(entry) if entry.fresh => {}
            // Read after the news that made it stale (the stamp says so): the read is newer.
            Some(entry) => *entry = Entry { snapshot, fresh },
            None => {
                self.make_room(&mut shard);
                shard.snapshots.insert(id, Entry { snapshot, fresh });
            }
        }
    }

    fn told(&self, id: &SessionId) -> &AtomicU64 {
        &self.told[self.hasher.hash_one(id) as usize % STRIPES]
    }

    /// A shared store said session `id` changed: its copy is no longer served (it stays as the
    /// base of the next edit), a read of it that began before is not cached
    /// ([`SessionCache::insert_read`]), and a save of it that began before is cached stale
    /// ([`SessionCache::insert_saved`]).
    pub fn invalidate(&self, id: &SessionId) {
        self.told(id).fetch_add(1, Ordering::SeqCst);
        let mut shard = self.shard(id);
        shard.changes += 1;
        if let Some(entry) = shard.snapshots.get_mut(id) {
            entry.fresh = false;
        }
    }

    /// Taken before saving `id` to a shared store (see [`SessionCache::insert_saved`]).
    pub fn witness(&self, id: &SessionId) -> Witness {
        Witness(self.told(id).load(Ordering::SeqCst))
    }

    /// Caches `snapshot`, just saved to a shared store after `witness` was taken; stale if the
    /// store said meanwhile that the session changed (another process may have saved a newer
    /// version after this one, whose news then came before this save's answer; or it was the
    /// news of this very save).
    pub fn insert_saved(&self, snapshot: Arc<Snapshot>, witness: Witness) {
        let id = snapshot.id();
        let mut shard = self.shard(&id);
        shard.changes += 1;
        let fresh = self.told(&id).load(Ordering::SeqCst) == witness.0;
        self.put(&mut shard, id, Entry { snapshot, fresh });
    }

    /// Caches `snapshot`, just saved, unless a newer version of the session is cached already.
    pub fn insert(&self, snapshot: Arc<Snapshot>) {
        let id = snapshot.id();
        let mut shard = self.shard(&id);
        shard.changes += 1;
        self.put(
            &mut shard,
            id,
            Entry {
                snapshot,
                fresh: true,
            },
        );
    }

    fn put(&self, shard: &mut Shard, id: SessionId, entry: Entry) {
        if let Some(cached) = shard.snapshots.get_mut(&id) {
            if cached.snapshot.record().version() <= entry.snapshot.record().version() {
                *cached = entry;
            }
            return;
        }
        self.make_room(shard);
        shard.snapshots.insert(id, entry);
    }

    fn make_room(&self, shard: &mut Shard) {
        let len = shard.snapshots.len();
        if len >= self.per_shard {
            let victim = (self.roll() % len as u64) as usize;
            shard.snapshots.swap_remove_index(victim);
        }
    }

    /// Forgets every session (what the store holds may have changed unseen); saves begun
    /// before are not cached.
    pub fn clear(&self) {
        for told in self.told.iter() {
            told.fetch_add(1, Ordering::SeqCst);
        }
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.changes += 1;
            shard.snapshots.clear();
        }
    }

    /// Forgets `id` (its stored record changed behind the cache's back, or is gone).
    pub fn remove(&self, id: &SessionId) {
        let mut shard = self.shard(id);
        shard.changes += 1;
        shard.snapshots.swap_remove(id);
    }

    /// How many snapshots are cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).snapshots.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::{Key, Session, Value};

    fn session(version: u64) -> Session {
        let mut s = Session::new("demo", 1_000, 10_000);
        s.version = version;
        s.set(&Key::new("public", "k"), Value::new("v"));
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
        assert_eq!(cache.get(&id, 2_000).unwrap().record().version(), 2);
        assert!(cache.get(&id, 11_000).is_none(), "expired");
        cache.insert(Arc::new(Snapshot::new(session(3))));
        assert_eq!(cache.len(), 1);
        cache.remove(&id);
        assert!(cache.get(&id, 2_000).is_none());
        cache.insert(Arc::new(Snapshot::new(session(4))));
        let stamp = cache.stamp(&id);
        cache.clear();
        assert_eq!(cache.len(), 0);
        cache.insert_read(Arc::new(Snapshot::new(session(5))), stamp);
        assert_eq!(
            cache.len(),
            0,
            "a read begun before the clear is not cached"
        );
    }

    #[test]
    fn a_save_that_news_of_a_later_change_overtook_is_kept_only_as_a_base() {
        let cache = SessionCache::new(100).unwrap();
        let mine = session(2);
        let id = mine.id;
        let saved = || Arc::new(Snapshot::new(mine.clone()));
        let version = |base: Option<(Arc<Snapshot>, bool)>| {
            base.map(|(snapshot, fresh)| (snapshot.record().version(), fresh))
        };
        // This process saves version 2; another saves 3, and its news comes first.
        let witness = cache.witness(&id);
        cache.invalidate(&id);
        cache.insert_saved(saved(), witness);
        assert!(
            cache.get(&id, 2_000).is_none(),
            "version 2 may already be old"
        );
        assert_eq!(version(cache.base(&id, 2_000)), Some((2, false)));
        // A read of the store begun after that news is served.
        let stamp = cache.stamp(&id);
        let mut theirs = mine.clone();
        theirs.version = 3;
        cache.insert_read(Arc::new(Snapshot::new(theirs)), stamp);
        assert_eq!(cache.get(&id, 2_000).unwrap().record().version(), 3);
        // News of a change makes the copy stale, not gone; a read begun before is not cached.
        let stamp = cache.stamp(&id);
        cache.invalidate(&id);
        cache.insert_read(saved(), stamp);
        assert!(cache.get(&id, 2_000).is_none());
        assert_eq!(version(cache.base(&id, 2_000)), Some((3, false)));
        assert!(cache.base(&id, 11_000).is_none(), "expired");
        // With no news meanwhile, the save is cached.
        let witness = cache.witness(&id);
        let mut next = mine.clone();
        next.version = 4;
        cache.insert_saved(Arc::new(Snapshot::new(next)), witness);
        assert_eq!(cache.get(&id, 2_000).unwrap().record().version(), 4);
        // A clear counts as news of everything, and keeps nothing.
        let witness = cache.witness(&id);
        cache.clear();
        assert!(cache.base(&id, 2_000).is_none());
        cache.insert_saved(saved(), witness);
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
        assert_eq!(cache.get(&id, 2_000).unwrap().record().version(), 1);
    }

    #[test]
    fn cached_records_of_one_segment_share_its_token() {
        let cache = SessionCache::new(100).unwrap();
        let first = cache.compact(Record::encode(&session(1), None), None);
        let second = cache.compact(Record::encode(&session(1), None), None);
        let token = |r: &Record| r.shared_segment().expect("shared").as_ptr();
        assert_eq!(token(&first), token(&second));
        let previous = Snapshot::read(first.clone());
        let next = cache.compact(Record::encode(&session(2), None), Some(&previous));
        assert_eq!(token(&next), token(&first), "the version it follows");
        let mut elsewhere = session(1);
        elsewhere.set(&Key::new("store", "channel"), Value::new("2"));
        let moved = Record::encode(&elsewhere, None);
        assert_ne!(moved.segment_token(), first.segment_token());
        let moved = cache.compact(moved, Some(&previous));
        assert_ne!(
            token(&moved),
            token(&first),
            "another segment, another token"
        );
        assert_eq!(
            moved.stored(),
            Record::encode(&elsewhere, None).stored(),
            "stored as it was"
        );
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
}
