//! [`Record`]: the stored form of a session.
//!
//! A record begins with what the manager needs before it decodes anything (version, deadline,
//! id, account, whether the session is active and which session replaced it), then carries the
//! `?items=*` answer and the segment token ready to send, then the values of the secret
//! namespace (which the answer shows redacted). The answer holds every other value as the
//! session has it, so the session is decoded from the answer plus the secrets: nothing is
//! stored twice. A read that only answers `?items=*` (most page views) slices the answer out
//! of the stored bytes instead of decoding and rendering the session.
//!
//! Here: the layout, encoding, parsing and decoding. Beside it: `answer` (the one writer of the
//! answer JSON, answers cut to a filter and namespaces edited in place on the stored answer)
//! and `json` (the walker those read stored answers with). The format lives in the core crate,
//! next to the session it stores, because both the stores (which read a record's header for
//! compare-and-swap and expiry) and the server (which answers from it) need it, and neither
//! should depend on the other.
//!
//! Layout (integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format tag [`TAG`] |
//! | 1..9 | version |
//! | 9..17 | `expires_at`, ms |
//! | 17..25 | `updated_at`, ms |
//! | 25..33 | `created_at`, ms |
//! | 33..49 | id |
//! | 49..65 | `replaced_by` with flag 4; else, with flag 16, the token digest |
//! | 65 | flags: 1 active, 2 debug, 4 replaced, 8 traces, 16 token digest |
//! | 66..68 | length A of the account name, then A bytes |
//! | 4 bytes | length N of the answer, then N bytes |
//! | 4 bytes | length S of the segment token, then S bytes |
//! | with flag 8 | 4 bytes: length T of the cycle traces (a JSON array), then T bytes |
//! | the rest | the secret namespace's values as JSON, or nothing when it is empty |
//!
//! The token digest ([`Session::token_digest`]) takes the bytes of `replaced_by`, which a
//! session that was not replaced leaves unused: processes that do not know flag 16 read the
//! same record as before, and keep the digest when they edit the record in place.
//!
//! In memory a record may hold its segment token apart, shared with other records
//! ([`Record::sharing_segment`]); [`Record::stored`] gives the layout above either way.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// The shared byte buffer records and answers are held in.
pub use bytes::Bytes;
use serde::Deserialize;

use crate::items::{Items, SECRET_NAMESPACE};
use crate::segment::Segment;
use crate::session::{Namespace, Namespaces, Session, SessionId};
pub use answer::Editing;
use answer::{json_bool, json_id, write_answer};
use json::namespaces_as_stored;

pub(crate) mod answer;
mod json;

/// First byte of a record of this format.
pub const TAG: u8 = 0xB2;

const VERSION: usize = 1;
const EXPIRES: usize = 9;
const UPDATED: usize = 17;
const CREATED: usize = 25;
const ID: usize = 33;
const REPLACED_BY: usize = 49;
const FLAGS: usize = 65;
const ACCOUNT_LEN: usize = 66;
const ACCOUNT: usize = 68;

const ACTIVE: u8 = 1;
const DEBUG: u8 = 2;
const REPLACED: u8 = 4;
const TRACES: u8 = 8;
const TOKEN_DIGEST: u8 = 16;

/// Why stored bytes are not a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end before a field they announce, or do not begin with [`TAG`].
    #[error("malformed session record: {0}")]
    Malformed(&'static str),
    /// The answer or the secrets do not decode.
    #[error("session record holds bad JSON: {0}")]
    Json(String),
}

/// Writes the namespaces of a session that has none.
fn empty_object(out: &mut Vec<u8>) -> Option<()> {
    out.extend_from_slice(b"{}");
    Some(())
}

/// The part of an answer a session is decoded from (the rest is in the record's header).
#[derive(Deserialize)]
struct Answered {
    namespaces: Namespaces,
}

/// A session as stored, with its header fields and ready-made answers at hand.
#[derive(Clone, Debug)]
pub struct Record {
    /// The stored bytes; without the segment token's own bytes when it is [`Token::Shared`].
    bytes: Bytes,
    account: Range<usize>,
    answer: Range<usize>,
    segment: Token,
    /// Empty when the record holds no traces.
    traces: Range<usize>,
    secrets: usize,
}

