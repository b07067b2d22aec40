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
//! | 49..65 | `replaced_by` (meaningful when flag 4 is set) |
//! | 65 | flags: 1 active, 2 debug, 4 replaced |
//! | 66..68 | length A of the account name, then A bytes |
//! | 4 bytes | length N of the answer, then N bytes |
//! | 4 bytes | length S of the segment token, then S bytes |
//! | the rest | the secret namespace's values as JSON, or nothing when it is empty |

use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// The shared byte buffer records and answers are held in.
pub use bytes::Bytes;
use serde::Deserialize;

use crate::items::{Items, SECRET_NAMESPACE};
use crate::segment::Segment;
use crate::session::{Namespace, Namespaces, Session, SessionId, Value};

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

/// The part of an answer a session is decoded from (the rest is in the record's header).
#[derive(Deserialize)]
struct Answered {
    namespaces: Namespaces,
}

/// A session as stored, with its header fields and ready-made answers at hand.
#[derive(Clone, Debug)]
pub struct Record {
    bytes: Bytes,
    account: Range<usize>,
    answer: Range<usize>,
    segment: Range<usize>,
    secrets: usize,
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

/// A record of `out` (its fixed header), the account name, answer and segment token, and the
/// secrets `secrets` appends.
fn assemble(
    mut out: Vec<u8>,
    [account, answer, segment]: [&[u8]; 3],
    secrets: impl FnOnce(&mut Vec<u8>),
) -> Record {
    let account = put_field(&mut out, account, 2);
    let answer = put_field(&mut out, answer, 4);
    let segment = put_field(&mut out, segment, 4);
    let start = out.len();
    secrets(&mut out);
    Record {
        bytes: Bytes::from(out),
        account,
        answer,
        segment,
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

/// Calls `f` with the raw key (between its quotes) and the raw value of every member of the
/// JSON object `obj`, as serde_json writes objects (no white space). `None` when `obj` is not
/// such an object or a key holds an escape (its raw form is not its text), or when `f` says so.
fn members<'a>(obj: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8]) -> Option<()>) -> Option<()> {
    let mut c = Cursor { bytes: obj, at: 0 };
    c.object(|c, key| f(key, c.value()?))?;
    (c.at == obj.len()).then_some(())
}

/// The end (one past the closing quote) of the JSON string starting at `at`.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    // Most keys and values are short: a plain loop finds their end before memchr is set up.
    let near = bytes.len().min(i + 24);
    match bytes
        .get(i..near)
        .and_then(|head| head.iter().position(|&b| b == b'"' || b == b'\\'))
    {
        Some(n) => {
            i += n;
            if bytes[i] == b'"' {
                return Some(i + 1);
            }
            i += 2;
        }
        None => i = i.max(near),
    }
    loop {
        i += memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// The end of the JSON value starting at `at` (one past it).
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))?;
            (len > 0).then_some(at + len)
        }
    }
}

/// The namespaces of a stored answer, read in one pass: keys without escapes are taken as they
/// are, and so are string values without escapes; any other value is parsed as JSON. `None`
/// when the answer is not as the encoder writes it (then serde reads it, or refuses).
fn namespaces_as_stored(answer: &[u8]) -> Option<Namespaces> {
    let mut c = Cursor {
        bytes: answer,
        at: 0,
    };
    let mut namespaces = None;
    c.object(|c, key| {
        if key != b"namespaces" {
            return c.value().map(drop);
        }
        let mut all = Namespaces::new();
        c.object(|c, name| {
            all.insert(text(name)?, Arc::new(namespace_at(c)?));
            Some(())
        })?;
        namespaces.replace(all).is_none().then_some(())
    })?;
    (c.at == answer.len()).then_some(())?;
    namespaces
}

/// One namespace of a [`Record`] being edited (see [`Record::edit`]).
pub struct Editing<'a> {
    record: &'a Record,
    parts: Parts<'a>,
    name: &'a str,
    /// The namespace's values (empty when the session has none), to be changed.
    pub values: Namespace,
}

impl Editing<'_> {
    /// The record with the namespace holding [`Editing::values`] (none: removed), as version
    /// `version` changed at `updated_at` and living until `expires_at`: what
    /// [`Record::encode`] gives for the edited session with the record's segment token, the
    /// other namespaces copied as they are stored.
    pub fn finish(&self, version: u64, updated_at: u64, expires_at: u64) -> Record {
        let mut header = self.record.header_at(version, updated_at);
        header[EXPIRES..EXPIRES + 8].copy_from_slice(&expires_at.to_be_bytes());
        let answer = self
            .parts
            .answer(version, self.parts.active, Some((self.name, &self.values)));
        self.record.with(header, &answer)
    }
}

