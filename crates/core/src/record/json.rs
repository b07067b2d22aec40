//! The JSON walker of stored answers: reads JSON as serde_json writes it (no white space)
//! from the front, in one pass, without building values it does not need: the raw members of
//! an object, the end of a value, and a stored namespace read straight into values. Whatever
//! it cannot take as it is (a key with escapes, a layout serde_json would not write) it gives
//! up on (`None`), and the caller falls back to serde.

use std::sync::Arc;

use crate::session::{Namespace, Namespaces, Value};

/// Calls `f` with the raw key (between its quotes) and the raw value of every member of the
/// JSON object `obj`, as serde_json writes objects (no white space). `None` when `obj` is not
/// such an object or a key holds an escape (its raw form is not its text), or when `f` says so.
pub(super) fn members<'a>(
    obj: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> Option<()>,
) -> Option<()> {
    let mut c = Cursor { bytes: obj, at: 0 };
    c.object(|c, key| f(key, c.value()?))?;
    (c.at == obj.len()).then_some(())
}

/// The end (one past the closing quote) of the JSON string starting at `at`.
pub(super) fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
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
pub(super) fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
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
pub(super) fn namespaces_as_stored(answer: &[u8]) -> Option<Namespaces> {
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

/// JSON as serde_json writes it (no white space), read from the front.
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn eat(&mut self, byte: u8) -> bool {
        let next = self.bytes.get(self.at) == Some(&byte);
        self.at += usize::from(next);
        next
    }

    /// A key without escapes and the colon after it.
    pub(super) fn key(&mut self) -> Option<&'a [u8]> {
        let end = string_end(self.bytes, self.at)?;
        let key = &self.bytes[self.at + 1..end - 1];
        if key.contains(&b'\\') || self.bytes.get(end) != Some(&b':') {
            return None;
        }
        self.at = end + 1;
        Some(key)
    }

    /// The raw value at the cursor.
    pub(super) fn value(&mut self) -> Option<&'a [u8]> {
        let end = value_end(self.bytes, self.at)?;
        let value = &self.bytes[self.at..end];
        self.at = end;
        Some(value)
    }

    /// The object at the cursor: `member` is called with each key and reads its value.
    pub(super) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
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
pub(super) fn namespace_at(c: &mut Cursor<'_>) -> Option<Namespace> {
    let mut namespace = Namespace::new();
    c.object(|c, key| {
        namespace.insert(text(key)?, envelope(c)?);
        Some(())
    })?;
    Some(namespace)
}

/// A stored `{"value":…}` or `{"value":…,"keepAlive":true}` envelope at the cursor.
pub(super) fn envelope(c: &mut Cursor<'_>) -> Option<Value> {
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
pub(super) fn text(raw: &[u8]) -> Option<String> {
    std::str::from_utf8(raw).ok().map(str::to_owned)
}

/// A raw JSON value: a string without escapes or control characters is taken as it is, anything
/// else parsed.
pub(super) fn json_as_stored(raw: &[u8]) -> Option<serde_json::Value> {
    if let [b'"', inner @ .., b'"'] = raw {
        if !inner.iter().any(|&b| b == b'\\' || b < 0x20) {
            return text(inner).map(serde_json::Value::String);
        }
    }
    serde_json::from_slice(raw).ok()
}
