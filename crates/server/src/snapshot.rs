//! Sessions as this process last saw them, shared by `Arc`: the stored [`Record`] (which holds
//! the `?items=*` body and the segment token ready to send), the session decoded when first
//! needed, the answer to the usual `items` filter, computed once, and a slot for what a layer
//! above derives from the version once ([`Derived`]: the HTTP layer keeps the segment's shared
//! cookie line there). Nothing here knows of HTTP.
//!
//! Snapshots are what the repository gives and keeps (its cache holds them), what the session
//! rules read and what the HTTP layer renders.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use sessiond_core::record::{Bytes, RecordError};
use sessiond_core::{Items, Key, Record, Segment, Session, SessionId};

/// Longest `items` filter whose answer is kept with a snapshot: a request cannot make every
/// cached session hold a long string of its choosing.
pub const MAX_KEPT_FILTER: usize = 256;

/// An `items` filter as asked for, and parsed. Storefronts ask the same few filters of every
/// session: the HTTP layer parses each once and shares it, so a snapshot that keeps an answer
/// holds an `Arc` of its filter.
#[derive(Debug)]
pub struct Filter {
    raw: Box<str>,
    items: Items,
}

impl Filter {
    /// The filter `raw` (`*,public.a,…`), parsed.
    pub fn new(raw: &str) -> Self {
        Filter {
            raw: raw.into(),
            items: Items::parse(raw),
        }
    }
}

/// What a layer above derives once from a session version and keeps with its snapshot (the
/// HTTP layer: the segment's `Set-Cookie` line), and how much of it holds for the next version.
pub trait Derived: Any + Send + Sync {
    /// What of this still holds for the next version of the session, which has the same
    /// segment token (`same_segment`) or not.
    fn carried(&self, same_segment: bool) -> Option<Box<dyn Derived>>;

    /// This, for a downcast.
    fn as_any(&self) -> &dyn Any;
}

/// A stored session and what its answers are made of.
pub struct Snapshot {
    /// The session as stored.
    record: Record,
    /// The session, decoded when first needed (at once for a snapshot of a session not
    /// stored). Boxed: most cached snapshots never decode theirs, and an empty slot of a box is
    /// 8 bytes where one of a session is 144.
    session: OnceLock<Box<Session>>,
    /// The answer to the first other `items` filter asked for (storefronts ask the same one on
    /// every page view).
    filtered: OnceLock<(Arc<Filter>, Bytes)>,
    /// What a layer above derived from this version (see [`Derived`]).
    derived: OnceLock<Box<dyn Derived>>,
    /// Whether the record is stored (else it was derived here and not saved yet).
    stored: bool,
}

impl Snapshot {
    fn of(record: Record, session: Option<Session>, stored: bool) -> Self {
        Snapshot {
            record,
            session: session
                .map(|s| OnceLock::from(Box::new(s)))
                .unwrap_or_default(),
            filtered: OnceLock::new(),
            derived: OnceLock::new(),
            stored,
        }
    }

    /// A snapshot of a record read from the store: nothing is decoded until needed.
    pub fn read(record: Record) -> Self {
        Snapshot::of(record, None, true)
    }

    /// A snapshot of `session`, encoded here: a session that is not stored.
    pub fn new(session: Session) -> Self {
        Snapshot::of(Record::encode(&session, None), Some(session), false)
    }

    /// Whether this version is stored (a session derived and not saved yet is not).
    pub fn stored(&self) -> bool {
        self.stored
    }

    /// The version a save of the next one expects to find stored: this one's, or none when
    /// this one is not stored.
    pub fn expected(&self) -> Option<u64> {
        self.stored.then(|| self.record.version())
    }

    /// A snapshot of `record`, saved as the next stored version of `previous`'s session: what
    /// was derived from `previous` and still holds ([`Derived::carried`]) is carried over
    /// instead of made again. Nothing is decoded: the record alone is kept, as for a read.
    pub fn edited(record: Record, previous: &Snapshot) -> Self {
        Snapshot::after(Snapshot::read(record), previous)
    }

    fn after(next: Snapshot, previous: &Snapshot) -> Self {
        if let Some(derived) = previous.derived.get() {
            let same_segment = previous.record.same_segment(&next.record);
            if let Some(carried) = derived.carried(same_segment) {
                let _ = next.derived.set(carried);
            }
        }
        next
    }