/// A stored answer taken apart: its fields as they are stored, each namespace by name.
struct Parts<'a> {
    id: &'a [u8],
    /// (name, values), in name order.
    namespaces: Vec<(&'a [u8], &'a [u8])>,
    version: &'a [u8],
    active: &'a [u8],
    debug: &'a [u8],
}

impl<'a> Parts<'a> {
    /// `None` when `answer` is not as the encoder writes it. One pass.
    fn of(answer: &'a [u8]) -> Option<Parts<'a>> {
        let [mut id, mut version, mut active, mut debug] = [None; 4];
        let mut namespaces = None;
        let mut c = Cursor {
            bytes: answer,
            at: 0,
        };
        c.object(|c, key| {
            if key == b"namespaces" {
                let mut named = Vec::with_capacity(8);
                c.object(|c, name| {
                    named.push((name, c.value()?));
                    Some(())
                })?;
                return namespaces.replace(named).is_none().then_some(());
            }
            let field = match key {
                b"id" => &mut id,
                b"version" => &mut version,
                b"active" => &mut active,
                b"debug" => &mut debug,
                _ => return None,
            };
            field.replace(c.value()?).is_none().then_some(())
        })?;
        (c.at == answer.len()).then_some(())?;
        Some(Parts {
            id: id?,
            namespaces: namespaces?,
            version: version?,
            active: active?,
            debug: debug?,
        })
    }

    /// Writes `{"id":…,"namespaces":{`.
    fn head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(self.id);
        out.extend_from_slice(b",\"namespaces\":{");
    }

    /// Writes `},"version":…,"active":…,"debug":…}`.
    fn tail(&self, out: &mut Vec<u8>, version: &[u8], active: &[u8]) {
        for (name, value) in [
            (&b"},\"version\":"[..], version),
            (b",\"active\":", active),
            (b",\"debug\":", self.debug),
        ] {
            out.extend_from_slice(name);
            out.extend_from_slice(value);
        }
        out.push(b'}');
    }

    /// The answer with `version` and `active`, and namespace `name` holding `values` when
    /// `replace` says so (an empty namespace is left out, as the encoder does).
    fn answer(&self, version: u64, active: &[u8], replace: Option<(&str, &Namespace)>) -> Vec<u8> {
        let fresh = replace.map(|(name, values)| {
            let raw =
                (!values.is_empty()).then(|| serde_json::to_vec(values).expect("values serialize"));
            (name.as_bytes(), raw)
        });
        let mut entries: Vec<(&[u8], &[u8])> = self
            .namespaces
            .iter()
            .filter(|(name, _)| fresh.as_ref().is_none_or(|(new, _)| name != new))
            .copied()
            .collect();
        if let Some((name, Some(raw))) = &fresh {
            let at = entries.partition_point(|(n, _)| n < name);
            entries.insert(at, (name, raw));
        }
        let mut out = Vec::with_capacity(1024);
        self.head(&mut out);
        for (i, (name, values)) in entries.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            quoted(&mut out, name);
            out.push(b':');
            out.extend_from_slice(values);
        }
        self.tail(&mut out, version.to_string().as_bytes(), active);
        out
    }
}

/// JSON as serde_json writes it (no white space), read from the front.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.bytes.get(self.at) == Some(&byte);
        self.at += usize::from(next);
        next
    }

    /// A key without escapes and the colon after it.
    fn key(&mut self) -> Option<&'a [u8]> {
        let end = string_end(self.bytes, self.at)?;
        let key = &self.bytes[self.at + 1..end - 1];
        if key.contains(&b'\\') || self.bytes.get(end) != Some(&b':') {
            return None;
        }
        self.at = end + 1;
        Some(key)
    }

    /// The raw value at the cursor.
    fn value(&mut self) -> Option<&'a [u8]> {
        let end = value_end(self.bytes, self.at)?;
        let value = &self.bytes[self.at..end];
        self.at = end;
        Some(value)
    }

    /// The object at the cursor: `member` is called with each key and reads its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }
}

/// The stored namespace (an object of envelopes) at the cursor.
fn namespace_at(c: &mut Cursor<'_>) -> Option<Namespace> {
    let mut namespace = Namespace::new();
    c.object(|c, key| {
        namespace.insert(text(key)?, envelope(c)?);
        Some(())
    })?;
    Some(namespace)
}

