//! The session: its identity, its namespaced values, and the changes applied to it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::map::SortedMap;

/// A session identifier: a random (v4) UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh identifier from a cryptographically secure generator (the thread's generator
    /// of `rand`, seeded from the operating system): no system call per id.
    pub fn random() -> Self {
        SessionId(Uuid::new_v4())
    }

    /// A fresh identifier for the session that takes over this one (log-in, log-out): random
    /// like [`SessionId::random`] but for its first four bytes, which it shares with `self`, so
    /// a store can keep a session and its successors together (one Redis Cluster slot, where
    /// the new session and the end of the old one are written in one step).
    pub fn successor(&self) -> Self {
        let mut bytes = *Uuid::new_v4().as_bytes();
        bytes[..4].copy_from_slice(&self.as_bytes()[..4]);
        SessionId(Uuid::from_bytes(bytes))
    }

    /// The identifier with these 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        SessionId(Uuid::from_bytes(bytes))
    }

    /// The smallest identifier (all zero bits), as a bound for ordered scans.
    pub fn min() -> Self {
        SessionId(Uuid::nil())
    }

    /// The identifier as its 16 raw bytes (a compact storage key).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Writes the identifier's text (hyphenated, lower case: 36 bytes) into `out`.
    pub(crate) fn hyphenated(&self, out: &mut [u8]) {
        self.0.hyphenated().encode_lower(out);
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for SessionId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(SessionId)
    }
}

/// One session value: the `{"value": <any JSON>, "keepAlive": <bool>}` envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Value {
    /// The value itself; any JSON (usually a string).
    pub value: serde_json::Value,
    /// Whether the value survives a session reset.
    #[serde(rename = "keepAlive", default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Value {
    /// A value without `keepAlive`.
    pub fn new(value: impl Into<serde_json::Value>) -> Self {
        Value {
            value: value.into(),
            keep_alive: false,
        }
    }

    /// A value that survives a reset.
    pub fn kept(value: impl Into<serde_json::Value>) -> Self {
        Value {
            value: value.into(),
            keep_alive: true,
        }
    }

    /// The value as text when it is a JSON string.
    pub fn as_str(&self) -> Option<&str> {
        self.value.as_str()
    }
}

/// The keys of one namespace, in key order (a [`SortedMap`]).
pub type Namespace = SortedMap<String, Value>;

/// All namespaces of a session: `namespace → key → Value`, in namespace order. Each namespace is
/// shared (`Arc`) between the versions of a session until one of them changes it, so an edit
/// copies only the namespaces it writes.
pub type Namespaces = SortedMap<String, Arc<Namespace>>;

/// A `(namespace, key)` pair naming one session value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The namespace, e.g. `public`.
    pub namespace: String,
    /// The key inside the namespace, e.g. `utm_source`.
    pub name: String,
}