    /// What a layer above derived from this version, made by `make` on first use; `None` when
    /// something of another type was kept here first.
    pub fn derived<T: Derived>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.derived
            .get_or_init(|| Box::new(make()))
            .as_any()
            .downcast_ref::<T>()
    }

    /// The segment token of the session that follows this one by changing the keys `changed`
    /// yields (or fewer), when it is known to be this one's: none of them is a segment input.
    pub fn segment_after<'k>(&self, mut changed: impl Iterator<Item = &'k Key>) -> Option<&str> {
        (!changed.any(Segment::reads)).then(|| self.record.segment_token())
    }

    /// The stored record.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.record.id()
    }

    /// The session, decoded from the record on first use.
    pub fn session(&self) -> Result<&Session, RecordError> {
        if let Some(session) = self.session.get() {
            return Ok(session);
        }
        let decoded = Box::new(self.record.decode()?);
        Ok(self.session.get_or_init(|| decoded))
    }

    /// The session answer (`{"id","namespaces","version","active","debug"}`) for the `items`
    /// filter (`None`: no values). With `fast`, from the stored answer (as stored, cut out of
    /// it, or kept from an earlier request); else rendered from the decoded session.
    pub fn answer(&self, filter: Option<&Arc<Filter>>, fast: bool) -> Result<Bytes, RecordError> {
        if !fast {
            let none = Items::default();
            let items = filter.map_or(&none, |f| &f.items);
            return Ok(Bytes::from(self.session()?.answer(items)));
        }
        let Some(filter) = filter else {
            return self.render(&Items::default());
        };
        if *filter.raw == *"*" {
            return Ok(self.record.answer());
        }
        if let Some((kept, answer)) = self.filtered.get() {
            if kept.raw == filter.raw {
                return Ok(answer.clone());
            }
        }
        if filter.raw.len() > MAX_KEPT_FILTER
            || filter.items.selects_all()
            || self.filtered.get().is_some()
        {
            return self.answer_to(&filter.items);
        }
        let answer = self.render(&filter.items)?;
        let (kept, kept_answer) = self
            .filtered
            .get_or_init(|| (filter.clone(), answer.clone()));
        Ok(if Arc::ptr_eq(kept, filter) {
            kept_answer.clone()
        } else {
            answer
        })
    }

    fn answer_to(&self, items: &Items) -> Result<Bytes, RecordError> {
        if items.selects_all() {
            return Ok(self.record.answer());
        }
        self.render(items)
    }

    /// The answer for `items`: from the decoded session if there is one, else cut out of the
    /// record's `?items=*` answer (decoding only when that cannot be done).
    fn render(&self, items: &Items) -> Result<Bytes, RecordError> {
        if self.session.get().is_none() {
            if let Some(answer) = self.record.answer_for(items) {
                return Ok(Bytes::from(answer));
            }
        }
        Ok(Bytes::from(self.session()?.answer(items)))
    }

    /// The segment token (`vtex_segment`) of the session.
    pub fn segment_token(&self) -> &str {
        self.record.segment_token()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::Value;

    fn f(raw: &str) -> Arc<Filter> {
        Arc::new(Filter::new(raw))
    }

    fn session(version: u64) -> Session {
        let mut s = Session::new("demo", 1_000, 10_000);
        s.version = version;
        s.set(&Key::new("public", "k"), Value::new("v"));
        s.set(&Key::new("cookie", "c"), Value::new("secret"));
        s
    }

    #[test]
    fn a_read_snapshot_answers_from_its_record_and_decodes_when_needed() {
        let s = session(4);
        let read = Snapshot::read(Record::encode(&s, None));
        assert_eq!(
            read.answer(Some(&f("*")), true).unwrap(),
            Snapshot::new(s.clone())
                .answer(Some(&f("*")), true)
                .unwrap()
        );
        assert_eq!(read.segment_token(), Segment::of(&s).encode());
        let none: serde_json::Value =
            serde_json::from_slice(&read.answer(None, true).unwrap()).unwrap();
        assert_eq!(none["namespaces"], serde_json::json!({}));
        assert_eq!(
            read.answer(Some(&f("public.k,cookie.c")), true).unwrap(),
            Bytes::from(s.answer(&Items::parse("public.k,cookie.c")))
        );
        assert!(read.session.get().is_none(), "nothing decoded for answers");
        assert_eq!(read.session().unwrap(), &s);

        let mut bytes = read.record().stored().to_vec();
        bytes.truncate(bytes.len() - 2);
        let broken = Snapshot::read(Record::parse(Bytes::from(bytes)).unwrap());
        assert!(
            broken.answer(Some(&f("*")), true).is_ok(),
            "the kept answer is intact"
        );
        assert!(matches!(broken.session(), Err(RecordError::Json(_))));
        assert!(
            broken.answer(Some(&f("public.k")), true).is_ok(),
            "cut from the intact answer"
        );
    }

    #[test]
    fn a_shared_filter_is_kept_by_every_snapshot_it_answered() {
        let (a, b) = (Snapshot::new(session(1)), Snapshot::new(session(2)));
        let filter = f("public.k,store.x");
        a.answer(Some(&filter), true).unwrap();
        b.answer(Some(&filter), true).unwrap();
        assert!(Arc::ptr_eq(
            &a.filtered.get().unwrap().0,
            &b.filtered.get().unwrap().0
        ));
        let all = Snapshot::new(session(3));
        assert_eq!(
            all.answer(Some(&f("public.k,*")), true).unwrap(),
            all.record().answer(),
            "a filter naming `*` is `*`"
        );
    }

    #[test]
    fn answers_redact_cookies() {
        let snapshot = Snapshot::new(session(1));
        let parse = |b: Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        let all = parse(snapshot.answer(Some(&f("*")), true).unwrap());
        assert_eq!(all["namespaces"]["cookie"]["c"]["value"], "[redacted]");
        assert_eq!(all["namespaces"]["public"]["k"]["value"], "v");
        assert_eq!(all["version"], 1);
        for _ in 0..2 {
            let some = parse(snapshot.answer(Some(&f("public.k")), true).unwrap());
            assert!(some["namespaces"].get("cookie").is_none());
            assert_eq!(some["namespaces"]["public"]["k"]["value"], "v");
            let other = parse(snapshot.answer(Some(&f("cookie.c")), true).unwrap());
            assert_eq!(other["namespaces"]["cookie"]["c"]["value"], "[redacted]");
            assert!(other["namespaces"].get("public").is_none());
        }
        let long = format!("public.k,{}", "x.y,".repeat(100));
        let answer = parse(snapshot.answer(Some(&f(&long)), true).unwrap());
        assert_eq!(answer["namespaces"]["public"]["k"]["value"], "v");
        let fresh = Snapshot::new(session(1));
        fresh.answer(Some(&f(&long)), true).unwrap();
        assert!(fresh.filtered.get().is_none(), "a long filter is not kept");
        let none = parse(snapshot.answer(None, true).unwrap());
        assert_eq!(none["namespaces"], serde_json::json!({}));
    }
}
