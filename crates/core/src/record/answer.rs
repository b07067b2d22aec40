//! Session answers, `{"id","namespaces","version","active","debug"}`: the one writer of their
//! JSON ([`write_answer`], which [`Session::answer`], defined here, and the stored record's
//! answers all use),
//! and what is made of a stored answer without decoding the session: an answer cut to an
//! `items` filter ([`Record::answer_for`]) and a namespace edited in place ([`Record::edit`]).

use super::json::{members, namespace_at, Cursor};
use super::{Record, EXPIRES};
use crate::items::{Items, SECRET_NAMESPACE};
use crate::session::{Namespace, Session};

/// Writes a session answer, `{"id":…,"namespaces":…,"version":…,"active":…,"debug":…}`: the one
/// place its shape is written. `id`, `version`, `active` and `debug` are given as JSON text;
/// `namespaces` writes the object of namespaces (and may give up: `None`).
pub(crate) fn write_answer(
    out: &mut Vec<u8>,
    id: &[u8],
    namespaces: impl FnOnce(&mut Vec<u8>) -> Option<()>,
    [version, active, debug]: [&[u8]; 3],
) -> Option<()> {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id);
    out.extend_from_slice(b",\"namespaces\":");
    namespaces(out)?;
    for (name, value) in [
        (&b",\"version\":"[..], version),
        (b",\"active\":", active),
        (b",\"debug\":", debug),
    ] {
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out.push(b'}');
    Some(())
}

/// `true` or `false`, as JSON text.
pub(crate) fn json_bool(value: bool) -> &'static [u8] {
    if value {
        b"true"
    } else {
        b"false"
    }
}

/// The session id as a JSON string.
pub(crate) fn json_id(id: &crate::SessionId) -> [u8; 38] {
    let mut out = [b'"'; 38];
    id.hyphenated(&mut out[1..37]);
    out
}

impl Session {
    /// The public API's answer for this session under the `items` filter:
    /// `{"id","namespaces","version","active","debug"}`, secret values redacted.
    pub fn answer(&self, items: &Items) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let namespaces = |out: &mut Vec<u8>| {
            serde_json::to_writer(out, &items.view(&self.namespaces)).expect("values serialize");
            Some(())
        };
        let mut number = itoa::Buffer::new();
        let fields = [
            number.format(self.version).as_bytes(),
            json_bool(self.active),
            json_bool(self.debug),
        ];
        write_answer(&mut out, &json_id(&self.id), namespaces, fields);
        out
    }
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
        let mut number = itoa::Buffer::new();
        let version = number.format(version).as_bytes();
        write_answer(
            &mut out,
            self.id,
            |out| {
                out.push(b'{');
                for (i, (name, values)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    quoted(out, name);
                    out.push(b':');
                    out.extend_from_slice(values);
                }
                out.push(b'}');
                Some(())
            },
            [version, active, self.debug],
        );
        out
    }
}

/// Writes `"raw"` (a key without escapes is written as it is).
fn quoted(out: &mut Vec<u8>, raw: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(raw);
    out.push(b'"');
}

impl Record {
    /// The session's answer to `items`, cut out of the `?items=*` answer without decoding any
    /// value (byte for byte what [`Session::answer`] gives). `None` when the stored answer has
    /// a key this cannot take as it is (one written with escapes) or is not as this encoder
    /// writes it: then decode the session.
    pub fn answer_for(&self, items: &Items) -> Option<Vec<u8>> {
        let parts = Parts::of(&self.bytes[self.answer.clone()])?;
        let mut out = Vec::with_capacity(self.answer.len());
        let fields = [parts.version, parts.active, parts.debug];
        write_answer(&mut out, parts.id, |out| cut(out, &parts, items), fields)?;
        Some(out)
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
}

/// Writes the namespaces `items` selects of a stored answer's `parts`, as an object.
fn cut(out: &mut Vec<u8>, parts: &Parts<'_>, items: &Items) -> Option<()> {
    out.push(b'{');
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
            quoted(out, ns);
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
                    quoted(out, key);
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
    out.push(b'}');
    Some(())
}