/// A stored `{"value":…}` or `{"value":…,"keepAlive":true}` envelope at the cursor.
fn envelope(c: &mut Cursor<'_>) -> Option<Value> {
    let (mut value, mut keep_alive) = (None, None);
    c.object(|c, key| {
        let raw = c.value()?;
        let (field, read) = match key {
            b"value" => (&mut value, json_as_stored(raw)),
            b"keepAlive" => (
                &mut keep_alive,
                match raw {
                    b"true" => Some(serde_json::Value::Bool(true)),
                    b"false" => Some(serde_json::Value::Bool(false)),
                    _ => None,
                },
            ),
            _ => return None,
        };
        // A field given twice is left to serde (which refuses it).
        field.replace(read?).is_none().then_some(())
    })?;
    Some(Value {
        value: value?,
        keep_alive: keep_alive == Some(serde_json::Value::Bool(true)),
    })
}

/// A raw key (no escapes, see [`members`]) as a string.
fn text(raw: &[u8]) -> Option<String> {
    std::str::from_utf8(raw).ok().map(str::to_owned)
}

/// A raw JSON value: a string without escapes or control characters is taken as it is, anything
/// else parsed.
fn json_as_stored(raw: &[u8]) -> Option<serde_json::Value> {
    if let [b'"', inner @ .., b'"'] = raw {
        if !inner.iter().any(|&b| b == b'\\' || b < 0x20) {
            return text(inner).map(serde_json::Value::String);
        }
    }
    serde_json::from_slice(raw).ok()
}

/// Writes `"raw"` (a key without escapes is written as it is).
fn quoted(out: &mut Vec<u8>, raw: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(raw);
    out.push(b'"');
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
        let replaced_by = session.replaced_by.unwrap_or(SessionId::min());
        out.extend_from_slice(replaced_by.as_bytes());
        let mut flags = 0;
        if session.active {
            flags |= ACTIVE;
        }
        if session.debug {
            flags |= DEBUG;
        }
        if session.replaced_by.is_some() {
            flags |= REPLACED;
        }
        out.push(flags);
        let fields = [session.account.as_bytes(), &answer, segment.as_bytes()];
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
        if std::str::from_utf8(&bytes[account.clone()]).is_err()
            || std::str::from_utf8(&bytes[segment.clone()]).is_err()
        {
            return Err(RecordError::Malformed("a text field is not UTF-8"));
        }
        Ok(Record {
            bytes,
            account,
            answer,
            segment,
            secrets: at,
        })
    }

    /// Whether `other` has the same segment token (compared as stored).
    pub fn same_segment(&self, other: &Record) -> bool {
        self.bytes[self.segment.clone()] == other.bytes[other.segment.clone()]
    }

    /// Whether the session holds values of the secret namespace.
    pub fn has_secrets(&self) -> bool {
        self.bytes.len() > self.secrets
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
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

    /// The session's answer to `items`, cut out of the `?items=*` answer without decoding any
    /// value (byte for byte what [`Session::answer`] gives). `None` when the stored answer has
    /// a key this cannot take as it is (one written with escapes) or is not as this encoder
    /// writes it: then decode the session.
    pub fn answer_for(&self, items: &Items) -> Option<Vec<u8>> {
        let parts = Parts::of(&self.bytes[self.answer.clone()])?;
        let mut out = Vec::with_capacity(self.answer.len());
        parts.head(&mut out);
        if !items.is_empty() {
            let mut first = true;
            for &(ns, values) in &parts.namespaces {
                let name = std::str::from_utf8(ns).ok()?;
                let whole = items.takes_whole(name);
                let wanted = items.named_keys(name);
                if !whole && wanted.is_none() {
                    continue;
                }
                let start = out.len();
                if !first {
                    out.push(b',');
                }
                quoted(&mut out, ns);
                out.push(b':');
                if whole {
                    // The stored answer holds no empty namespace.
                    out.extend_from_slice(values);
                    first = false;
                    continue;
                }
                let wanted = wanted?;
                out.push(b'{');
                let mut any = false;
                // Stored keys are in key order, as the filter's are: the answer keeps that order.
                members(values, |key, value| {
                    if wanted.contains(std::str::from_utf8(key).ok()?) {
                        if std::mem::replace(&mut any, true) {
                            out.push(b',');
                        }
                        quoted(&mut out, key);
                        out.push(b':');
                        out.extend_from_slice(value);
                    }
                    Some(())
                })?;
                if any {
                    out.push(b'}');
                    first = false;
                } else {
                    out.truncate(start);
                }
            }
        }
        parts.tail(&mut out, parts.version, parts.active);
        Some(out)
    }

    /// The record that ends this one's session: the same id, account, deadline, creation time
    /// and debug flag, `version` and `updated_at` set, inactive, taken over by `replaced_by`
    /// when given, and nothing else. An ended session is never answered, edited or
    /// carried over (its values went to its successor, or were dropped by a reset): what is
    /// read of it is whether it is active, by whom it was replaced and when. So it holds no
    /// values, and none of the identity tokens the session had recorded.
    pub fn ended(&self, version: u64, updated_at: u64, replaced_by: Option<SessionId>) -> Record {
        static EMPTY_SEGMENT: OnceLock<String> = OnceLock::new();
        let segment = EMPTY_SEGMENT.get_or_init(|| Segment::of(&Session::new("", 0, 0)).encode());
        let mut header = self.header_at(version, updated_at);
        let next = replaced_by.unwrap_or(SessionId::min());
        header[REPLACED_BY..REPLACED_BY + 16].copy_from_slice(next.as_bytes());
        let debug = self.flags() & DEBUG;
        header[FLAGS] = debug | if replaced_by.is_some() { REPLACED } else { 0 };
        let answer = format!(
            r#"{{"id":"{}","namespaces":{{}},"version":{version},"active":false,"debug":{}}}"#,
            self.id(),
            debug != 0
        );
        let fields = [
            &self.bytes[self.account.clone()],
            answer.as_bytes(),
            segment.as_bytes(),
        ];
        assemble(header, fields, |_| {})
    }

    /// Namespace `name` read for an edit, the others left as they are stored. `None` when the
    /// answer is not as this encoder writes it, or `name` is the secret namespace (whose answer
    /// is redacted) or needs escaping: then decode the session.
    pub fn edit<'a>(&'a self, name: &'a str) -> Option<Editing<'a>> {
        if name == SECRET_NAMESPACE || name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            return None;
        }
        let parts = Parts::of(&self.bytes[self.answer.clone()])?;
        let mut values = Namespace::new();
        if let Some(&(_, raw)) = parts.namespaces.iter().find(|(n, _)| *n == name.as_bytes()) {
            let mut c = Cursor { bytes: raw, at: 0 };
            values = namespace_at(&mut c)?;
            (c.at == raw.len()).then_some(())?;
        }
        Some(Editing {
            record: self,
            parts,
            name,
            values,
        })
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
            &self.bytes[self.segment.clone()],
        ];
        assemble(out, fields, |out| {
            out.extend_from_slice(&self.bytes[self.secrets..])
        })
    }

    /// The session's segment token (`vtex_segment`).
    pub fn segment_token(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.segment.clone()]).expect("checked by parse")
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
        })
    }
}