/// Where a record's segment token is.
#[derive(Clone, Debug)]
enum Token {
    /// In the record's bytes, as stored.
    Within(Range<usize>),
    /// Held apart, shared by the records of every session with the same segment (a store has
    /// a handful of segments and each token is ~340 bytes): the record's bytes keep its length
    /// prefix and skip it.
    Shared(Bytes),
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The `(version, expires_at)` of stored record bytes, reading only their first 17 bytes.
pub fn header(bytes: &[u8]) -> Option<(u64, u64)> {
    (bytes.len() > EXPIRES + 8 && bytes[0] == TAG)
        .then(|| (u64_at(bytes, VERSION), u64_at(bytes, EXPIRES)))
}

/// Appends a length-prefixed field; `width` is the prefix's size in bytes (2 or 4). The
/// fields are an account name (configuration allows only short ASCII ones) and an answer and
/// segment token (request limits keep them far below 4 GiB): a longer one is a bug, not data.
fn put_field(out: &mut Vec<u8>, field: &[u8], width: usize) -> Range<usize> {
    let len = field.len() as u64;
    assert!(
        len < 1 << (8 * width),
        "a record field of {len} bytes does not fit its {width}-byte length"
    );
    out.extend_from_slice(&len.to_be_bytes()[8 - width..]);
    let start = out.len();
    out.extend_from_slice(field);
    start..out.len()
}

/// A record of `out` (its fixed header, whose traces flag says whether `traces` are
/// written), the account name, answer and segment token, the traces, and the secrets
/// `secrets` appends.
fn assemble(
    mut out: Vec<u8>,
    [account, answer, segment, traces]: [&[u8]; 4],
    secrets: impl FnOnce(&mut Vec<u8>),
) -> Record {
    let account = put_field(&mut out, account, 2);
    let answer = put_field(&mut out, answer, 4);
    let segment = put_field(&mut out, segment, 4);
    let traces = if out[FLAGS] & TRACES != 0 {
        put_field(&mut out, traces, 4)
    } else {
        out.len()..out.len()
    };
    let start = out.len();
    secrets(&mut out);
    Record {
        bytes: Bytes::from(out),
        account,
        answer,
        segment: Token::Within(segment),
        traces,
        secrets: start,
    }
}

/// Reads a length-prefixed field at `*at`, moving `*at` past it.
fn take_field(bytes: &[u8], at: &mut usize, width: usize) -> Result<Range<usize>, RecordError> {
    let prefix = bytes
        .get(*at..*at + width)
        .ok_or(RecordError::Malformed("a length is cut off"))?;
    let len = prefix.iter().fold(0usize, |n, &b| (n << 8) | b as usize);
    let start = *at + width;
    let end = start
        .checked_add(len)
        .filter(|&end| end <= bytes.len())
        .ok_or(RecordError::Malformed("a field is cut off"))?;
    *at = end;
    Ok(start..end)
}

impl Record {
    /// The record of `session`. `segment` is its segment token when the caller knows it (an
    /// edit that changed none of the segment's inputs keeps the previous one); otherwise it is
    /// derived here.
    pub fn encode(session: &Session, segment: Option<&str>) -> Record {
        let derived;
        let segment = match segment {
            Some(token) => token,
            None => {
                derived = Segment::of(session).encode();
                &derived
            }
        };
        let answer = session.answer(&Items::all());
        let mut out = Vec::with_capacity(ACCOUNT + 16 + answer.len() + segment.len() + 64);
        out.push(TAG);
        out.extend_from_slice(&session.version.to_be_bytes());
        out.extend_from_slice(&session.expires_at.to_be_bytes());
        out.extend_from_slice(&session.updated_at.to_be_bytes());
        out.extend_from_slice(&session.created_at.to_be_bytes());
        out.extend_from_slice(session.id.as_bytes());
        let mut flags = 0;
        match (session.replaced_by, session.token_digest) {
            (Some(next), _) => out.extend_from_slice(next.as_bytes()),
            (None, Some(digest)) => {
                flags |= TOKEN_DIGEST;
                out.extend_from_slice(&digest);
            }
            (None, None) => out.extend_from_slice(SessionId::min().as_bytes()),
        }
        if session.active {
            flags |= ACTIVE;
        }
        if session.debug {
            flags |= DEBUG;
        }
        if session.replaced_by.is_some() {
            flags |= REPLACED;
        }
        let traces = if session.traces.is_empty() {
            Vec::new()
        } else {
            flags |= TRACES;
            serde_json::to_vec(&session.traces).expect("JSON values serialize")
        };
        out.push(flags);
        let fields = [
            session.account.as_bytes(),
            &answer,
            segment.as_bytes(),
            &traces,
        ];
        assemble(out, fields, |out| {
            if let Some(values) = session.namespaces.get(SECRET_NAMESPACE) {
                serde_json::to_writer(out, values).expect("values always serialize");
            }
        })
    }