impl Key {
    /// Builds a key from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// Writes to apply to a session, in order: `Some` sets a value, `None` removes the key.
///
/// Kept as an ordered list so the same request can be re-applied, unchanged, to a newer
/// version of the session after a compare-and-swap conflict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    entries: Vec<(Key, Option<Value>)>,
}

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Changes::default()
    }

    /// Sets `key` (later writes to the same key win).
    pub fn set(&mut self, key: Key, value: Value) {
        self.entries.push((key, Some(value)));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: Key) {
        self.entries.push((key, None));
    }

    /// Appends all of `other` after these changes (so `other` wins on the same key).
    pub fn extend(&mut self, other: Changes) {
        self.entries.extend(other.entries);
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The writes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &(Key, Option<Value>)> {
        self.entries.iter()
    }

    /// The number of writes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

impl IntoIterator for Changes {
    type Item = (Key, Option<Value>);
    type IntoIter = std::vec::IntoIter<(Key, Option<Value>)>;

    /// The writes, in order, by value.
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Whether `writes` write some key more than once (pairwise for the few writes of a request
/// or a round, by sorting past that).
fn writes_a_key_twice(writes: &[(Key, Option<Value>)]) -> bool {
    if writes.len() <= 16 {
        return writes
            .iter()
            .enumerate()
            .any(|(i, (key, _))| writes[..i].iter().any(|(earlier, _)| earlier == key));
    }
    let mut keys: Vec<&Key> = writes.iter().map(|(key, _)| key).collect();
    keys.sort_unstable();
    keys.windows(2).any(|pair| pair[0] == pair[1])
}

/// The keys whose value actually changed (Δ of the transform cycle).
pub type Delta = BTreeSet<Key>;

/// A visitor's session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Random identifier; changes when the visitor's identity changes.
    pub id: SessionId,
    /// The account (tenant) the session belongs to.
    pub account: String,
    /// The session data.
    pub namespaces: Namespaces,
    /// +1 on every saved change; starts at 1.
    pub version: u64,
    /// False once the session was reset or replaced.
    pub active: bool,
    /// Whether cycle traces are kept for this session.
    pub debug: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Time of the last saved change, milliseconds since the Unix epoch.
    pub updated_at: u64,
    /// When the session stops existing, milliseconds since the Unix epoch.
    pub expires_at: u64,
    /// The session that took over when the visitor's identity changed (set on the inactive
    /// old session, so requests racing with a log-in can find where their changes belong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<SessionId>,
    /// The last cycle traces of a session with `debug` (oldest first), as the operator sees
    /// them: kept with the session so that any process can show them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<serde_json::Value>,
    /// The first 16 bytes of the SHA-256 of the session token issued when the session was
    /// saved under this id (at creation, at a change of identity, or at its first save after a
    /// create without a write), if one was. A process that has not seen the token yet takes it
    /// as genuine when its digest is this one, without checking its signature: the token was
    /// signed by this manager before the record was written.
    #[serde(skip)]
    pub token_digest: Option<[u8; 16]>,
}

impl Session {
    /// A new, empty, active session at version 1 (not yet stored).
    pub fn new(account: impl Into<String>, now_ms: u64, ttl_ms: u64) -> Self {
        Session {
            id: SessionId::random(),
            account: account.into(),
            namespaces: Namespaces::new(),
            version: 1,
            active: true,
            debug: false,
            created_at: now_ms,
            updated_at: now_ms,
            expires_at: now_ms.saturating_add(ttl_ms),
            replaced_by: None,
            traces: Vec::new(),
            token_digest: None,
        }
    }

    /// The value at `namespace.name`, if set.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.namespaces.get(namespace)?.get(name)
    }

    /// The text at `namespace.name`, if set and a string.
    pub fn get_str(&self, namespace: &str, name: &str) -> Option<&str> {
        self.get(namespace, name)?.as_str()
    }

    /// Sets one value; returns whether anything changed.
    pub fn set(&mut self, key: &Key, value: Value) -> bool {
        self.put(key, Some(value))
    }

    /// Puts `value` at `key` (`None`: removes it); returns whether anything changed. A
    /// namespace shared with other versions is copied only when its value does change, and a
    /// name is copied only when it is new to its namespace.
    fn put(&mut self, key: &Key, value: Option<Value>) -> bool {
        let Some(value) = value else {
            return self.take(key).is_some();
        };
        let Some(shared) = self.namespaces.get_mut(key.namespace.as_str()) else {
            let mut namespace = Namespace::new();
            namespace.insert(key.name.clone(), value);
            self.namespaces
                .insert(key.namespace.clone(), Arc::new(namespace));
            return true;
        };
        if shared.get(key.name.as_str()) == Some(&value) {
            return false;
        }
        let namespace = Arc::make_mut(shared);
        match namespace.get_mut(key.name.as_str()) {
            Some(old) => *old = value,
            None => {
                namespace.insert(key.name.clone(), value);
            }
        }
        true
    }

    /// The namespace `name`, created empty when missing (its name is copied only then), and
    /// made this session's own when shared with another version.
    fn namespace_mut(&mut self, name: &str) -> &mut Namespace {
        if !self.namespaces.contains_key(name) {
            self.namespaces.insert(name.to_owned(), Arc::default());
        }
        Arc::make_mut(
            self.namespaces
                .get_mut(name)
                .expect("the namespace was just ensured"),
        )
    }

    /// Removes one value; returns whether it was there. Empty namespaces disappear.
    pub fn remove(&mut self, key: &Key) -> bool {
        self.take(key).is_some()
    }

    /// Removes one value and returns it. Empty namespaces disappear.
    fn take(&mut self, key: &Key) -> Option<Value> {
        let shared = self.namespaces.get_mut(key.namespace.as_str())?;
        if !shared.contains_key(key.name.as_str()) {
            return None;
        }
        let ns = Arc::make_mut(shared);
        let removed = ns.remove(key.name.as_str());
        if ns.is_empty() {
            self.namespaces.remove(key.namespace.as_str());
        }
        removed
    }

    /// Puts `value` at `key` (`None`: removes it) and returns the value it replaced.
    fn swap(&mut self, key: &Key, value: Option<Value>) -> Option<Value> {
        let Some(value) = value else {
            return self.take(key);
        };
        // Writing what is there already leaves a namespace shared with other versions as is.
        if self.get(&key.namespace, &key.name) == Some(&value) {
            return Some(value);
        }
        let ns = self.namespace_mut(&key.namespace);
        match ns.get_mut(key.name.as_str()) {
            Some(old) => Some(std::mem::replace(old, value)),
            None => {
                ns.insert(key.name.clone(), value);
                None
            }
        }
    }

    /// Applies `changes` in order and returns the keys whose value ended up different.
    pub fn apply(&mut self, changes: &Changes) -> Delta {
        self.apply_owned(changes.clone())
    }

    /// [`Session::apply`], moving the values in instead of copying them.
    pub fn apply_owned(&mut self, changes: Changes) -> Delta {
        if !writes_a_key_twice(&changes.entries) {
            // One write per key: a key ends up different exactly when its write changed it.
            return changes
                .entries
                .into_iter()
                .filter_map(|(key, value)| self.put(&key, value).then_some(key))
                .collect();
        }
        // What each write replaced; the first write of a key replaced its original value.
        let mut replaced: Vec<(Key, Option<Value>)> = changes
            .entries
            .into_iter()
            .map(|(key, value)| {
                let old = self.swap(&key, value);
                (key, old)
            })
            .collect();
        // Stable: among the writes of one key, the first stays first.
        replaced.sort_by(|a, b| a.0.cmp(&b.0));
        replaced.dedup_by(|later, first| later.0 == first.0);
        replaced
            .into_iter()
            .filter(|(key, old)| self.get(&key.namespace, &key.name) != old.as_ref())
            .map(|(key, _)| key)
            .collect()
    }

    /// The values marked `keepAlive`, to carry over into the session that replaces this one.
    pub fn kept_alive(&self) -> Changes {
        let mut changes = Changes::new();
        for (ns, keys) in &self.namespaces {
            for (name, value) in keys.iter() {
                if value.keep_alive {
                    changes.set(Key::new(ns.as_str(), name.as_str()), value.clone());
                }
            }
        }
        changes
    }

    /// Whether the session has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, k: &str) -> Key {
        Key::new(ns, k)
    }

    #[test]
    fn a_successor_shares_the_first_four_bytes_and_nothing_else_is_fixed() {
        let id = SessionId::random();
        let next = id.successor();
        assert_eq!(next.as_bytes()[..4], id.as_bytes()[..4]);
        assert_ne!(next, id);
        assert_ne!(next.as_bytes()[4..], next.successor().as_bytes()[4..]);
        assert_eq!(next.0.get_version_num(), 4, "still a random UUID");
    }

    #[test]
    fn apply_reports_only_real_changes() {
        let mut s = Session::new("demo", 0, 1000);
        let mut c = Changes::new();
        c.set(key("public", "a"), Value::new("1"));
        c.set(key("public", "b"), Value::new("2"));
        assert_eq!(s.apply(&c).len(), 2);
        // Same values again: nothing changes.
        assert!(s.apply(&c).is_empty());
        // Set then remove in one batch: net effect on a missing key is none.
        let mut c = Changes::new();
        c.set(key("public", "x"), Value::new("1"));
        c.remove(key("public", "x"));
        c.remove(key("public", "a"));
        let delta = s.apply(&c);
        assert_eq!(
            delta.into_iter().collect::<Vec<_>>(),
            vec![key("public", "a")]
        );
        assert_eq!(s.get_str("public", "b"), Some("2"));
        assert!(s.get("public", "a").is_none());
    }

    #[test]
    fn versions_share_the_namespaces_an_edit_does_not_change() {
        let mut old = Session::new("demo", 0, 1000);
        old.set(&key("public", "a"), Value::new("1"));
        old.set(&key("store", "channel"), Value::new("1"));
        let mut new = old.clone();
        let mut same = Changes::new();
        same.set(key("public", "a"), Value::new("1"));
        assert!(new.apply_owned(same).is_empty());
        let shared = |a: &Session, b: &Session, ns: &str| {
            Arc::ptr_eq(a.namespaces.get(ns).unwrap(), b.namespaces.get(ns).unwrap())
        };
        assert!(
            shared(&old, &new, "public"),
            "an equal write copies nothing"
        );
        let mut edit = Changes::new();
        edit.set(key("public", "a"), Value::new("2"));
        assert_eq!(new.apply_owned(edit).len(), 1);
        assert!(!shared(&old, &new, "public") && shared(&old, &new, "store"));
        assert_eq!(old.get_str("public", "a"), Some("1"));
        assert_eq!(new.get_str("public", "a"), Some("2"));
    }

    #[test]
    fn empty_namespaces_disappear() {
        let mut s = Session::new("demo", 0, 1000);
        s.set(&key("public", "a"), Value::new("1"));
        s.remove(&key("public", "a"));
        assert!(s.namespaces.is_empty());
    }

    #[test]
    fn kept_alive_values_only() {
        let mut s = Session::new("demo", 0, 1000);
        s.set(&key("account", "id"), Value::kept("u"));
        s.set(&key("public", "a"), Value::new("1"));
        let kept = s.kept_alive();
        assert_eq!(kept.len(), 1);
        let mut fresh = Session::new("demo", 0, 1000);
        fresh.apply(&kept);
        assert_eq!(fresh.get("account", "id"), Some(&Value::kept("u")));
        assert!(fresh.get("public", "a").is_none());
    }

    #[test]
    fn any_json_round_trips() {
        let v: Value =
            serde_json::from_str(r#"{"value":{"b":[1,2.5,true,null],"a":"x"},"keepAlive":true}"#)
                .unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"value":{"b":[1,2.5,true,null],"a":"x"},"keepAlive":true}"#
        );
        let plain = serde_json::to_string(&Value::new("1")).unwrap();
        assert_eq!(plain, r#"{"value":"1"}"#);
    }
}