#[cfg(test)]
mod tests {
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
    fn round_trips_with_answer_and_segment_ready() {
        let mut s = session();
        let r = Record::encode(&s, None);
        let parsed = Record::parse(r.bytes().clone()).unwrap();
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
        assert_eq!(header(r.bytes()), Some((7, 11_000)));

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
        let answer = &r.bytes()[r.answer.clone()];
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
                String::from_utf8_lossy(got.bytes()),
                String::from_utf8_lossy(Record::encode(&edited, Some(r.segment_token())).bytes()),
                "{ns}"
            );
            assert_eq!(got.decode().unwrap(), edited);
            assert_eq!(got.expires_at(), 99_000);
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
                let ended = r.ended(8, 3_000, next);
                let e = Session {
                    namespaces: Namespaces::new(),
                    version: 8,
                    updated_at: 3_000,
                    active: false,
                    replaced_by: next,
                    ..s.clone()
                };
                assert_eq!(ended.bytes(), Record::encode(&e, None).bytes());
                assert_eq!(ended.decode().unwrap(), e);
                let parsed = Record::parse(ended.bytes().clone()).unwrap();
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
                assert!(ended.bytes().len() < r.bytes().len());
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_record() {
        let r = Record::encode(&session(), None);
        let bytes = r.bytes();
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
            plain.bytes().len() < json.len() + Segment::of(&s).encode().len() + 120,
            "{} bytes for {} of JSON",
            plain.bytes().len(),
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
        let bytes = r.bytes().to_vec();
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
            let cut = &r.bytes()[r.answer.start..r.answer.start + end];
            assert!(members(cut, |_, _| Some(())).is_none(), "cut at {end}");
        }
    }

    impl Record {
        fn secrets_len(&self) -> usize {
            self.bytes.len() - self.secrets
        }
    }
}