    /// Reads stored bytes (checks the layout, not the JSON: see [`Record::decode`]).
    pub fn parse(bytes: Bytes) -> Result<Record, RecordError> {
        if bytes.len() < ACCOUNT || bytes[0] != TAG {
            return Err(RecordError::Malformed("not a session record"));
        }
        let mut at = ACCOUNT_LEN;
        let account = take_field(&bytes, &mut at, 2)?;
        let answer = take_field(&bytes, &mut at, 4)?;
        let segment = take_field(&bytes, &mut at, 4)?;
        let traces = if bytes[FLAGS] & TRACES != 0 {
            take_field(&bytes, &mut at, 4)?
        } else {
            at..at
        };
        if std::str::from_utf8(&bytes[account.clone()]).is_err()
            || std::str::from_utf8(&bytes[segment.clone()]).is_err()
        {
            return Err(RecordError::Malformed("a text field is not UTF-8"));
        }
        Ok(Record {
            bytes,
            account,
            answer,
            segment: Token::Within(segment),
            traces,
            secrets: at,
        })
    }

    /// This record with its segment token held apart as `shared` when that is the same token
    /// (see [`Token::Shared`]); else, or when it is so held already, this record. What it
    /// answers and stores is the same either way; what differs is the memory it holds.
    pub fn sharing_segment(self, shared: &Bytes) -> Record {
        let Token::Within(segment) = &self.segment else {
            return self;
        };
        if self.bytes[segment.clone()] != shared[..] {
            return self;
        }
        let (cut, len) = (segment.start, segment.len());
        let mut bytes = Vec::with_capacity(self.bytes.len() - len);
        bytes.extend_from_slice(&self.bytes[..cut]);
        bytes.extend_from_slice(&self.bytes[segment.end..]);
        let after = |at: usize| if at >= segment.end { at - len } else { at };
        Record {
            bytes: Bytes::from(bytes),
            account: self.account.clone(),
            answer: self.answer.clone(),
            segment: Token::Shared(shared.clone()),
            traces: after(self.traces.start)..after(self.traces.end),
            secrets: after(self.secrets),
        }
    }

    /// The segment token's bytes when they are held apart and shared (see
    /// [`Record::sharing_segment`]).
    pub fn shared_segment(&self) -> Option<&Bytes> {
        match &self.segment {
            Token::Shared(token) => Some(token),
            Token::Within(_) => None,
        }
    }

    fn segment_bytes(&self) -> &[u8] {
        match &self.segment {
            Token::Within(range) => &self.bytes[range.clone()],
            Token::Shared(token) => token,
        }
    }

    /// The session's cycle traces as stored (a JSON array), if it keeps any.
    pub fn traces(&self) -> Option<&[u8]> {
        (!self.traces.is_empty()).then(|| &self.bytes[self.traces.clone()])
    }

    /// Whether the session keeps cycle traces (`debug`).
    pub fn debug(&self) -> bool {
        self.flags() & DEBUG != 0
    }

    /// Whether `other` has the same segment token (compared as stored).
    pub fn same_segment(&self, other: &Record) -> bool {
        self.segment_bytes() == other.segment_bytes()
    }

    /// Whether the session holds values of the secret namespace.
    pub fn has_secrets(&self) -> bool {
        self.bytes.len() > self.secrets
    }

    /// The bytes to store: this record's own, or, when its segment token is held apart, the
    /// same record put together again.
    pub fn stored(&self) -> Bytes {
        match &self.segment {
            Token::Within(_) => self.bytes.clone(),
            Token::Shared(token) => {
                let cut = self.answer.end + 4;
                let mut bytes = Vec::with_capacity(self.bytes.len() + token.len());
                bytes.extend_from_slice(&self.bytes[..cut]);
                bytes.extend_from_slice(token);
                bytes.extend_from_slice(&self.bytes[cut..]);
                Bytes::from(bytes)
            }
        }
    }

    /// The session's version.
    pub fn version(&self) -> u64 {
        u64_at(&self.bytes, VERSION)
    }

    /// When the session stops existing, ms since the Unix epoch.
    pub fn expires_at(&self) -> u64 {
        u64_at(&self.bytes, EXPIRES)
    }

    /// Whether the session has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at() <= now_ms
    }

    /// Time of the session's last saved change, ms since the Unix epoch.
    pub fn updated_at(&self) -> u64 {
        u64_at(&self.bytes, UPDATED)
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        SessionId::from_bytes(self.bytes[ID..ID + 16].try_into().expect("16 bytes"))
    }

    /// The session that took over this one, if any.
    pub fn replaced_by(&self) -> Option<SessionId> {
        (self.flags() & REPLACED != 0).then(|| {
            SessionId::from_bytes(
                self.bytes[REPLACED_BY..REPLACED_BY + 16]
                    .try_into()
                    .expect("16 bytes"),
            )
        })
    }

    /// The digest of the token issued when the session was saved under this id
    /// ([`Session::token_digest`]), if the record keeps one.
    pub fn token_digest(&self) -> Option<&[u8; 16]> {
        (self.flags() & (TOKEN_DIGEST | REPLACED) == TOKEN_DIGEST).then(|| {
            self.bytes[REPLACED_BY..REPLACED_BY + 16]
                .try_into()
                .expect("16 bytes")
        })
    }

    /// This record keeping `digest` as its token's ([`Record::token_digest`]), unless it is
    /// of a replaced session (which keeps its successor there).
    pub fn with_token_digest(&self, digest: [u8; 16]) -> Record {
        if self.flags() & REPLACED != 0 {
            return self.clone();
        }
        let mut bytes = self.bytes.to_vec();
        bytes[REPLACED_BY..REPLACED_BY + 16].copy_from_slice(&digest);
        bytes[FLAGS] |= TOKEN_DIGEST;
        Record {
            bytes: Bytes::from(bytes),
            ..self.clone()
        }
    }

    fn flags(&self) -> u8 {
        self.bytes[FLAGS]
    }

    /// Whether the session is active.
    pub fn active(&self) -> bool {
        self.flags() & ACTIVE != 0
    }

    /// The account the session belongs to.
    pub fn account(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.account.clone()]).expect("checked by parse")
    }

    /// The session's answer to `?items=*`, as sent.
    pub fn answer(&self) -> Bytes {
        self.bytes.slice(self.answer.clone())
    }

    /// The record that ends this one's session: the same id, account, creation time and debug
    /// flag, its deadline kept but not before `kept_until` (ms: the record must outlive every
    /// token of the session), `version` and `updated_at` set, inactive, taken over by
    /// `replaced_by` when given, and nothing else. An ended session is never answered, edited
    /// or carried over (its values went to its successor, or were dropped by a reset): what is
    /// read of it is whether it is active, by whom it was replaced and when. So it holds no
    /// values, and none of the identity tokens the session had recorded.
    pub fn ended(
        &self,
        version: u64,
        updated_at: u64,
        replaced_by: Option<SessionId>,
        kept_until: u64,
    ) -> Record {
        static EMPTY_SEGMENT: OnceLock<String> = OnceLock::new();
        let segment = EMPTY_SEGMENT.get_or_init(|| Segment::of(&Session::new("", 0, 0)).encode());
        let mut header = self.header_at(version, updated_at);
        let deadline = self.expires_at().max(kept_until);
        header[EXPIRES..EXPIRES + 8].copy_from_slice(&deadline.to_be_bytes());
        let next = replaced_by.unwrap_or(SessionId::min());
        header[REPLACED_BY..REPLACED_BY + 16].copy_from_slice(next.as_bytes());
        let debug = self.flags() & DEBUG;
        header[FLAGS] = debug | if replaced_by.is_some() { REPLACED } else { 0 };
        let mut answer = Vec::with_capacity(128);
        let mut number = itoa::Buffer::new();
        let fields = [
            number.format(version).as_bytes(),
            json_bool(false),
            json_bool(debug != 0),
        ];
        write_answer(&mut answer, &json_id(&self.id()), empty_object, fields);
        let fields = [
            &self.bytes[self.account.clone()],
            &answer,
            segment.as_bytes(),
            &[],
        ];
        assemble(header, fields, |_| {})
    }

    /// This record's fixed header with `version` and `updated_at` set.
    fn header_at(&self, version: u64, updated_at: u64) -> Vec<u8> {
        let mut header = self.bytes[..ACCOUNT_LEN].to_vec();
        header[VERSION..VERSION + 8].copy_from_slice(&version.to_be_bytes());
        header[UPDATED..UPDATED + 8].copy_from_slice(&updated_at.to_be_bytes());
        header
    }

    /// A record of `header` (the fixed fields), `answer`, and this record's account, segment
    /// token and secrets.
    fn with(&self, mut out: Vec<u8>, answer: &[u8]) -> Record {
        out.reserve(self.bytes.len() + 64);
        let fields = [
            &self.bytes[self.account.clone()],
            answer,
            self.segment_bytes(),
            &self.bytes[self.traces.clone()],
        ];
        assemble(out, fields, |out| {
            out.extend_from_slice(&self.bytes[self.secrets..])
        })
    }

    /// The session's segment token (`vtex_segment`).
    pub fn segment_token(&self) -> &str {
        std::str::from_utf8(self.segment_bytes()).expect("checked by parse")
    }

    /// The session itself.
    pub fn decode(&self) -> Result<Session, RecordError> {
        let json = |e: serde_json::Error| RecordError::Json(e.to_string());
        let answer = &self.bytes[self.answer.clone()];
        let mut namespaces = match namespaces_as_stored(answer) {
            Some(namespaces) => namespaces,
            None => {
                serde_json::from_slice::<Answered>(answer)
                    .map_err(json)?
                    .namespaces
            }
        };
        let secrets = &self.bytes[self.secrets..];
        if secrets.is_empty() {
            namespaces.remove(SECRET_NAMESPACE);
        } else {
            let values: Namespace = serde_json::from_slice(secrets).map_err(json)?;
            namespaces.insert(SECRET_NAMESPACE.to_owned(), Arc::new(values));
        }
        Ok(Session {
            id: self.id(),
            account: self.account().to_owned(),
            namespaces,
            version: self.version(),
            active: self.active(),
            debug: self.flags() & DEBUG != 0,
            created_at: u64_at(&self.bytes, CREATED),
            updated_at: self.updated_at(),
            expires_at: self.expires_at(),
            replaced_by: self.replaced_by(),
            traces: match self.traces() {
                Some(traces) => serde_json::from_slice(traces).map_err(json)?,
                None => Vec::new(),
            },
            token_digest: self.token_digest().copied(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::json::*;
    use super::*;
    use crate::session::{Key, Value};

    fn session() -> Session {
        let mut s = Session::new("demo", 1_000, 10_000);
        s.set(&Key::new("public", "utm_source"), Value::new("news"));
        s.set(&Key::new("cookie", "c"), Value::new("secret"));
        s.set(
            &Key::new("profile", "x"),
            Value::kept(serde_json::json!({"a": [1, 2.5]})),
        );
        s.version = 7;
        s.updated_at = 2_000;
        s
    }

    #[test]
    fn the_token_digest_is_kept_edited_around_and_dropped_at_the_end() {
        let mut s = session();
        s.token_digest = Some([7; 16]);
        let r = Record::encode(&s, None);
        let parsed = Record::parse(r.stored()).unwrap();
        assert_eq!(parsed.token_digest(), Some(&[7; 16]));
        assert_eq!(parsed.replaced_by(), None);
        assert_eq!(parsed.decode().unwrap(), s);
        // Where `replaced_by` would be, behind flag 16: a reader that knows neither sees a
        // session that was not replaced.
        assert_eq!(&parsed.stored()[REPLACED_BY..FLAGS], &[7; 16]);
        assert_eq!(parsed.stored()[FLAGS], ACTIVE | TOKEN_DIGEST);
        // An edit in place keeps it; the end of the session drops it, replaced or not.
        let mut editing = parsed.edit("public").unwrap();
        editing.values.insert("k".into(), Value::new("v"));
        let edited = Record::parse(editing.finish(8, 3_000, 12_000).stored()).unwrap();
        assert_eq!(edited.token_digest(), Some(&[7; 16]));
        assert_eq!(edited.decode().unwrap().token_digest, Some([7; 16]));
        for next in [None, Some(SessionId::random())] {
            let ended = Record::parse(parsed.ended(8, 3_000, next, 0).stored()).unwrap();
            assert_eq!((ended.token_digest(), ended.replaced_by()), (None, next));
        }
        // Set on a record made without one: the same bytes as encoded with it.
        let without = Record::encode(
            &Session {
                token_digest: None,
                ..s.clone()
            },
            None,
        );
        assert_eq!(without.token_digest(), None);
        assert_eq!(without.with_token_digest([7; 16]).stored(), r.stored());
        // A session replaced keeps its successor, not a digest.
        s.replaced_by = Some(SessionId::random());
        let replaced = Record::parse(Record::encode(&s, None).stored()).unwrap();
        assert_eq!(replaced.token_digest(), None);
        assert_eq!(replaced.replaced_by(), s.replaced_by);
        let kept = replaced.with_token_digest([9; 16]);
        assert_eq!(
            (kept.token_digest(), kept.replaced_by()),
            (None, s.replaced_by)
        );
        // Without one, the bytes are those of a record before the digest existed.
        assert_eq!(Record::encode(&session(), None).token_digest(), None);
        assert_eq!(
            Record::encode(&session(), None).stored()[REPLACED_BY..FLAGS],
            [0; 16]
        );
    }

    #[test]
    fn traces_are_kept_edited_around_and_dropped_at_the_end() {
        let mut s = session();
        s.debug = true;
        s.traces = vec![
            serde_json::json!({"rounds": [], "at": 1}),
            serde_json::json!({"at": 2}),
        ];
        let r = Record::encode(&s, None);
        let parsed = Record::parse(r.stored()).unwrap();
        assert_eq!(parsed.decode().unwrap(), s);
        assert_eq!(
            parsed.traces(),
            Some(&br#"[{"rounds":[],"at":1},{"at":2}]"#[..])
        );
        assert!(parsed.debug());
        assert!(
            !r.answer().windows(6).any(|w| w == b"rounds"),
            "not in the answer"
        );
        // An edit in place keeps them; the end of the session drops them.
        let mut editing = parsed.edit("public").unwrap();
        editing.values.insert("k".into(), Value::new("v"));
        let edited = editing.finish(8, 3_000, 12_000);
        let decoded = edited.decode().unwrap();
        assert_eq!(decoded.traces, s.traces);
        assert_eq!(decoded.get_str("public", "k"), Some("v"));
        assert_eq!(decoded.get_str("cookie", "c"), Some("secret"));
        let ended = Record::parse(parsed.ended(8, 3_000, None, 0).stored()).unwrap();
        assert_eq!(ended.traces(), None);
        assert!(ended.decode().unwrap().traces.is_empty());
        // A record without traces has none.
        assert_eq!(Record::encode(&session(), None).traces(), None);
    }

    #[test]
    fn round_trips_with_answer_and_segment_ready() {
        let mut s = session();
        let r = Record::encode(&s, None);
        let parsed = Record::parse(r.stored()).unwrap();
        assert_eq!(parsed.decode().unwrap(), s);
        assert_eq!(parsed.id(), s.id);
        assert_eq!(parsed.version(), 7);
        assert_eq!(parsed.expires_at(), 11_000);
        assert!(!parsed.is_expired(10_999) && parsed.is_expired(11_000));
        assert_eq!(parsed.updated_at(), 2_000);
        assert_eq!(parsed.account(), "demo");
        assert!(parsed.active());
        assert_eq!(parsed.replaced_by(), None);
        assert_eq!(*parsed.answer(), *s.answer(&Items::all()));
        let answer: serde_json::Value = serde_json::from_slice(&parsed.answer()).unwrap();
        assert_eq!(answer["namespaces"]["cookie"]["c"]["value"], "[redacted]");
        assert_eq!(parsed.segment_token(), Segment::of(&s).encode());
        assert_eq!(header(&r.stored()), Some((7, 11_000)));

        let next = SessionId::random();
        s.active = false;
        s.debug = true;
        s.replaced_by = Some(next);
        let r = Record::encode(&s, Some("given"));
        assert!(!r.active());
        assert_eq!(r.replaced_by(), Some(next));
        assert_eq!(r.segment_token(), "given");
        assert_eq!(r.decode().unwrap(), s);
    }

    #[test]
    fn string_ends_are_found_at_any_length_and_past_any_escape() {
        for len in 0..60 {
            for escape in (0..len).map(Some).chain([None]) {
                let mut text = "x".repeat(len);
                if let Some(at) = escape {
                    text.replace_range(at..at + 1, "\"");
                }
                let json = serde_json::to_vec(&text).unwrap();
                let mut padded = json.clone();
                padded.extend_from_slice(b",\"y\"");
                assert_eq!(string_end(&padded, 0), Some(json.len()), "{text:?}");
                assert_eq!(string_end(&json[..json.len() - 1], 0), None, "{text:?}");
            }
        }
    }

    #[test]
    fn the_scanner_decodes_what_serde_decodes() {
        let mut s = session();
        for (k, v) in [
            ("plain", serde_json::json!("text")),
            ("escaped", serde_json::json!("a \"quoted\" \\ line\nbreak")),
            ("unicode", serde_json::json!("ünï ☃ \u{1F600}")),
            ("control", serde_json::json!("\u{1}")),
            ("empty", serde_json::json!("")),
            ("number", serde_json::json!(-12.5e3)),
            ("big", serde_json::json!(18446744073709551615u64)),
            ("null", serde_json::Value::Null),
            ("bool", serde_json::json!(false)),
            (
                "nested",
                serde_json::json!({"value": [1, {"keepAlive": "x"}], "b": "}"}),
            ),
            ("a b", serde_json::json!("key with a space")),
        ] {
            s.set(&Key::new("public", k), Value::new(v.clone()));
            s.set(&Key::new("kept", k), Value::kept(v));
        }
        let r = Record::encode(&s, None);
        let answer = &r.bytes[r.answer.clone()];
        let by_serde = serde_json::from_slice::<Answered>(answer)
            .unwrap()
            .namespaces;
        assert_eq!(namespaces_as_stored(answer).unwrap(), by_serde);
        assert_eq!(r.decode().unwrap(), s);
        // What the encoder does not write goes to serde, which decides.
        for (odd, decodes) in [
            (
                &br#"{"namespaces":{"p":{"k":{"value":1,"value":2}}}}"#[..],
                false,
            ),
            (br#"{"namespaces":{"p":{"k":{"keepAlive":true}}}}"#, false),
            (
                br#"{"namespaces":{"p":{"k":{"value":1,"keepAlive":1}}}}"#,
                false,
            ),
            (br#"{"namespaces":{"p":{"k":{"value":1,"other":1}}}}"#, true),
            (br#"{"namespaces":{"p":{"k\u0041":{"value":1}}}}"#, true),
            (br#"{"namespaces": {}}"#, true),
            (br#"{"namespaces":{},"namespaces":{}}"#, false),
            (br#"{"namespaces":{}}x"#, false),
            (br#"{"namespaces":{"p":{"k":{"value":"1"}}}"#, false),
        ] {
            assert_eq!(namespaces_as_stored(odd), None);
            assert_eq!(
                serde_json::from_slice::<Answered>(odd).is_ok(),
                decodes,
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
    }

    #[test]
    fn an_edited_record_is_the_record_of_the_edited_session() {
        let base = session();
        let r = Record::encode(&base, None);
        assert_eq!(
            r.edit("public").unwrap().values,
            **base.namespaces.get("public").unwrap()
        );
        assert!(r.edit("nothing").unwrap().values.is_empty());
        assert!(r.edit(SECRET_NAMESPACE).is_none());
        assert!(r.edit("a\"b").is_none());
        type Writes = Vec<(&'static str, Option<Value>)>;
        let edits: Vec<(&str, Writes)> = vec![
            ("public", vec![("utm_source", Some(Value::new("ads")))]),
            (
                "public",
                vec![("added", Some(Value::kept(serde_json::json!([1, "x\"y"]))))],
            ),
            ("public", vec![("utm_source", None)]),
            ("aaa", vec![("first", Some(Value::new("1")))]),
            ("zzz", vec![("last", Some(Value::new("1")))]),
            ("profile", vec![("x", None), ("y", Some(Value::new("2")))]),
            ("profile", vec![("x", None)]),
        ];
        for (ns, writes) in edits {
            let mut editing = r.edit(ns).unwrap();
            let mut changes = crate::session::Changes::new();
            for (key, value) in writes {
                match value {
                    Some(v) => {
                        editing.values.insert(key.to_owned(), v.clone());
                        changes.set(Key::new(ns, key), v);
                    }
                    None => {
                        editing.values.remove(key);
                        changes.remove(Key::new(ns, key));
                    }
                }
            }
            let mut edited = base.clone();
            edited.apply(&changes);
            edited.version = 9;
            edited.updated_at = 5_000;
            edited.expires_at = 99_000;
            let got = editing.finish(9, 5_000, 99_000);
            assert_eq!(
                String::from_utf8_lossy(&got.stored()),
                String::from_utf8_lossy(&Record::encode(&edited, Some(r.segment_token())).stored()),
                "{ns}"
            );
            assert_eq!(got.decode().unwrap(), edited);
            assert_eq!(got.expires_at(), 99_000);
        }
    }

    #[test]
    fn a_record_sharing_its_segment_token_answers_stores_and_edits_the_same() {
        let mut traced = session();
        traced.debug = true;
        traced.traces = vec![serde_json::json!({"at": 1})];
        let mut plain = session();
        plain.namespaces.remove("cookie");
        for s in [session(), traced, plain] {
            let r = Record::encode(&s, None);
            let shared = Bytes::copy_from_slice(r.segment_token().as_bytes());
            let compact = r.clone().sharing_segment(&shared);
            let held = compact.shared_segment().expect("the same token is shared");
            assert_eq!(held.as_ptr(), shared.as_ptr(), "one copy of the token");
            assert!(compact.bytes.len() + shared.len() == r.bytes.len());
            assert_eq!(compact.stored(), r.stored());
            assert_eq!(
                Record::parse(compact.stored()).unwrap().decode().unwrap(),
                s
            );
            assert_eq!(compact.decode().unwrap(), s);
            assert_eq!(compact.answer(), r.answer());
            assert_eq!(compact.segment_token(), r.segment_token());
            assert_eq!(compact.traces(), r.traces());
            assert_eq!(compact.has_secrets(), r.has_secrets());
            assert!(compact.same_segment(&r) && r.same_segment(&compact));
            let items = Items::parse("public.utm_source,profile.x");
            assert_eq!(compact.answer_for(&items), r.answer_for(&items));
            assert_eq!(
                compact.ended(8, 3_000, None, 0).stored(),
                r.ended(8, 3_000, None, 0).stored()
            );
            let edit = |r: &Record| {
                let mut editing = r.edit("public").unwrap();
                editing.values.insert("k".into(), Value::new("v"));
                editing.finish(9, 5_000, 99_000).stored()
            };
            assert_eq!(edit(&compact), edit(&r));
            assert_eq!(
                compact
                    .clone()
                    .sharing_segment(&Bytes::from_static(b"x"))
                    .stored(),
                r.stored(),
                "already shared: kept as it is"
            );
            let other = r.clone().sharing_segment(&Bytes::from_static(b"another"));
            assert!(
                other.shared_segment().is_none(),
                "another token is not shared"
            );
        }
    }

    #[test]
    fn an_ended_record_holds_what_is_read_of_an_ended_session_and_no_values() {
        for debug in [false, true] {
            let mut s = session();
            s.debug = debug;
            s.set(
                &Key::new("cookie", "VtexIdclientAutCookie_demo"),
                Value::new("jwt"),
            );
            let r = Record::encode(&s, None);
            for next in [None, Some(SessionId::random())] {
                let ended = r.ended(8, 3_000, next, 0);
                let e = Session {
                    namespaces: Namespaces::new(),
                    version: 8,
                    updated_at: 3_000,
                    active: false,
                    replaced_by: next,
                    ..s.clone()
                };
                assert_eq!(ended.stored(), Record::encode(&e, None).stored());
                assert_eq!(ended.decode().unwrap(), e);
                let parsed = Record::parse(ended.stored()).unwrap();
                assert_eq!(
                    (parsed.version(), parsed.replaced_by(), parsed.account()),
                    (8, next, s.account.as_str())
                );
                assert_eq!(
                    (parsed.updated_at(), parsed.expires_at()),
                    (3_000, s.expires_at)
                );
                assert!(!parsed.active());
                assert!(
                    !parsed.has_secrets(),
                    "no identity token outlives its session"
                );
                assert!(ended.stored().len() < r.stored().len());
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_record() {
        let r = Record::encode(&session(), None);
        let bytes = r.stored();
        for cut in [0, 1, 30, 67, 69, bytes.len() - r.secrets_len() - 1] {
            assert!(
                Record::parse(bytes.slice(..cut)).is_err(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        let mut other = bytes.to_vec();
        other[0] = 0;
        assert!(Record::parse(Bytes::from(other)).is_err());
        assert_eq!(header(b"{\"id\":1}"), None);
        let mut bad_json = bytes.to_vec();
        bad_json.truncate(bytes.len() - 3);
        let parsed = Record::parse(Bytes::from(bad_json)).unwrap();
        assert!(matches!(parsed.decode(), Err(RecordError::Json(_))));
    }

    #[test]
    fn nothing_is_stored_twice_and_secrets_come_back() {
        let mut s = session();
        s.namespaces.remove(SECRET_NAMESPACE);
        let plain = Record::encode(&s, None);
        assert_eq!(plain.secrets_len(), 0);
        assert_eq!(plain.decode().unwrap(), s);
        let json = serde_json::to_vec(&s).unwrap();
        assert!(
            plain.stored().len() < json.len() + Segment::of(&s).encode().len() + 120,
            "{} bytes for {} of JSON",
            plain.stored().len(),
            json.len()
        );
        s.set(
            &Key::new("cookie", "VtexIdclientAutCookie_demo"),
            Value::kept("jwt"),
        );
        let r = Record::encode(&s, None);
        assert!(r.secrets_len() > 0);
        assert!(!String::from_utf8_lossy(&r.answer()).contains("jwt"));
        assert_eq!(r.decode().unwrap(), s);
    }

    #[test]
    fn filtered_answers_are_cut_from_the_stored_one_byte_for_byte() {
        let mut s = session();
        s.set(&Key::new("public", "a b"), Value::new("x\"y"));
        s.set(
            &Key::new("public", "ü"),
            Value::new(serde_json::json!([1, {"z": null}])),
        );
        s.set(&Key::new("store", "channel"), Value::kept("1"));
        s.debug = true;
        let r = Record::encode(&s, None);
        for raw in [
            "",
            "*",
            "public.*",
            "public.utm_source",
            "public.utm_source,public.missing,store.channel",
            "cookie.c",
            "cookie.*,profile.x",
            "public.ü,public.a b,nothing.here",
            "missing.*",
            "store.nope",
            "public",
        ] {
            let items = Items::parse(raw);
            assert_eq!(
                String::from_utf8(r.answer_for(&items).unwrap()).unwrap(),
                String::from_utf8(s.answer(&items)).unwrap(),
                "items={raw}"
            );
        }
        // A key stored with escapes is left to the decoder.
        s.set(&Key::new("public", "quote\"d"), Value::new("1"));
        let r = Record::encode(&s, None);
        assert_eq!(r.answer_for(&Items::parse("public.utm_source")), None);
    }

    #[test]
    fn a_damaged_answer_never_panics_the_cutter() {
        let r = Record::encode(&session(), None);
        let items = Items::parse("public.utm_source,profile.*,cookie.c");
        let bytes = r.stored().to_vec();
        for at in r.answer.clone() {
            for b in [b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'x'] {
                let mut damaged = bytes.clone();
                damaged[at] = b;
                let damaged = Record::parse(Bytes::from(damaged)).unwrap();
                let _ = damaged.answer_for(&items);
                let _ = damaged.answer_for(&Items::all());
                let _ = damaged.decode();
            }
        }
        for end in 0..r.answer.len() {
            let cut = &r.bytes[r.answer.start..r.answer.start + end];
            assert!(members(cut, |_, _| Some(())).is_none(), "cut at {end}");
        }
    }

    impl Record {
        fn secrets_len(&self) -> usize {
            self.bytes.len() - self.secrets
        }
    }
}
