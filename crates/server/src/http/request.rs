//! What a request asks for: its cookies, its query string and its JSON body, checked against
//! the limits and turned into session [`Changes`].

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use indexmap::IndexMap;
use serde::Deserialize;
use sessiond_core::{Changes, Key, Value};

use super::error::ApiError;
use crate::config::Limits;
use crate::prehashed::{text_cache, TextCache};
use crate::snapshot::{Filter, MAX_KEPT_FILTER};

/// Name of the session-token cookie.
pub const SESSION_COOKIE: &str = "vtex_session";
/// Name of the segment-token cookie.
pub const SEGMENT_COOKIE: &str = "vtex_segment";

/// The cookies a request sent, in order.
#[derive(Debug, Default)]
pub struct RequestCookies {
    pairs: Vec<(String, String)>,
}

impl RequestCookies {
    /// Parses every `Cookie` header: `name=value` pairs split on `;` (RFC 6265, section 4.2.1);
    /// pairs without a name or an `=` are passed over, and a value in double quotes is taken
    /// without them. (The `cookie` crate's parser reads each pair as a whole `Set-Cookie`
    /// line, attributes and all: 1,460 more instructions per request, see ARCHITECTURE.md.)
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut pairs = Vec::new();
        for value in headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for part in text.split(';') {
                let Some((name, value)) = part.split_once('=') else {
                    continue;
                };
                let name = name.trim();
                if name.is_empty() {
                    continue;
                }
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                pairs.push((name.to_owned(), value.to_owned()));
            }
        }
        RequestCookies { pairs }
    }

    /// Every non-empty value of cookie `name`, in the order sent.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request sent no cookie but `vtex_session` (or none at all): a server-side
    /// call on the visitor's behalf, which must not be taken as the visitor deleting their
    /// identity cookies.
    pub fn only_session_token(&self) -> bool {
        self.pairs.iter().all(|(n, _)| n == SESSION_COOKIE)
    }

    /// Every cookie, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// The query string, split into what the manager reads and what goes into `public`.
#[derive(Debug, Default)]
pub struct Query {
    /// `items`, when present (several `items` parameters are joined by commas).
    pub items: Option<String>,
    /// `an`: the account, for server-side callers on a shared host.
    pub an: Option<String>,
    /// Every other parameter, in order.
    pub rest: Vec<(String, String)>,
}

impl Query {
    /// Parses and percent-decodes a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "items" => match &mut q.items {
                    Some(items) => {
                        items.push(',');
                        items.push_str(&v);
                    }
                    None => q.items = Some(v.into_owned()),
                },
                "an" => q.an = Some(v.into_owned()),
                "" => {}
                _ => q.rest.push((k.into_owned(), v.into_owned())),
            }
        }
        q
    }
}

/// Most `items` filters kept parsed (see [`Filters`]).
const MAX_SHARED_FILTERS: usize = 1024;

/// The `items` filters asked for lately, each parsed once and shared: storefronts ask the same
/// few of every session, and a snapshot that keeps an answer keeps its filter.
pub struct Filters {
    /// `*`, the filter of most requests, without a lookup.
    all: Arc<Filter>,
    cache: TextCache<Box<str>, Arc<Filter>>,
}

impl Default for Filters {
    fn default() -> Self {
        Filters {
            all: Arc::new(Filter::new("*")),
            cache: text_cache(MAX_SHARED_FILTERS),
        }
    }
}

impl Filters {
    /// The parsed filter `raw`: shared, unless it is too long to be kept with a snapshot.
    pub fn get(&self, raw: &str) -> Arc<Filter> {
        if raw == "*" {
            return self.all.clone();
        }
        if raw.len() > MAX_KEPT_FILTER {
            return Arc::new(Filter::new(raw));
        }
        if let Some(filter) = self.cache.get(raw) {
            return filter;
        }
        let filter = Arc::new(Filter::new(raw));
        self.cache.insert(raw.into(), filter.clone());
        filter
    }
}

fn check_key(key: &str, limits: &Limits) -> Result<(), ApiError> {
    if key.len() > limits.max_key_bytes {
        return Err(ApiError::bad_request(format!(
            "key `{}…` is longer than the limit of {} bytes (max_key_bytes)",
            key.chars().take(32).collect::<String>(),
            limits.max_key_bytes
        )));
    }
    if key.is_empty() {
        return Err(ApiError::bad_request("a key in `public` is empty"));
    }
    Ok(())
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_value(key: &str, v: &serde_json::Value, limits: &Limits) -> Result<(), ApiError> {
    if depth(v) > limits.max_json_depth {
        return Err(ApiError::bad_request(format!(
            "the value of `{key}` is nested deeper than the limit of {} levels (max_json_depth)",
            limits.max_json_depth
        )));
    }
    let size = match v {
        serde_json::Value::String(s) => s.len(),
        other => serde_json::to_vec(other)
            .map(|b| b.len())
            .unwrap_or(usize::MAX),
    };
    if size > limits.max_value_bytes {
        return Err(ApiError::bad_request(format!(
            "the value of `{key}` is {size} bytes, over the limit of {} bytes (max_value_bytes)",
            limits.max_value_bytes
        )));
    }
    Ok(())
}

/// The `public` writes of a query string (every parameter but `items` and `an`).
fn query_changes(query: &Query, limits: &Limits) -> Result<Changes, ApiError> {
    let mut changes = Changes::new();
    for (k, v) in &query.rest {
        check_key(k, limits)?;
        let value = serde_json::Value::String(v.clone());
        check_value(k, &value, limits)?;
        changes.set(Key::new("public", k.as_str()), Value::new(value));
    }
    Ok(changes)
}

/// The `public` writes of a POST/PATCH: the query string's, then the body's (the body wins a
/// key both set), and the names of the other namespaces the body had (ignored, for the trace).
/// The one check of `max_public_keys` on a request: the keys it writes.
pub fn public_writes(
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    limits: &Limits,
) -> Result<(Changes, Vec<String>), ApiError> {
    let mut public = query_changes(query, limits)?;
    let (from_body, ignored) = body_changes(headers, body, limits)?;
    public.extend(from_body);
    let distinct: std::collections::BTreeSet<_> = public.iter().map(|(k, _)| k).collect();
    if distinct.len() > limits.max_public_keys {
        return Err(ApiError::bad_request(format!(
            "the request writes {} keys into `public`, over the limit of {} (max_public_keys)",
            distinct.len(),
            limits.max_public_keys
        )));
    }
    Ok((public, ignored))
}

/// Whether a `Content-Type` may carry a JSON body: `application/json`, `…+json`, or
/// `text/plain` (what `fetch` sends for a string body), with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/plain"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The `public` writes of a POST/PATCH body. An empty body is no writes; other namespaces
/// are ignored (their names are returned for the trace).
fn body_changes(
    headers: &HeaderMap,
    body: &[u8],
    limits: &Limits,
) -> Result<(Changes, Vec<String>), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Changes::new(), Vec::new()));
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !is_json(ct) {
            return Err(ApiError::unsupported_media_type(format!(
                "the body must be JSON (Content-Type: application/json), not `{ct}`"
            )));
        }
    }
    match serde_json::from_slice::<Object<PlainBody>>(body) {
        Ok(Object(plain)) => plain_changes(plain, limits).map(|changes| (changes, Vec::new())),
        Err(_) => tree_changes(body, limits),
    }
}

/// The usual body, `{"public": {"key": {"value": …, "keepAlive": …}, …}}` and nothing more, read
/// straight into its entries instead of a tree of JSON objects. Any other body (another
/// namespace, another field, a field twice, an array or other value where an object belongs,
/// a wrong type, bad JSON) fails this and is read by [`tree_changes`], which gives the same
/// writes for this shape and its own error otherwise.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainBody {
    public: IndexMap<String, Object<PlainEntry>>,
}

/// An entry of [`PlainBody`]: `keepAlive` absent or null is false.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainEntry {
    value: serde_json::Value,
    #[serde(default, rename = "keepAlive")]
    keep_alive: Option<bool>,
}

/// A `T` read from a JSON object only: a derived `Deserialize` takes an array for a struct too.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Object<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// The writes of a [`PlainBody`], checked in the order [`tree_changes`] checks them.
fn plain_changes(plain: PlainBody, limits: &Limits) -> Result<Changes, ApiError> {
    let mut changes = Changes::new();
    for (key, Object(entry)) in plain.public {
        check_key(&key, limits)?;
        write(
            &mut changes,
            key,
            entry.value,
            entry.keep_alive.unwrap_or(false),
            limits,
        )?;
    }
    Ok(changes)
}

/// Writes `value` into `public.key` (null removes it) once its size and depth are checked.
fn write(
    changes: &mut Changes,
    key: String,
    value: serde_json::Value,
    keep_alive: bool,
    limits: &Limits,
) -> Result<(), ApiError> {
    let key = Key::new("public", key);
    if value.is_null() {
        changes.remove(key);
    } else {
        check_value(&key.name, &value, limits)?;
        changes.set(key, Value { value, keep_alive });
    }
    Ok(())
}

/// The `public` writes of any JSON body, read as a whole tree first, and the names of its other
/// namespaces; the error that says what is wrong with a body of another shape.
fn tree_changes(body: &[u8], limits: &Limits) -> Result<(Changes, Vec<String>), ApiError> {
    let parsed: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let serde_json::Value::Object(mut root) = parsed else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object like {\"public\": {\"key\": {\"value\": \"…\"}}}",
        ));
    };
    let ignored: Vec<String> = root.keys().filter(|k| *k != "public").cloned().collect();
    let mut changes = Changes::new();
    let Some(public) = root.remove("public") else {
        return Ok((changes, ignored));
    };
    let serde_json::Value::Object(public) = public else {
        return Err(ApiError::bad_request(
            "`public` must be an object of {\"key\": {\"value\": …}} entries",
        ));
    };
    for (key, entry) in public {
        check_key(&key, limits)?;
        let serde_json::Value::Object(mut entry) = entry else {
            return Err(ApiError::bad_request(format!(
                "`public.{key}` must be an object like {{\"value\": …}}"
            )));
        };
        let Some(value) = entry.remove("value") else {
            return Err(ApiError::bad_request(format!(
                "`public.{key}` has no `value` field"
            )));
        };
        let keep_alive = match entry.get("keepAlive") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "`public.{key}.keepAlive` must be true or false"
                )))
            }
        };
        write(&mut changes, key, value, keep_alive, limits)?;
    }
    Ok((changes, ignored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn filters_are_parsed_once_and_shared_and_the_memory_is_bounded() {
        let filters = Filters::default();
        let a = filters.get("public.k,store.x");
        assert!(Arc::ptr_eq(&a, &filters.get("public.k,store.x")));
        let long = "public.k,".repeat(40);
        assert!(!Arc::ptr_eq(&filters.get(&long), &filters.get(&long)));
        for i in 0..MAX_SHARED_FILTERS + 10 {
            filters.get(&format!("public.k{i}"));
        }
        assert!(filters.cache.len() <= MAX_SHARED_FILTERS);
        assert!(Arc::ptr_eq(&filters.get("*"), &filters.get("*")));
    }

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h
    }

    #[test]
    fn body_rules() {
        let l = Limits::default();
        let h = json_headers();
        let (c, ignored) = body_changes(
            &h,
            br#"{"public":{"a":{"value":"1"},"b":{"value":null},"c":{"value":{"x":[1]},"keepAlive":true}},"profile":{"email":{"value":"x"}}}"#,
            &l,
        )
        .unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(ignored, vec!["profile".to_string()]);
        assert!(body_changes(&h, b"", &l).unwrap().0.is_empty());
        assert!(body_changes(&h, b"{}", &l).unwrap().0.is_empty());
        for bad in [
            &b"[]"[..],
            b"{",
            br#"{"public":[]}"#,
            br#"{"public":{"a":"1"}}"#,
            br#"{"public":{"a":{}}}"#,
        ] {
            let e = body_changes(&h, bad, &l).unwrap_err();
            assert_eq!(e.kind, "BadRequest", "{}", String::from_utf8_lossy(bad));
        }
        let e = body_changes(&h, br#"{"public":{"zz":{"v":1}}}"#, &l).unwrap_err();
        assert!(e.message.contains("public.zz"), "{}", e.message);
    }

    /// Every body, usual or not, gets from `body_changes` (which reads the usual one directly)
    /// exactly what reading it as a tree gives: the same writes, or the same error.
    #[test]
    fn the_usual_body_read_directly_writes_what_its_tree_writes() {
        let l = Limits::default();
        let h = json_headers();
        let deep = format!("{}1{}", "[".repeat(20), "]".repeat(20));
        let big = format!("\"{}\"", "x".repeat(17 * 1024));
        let values = [
            r#""1""#,
            "null",
            "1.50000000000000000000000001",
            r#"{"x":[1,{"y":null}]}"#,
            deep.as_str(),
            big.as_str(),
        ];
        let mut entries: Vec<String> = Vec::new();
        for v in values {
            entries.push(format!(r#"{{"value":{v}}}"#));
            entries.push(format!(r#"{{"keepAlive":true,"value":{v}}}"#));
        }
        for e in [
            r#"{"value":"1","keepAlive":null}"#,
            r#"{"value":"1","keepAlive":1}"#,
            r#"{"value":"1","keepAlive":"yes"}"#,
            r#"{"keepAlive":true}"#,
            "{}",
            r#"{"value":"1","other":2}"#,
            r#"{"value":"1","value":"2"}"#,
            r#"{"value":"1","keepAlive":true,"keepAlive":false}"#,
            r#"{"va\u006cue":"1"}"#,
            r#"["1",true]"#,
            r#"{"$serde_json::private::Number":"5"}"#,
            r#""1""#,
            "null",
        ] {
            entries.push(e.to_owned());
        }
        let long = "k".repeat(257);
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let mut usual = 0;
        for (i, e) in entries.iter().enumerate() {
            let other = &entries[(i + 1) % entries.len()];
            for public in [
                "{}".to_owned(),
                format!(r#"{{"a":{e}}}"#),
                format!(r#"{{"a":{e},"b":{other}}}"#),
                format!(r#"{{"a":{e},"a":{other}}}"#),
                format!(r#"{{"{long}":{e}}}"#),
                format!("[{e}]"),
            ] {
                for body in [
                    format!(r#"{{"public":{public}}}"#),
                    format!(" {{ \"public\" : {public} }}\n"),
                    format!(r#"{{"public":{public},"profile":{{}}}}"#),
                    format!(r#"{{"profile":{{"e":1}},"public":{public}}}"#),
                    format!(r#"{{"public":{public},"public":{{"z":{other}}}}}"#),
                    format!(r#"{{"pub\u006cic":{public}}}"#),
                    format!(r#"{{"public":{public}}} x"#),
                    format!(r#"{{"public":{public}"#),
                    format!("[{public}]"),
                ] {
                    usual += usize::from(serde_json::from_str::<Object<PlainBody>>(&body).is_ok());
                    bodies.push(body.into_bytes());
                }
            }
        }
        for body in [
            &b"{}"[..],
            b"{\"public\":null}",
            b"{\"public\":{\"a\":{\"value\":\"\xff\"}}}",
            b"{\"public\":{\"\xff\":{\"value\":\"1\"}}}",
            b"{\"public\":{\"a\":{\"value\":\"1\"}},\"p\xff\":1}",
            b"{\"public\":{\"a\":{\"value\":\"1\",\"x\":\"\xff\"}}}",
        ] {
            bodies.push(body.to_vec());
        }
        for body in &bodies {
            assert_eq!(
                body_changes(&h, body, &l),
                tree_changes(body, &l),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // The usual shapes are read directly, `keepAlive` included; both ways were taken, many
        // times each.
        for body in [
            r#"{"public":{"a":{"value":"1"}}}"#,
            r#"{"public":{"a":{"value":"1","keepAlive":true},"b":{"keepAlive":null,"value":2}}}"#,
        ] {
            assert!(
                serde_json::from_str::<Object<PlainBody>>(body).is_ok(),
                "{body}"
            );
        }
        assert!(
            usual > 100 && bodies.len() - usual > 100,
            "{usual} of {}",
            bodies.len()
        );
    }

    #[test]
    fn limits_name_themselves() {
        let l = Limits::default();
        let h = json_headers();
        let deep = format!("{}1{}", "[".repeat(17), "]".repeat(17));
        let body = format!(r#"{{"public":{{"d":{{"value":{deep}}}}}}}"#);
        assert!(body_changes(&h, body.as_bytes(), &l)
            .unwrap_err()
            .message
            .contains("max_json_depth"));
        let big = "x".repeat(17 * 1024);
        let body = format!(r#"{{"public":{{"d":{{"value":"{big}"}}}}}}"#);
        assert!(body_changes(&h, body.as_bytes(), &l)
            .unwrap_err()
            .message
            .contains("max_value_bytes"));
        let long = "k".repeat(257);
        let body = format!(r#"{{"public":{{"{long}":{{"value":"1"}}}}}}"#);
        assert!(body_changes(&h, body.as_bytes(), &l)
            .unwrap_err()
            .message
            .contains("max_key_bytes"));
        let many: Vec<String> = (0..257)
            .map(|i| format!(r#""k{i}":{{"value":"1"}}"#))
            .collect();
        let body = format!(r#"{{"public":{{{}}}}}"#, many.join(","));
        let query = Query::parse(None);
        assert!(public_writes(&query, &h, body.as_bytes(), &l)
            .unwrap_err()
            .message
            .contains("max_public_keys"));
        // The query's keys count too, once each with the body's.
        let query = Query::parse(Some("a=1&k0=2"));
        let body = format!(r#"{{"public":{{{}}}}}"#, many[..255].join(","));
        assert!(public_writes(&query, &h, body.as_bytes(), &l).is_ok());
        let query = Query::parse(Some("a=1&b=2"));
        assert!(public_writes(&query, &h, body.as_bytes(), &l).is_err());
    }

    #[test]
    fn content_type_must_be_json() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let e = body_changes(&h, b"{}", &Limits::default()).unwrap_err();
        assert_eq!(e.kind, "UnsupportedMediaType");
        // No content type at all, or text/plain, is read as JSON.
        assert!(body_changes(&HeaderMap::new(), b"{}", &Limits::default()).is_ok());
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain;charset=UTF-8"),
        );
        assert!(body_changes(&h, b"{}", &Limits::default()).is_ok());
    }

    #[test]
    fn query_is_decoded_and_split() {
        let q = Query::parse(Some(
            "items=%2A&items=public.a&an=demo&sc=2&utm_campaign=black+friday&x=%C3%A9",
        ));
        assert_eq!(q.items.as_deref(), Some("*,public.a"));
        assert_eq!(q.an.as_deref(), Some("demo"));
        assert_eq!(
            q.rest,
            vec![
                ("sc".to_string(), "2".to_string()),
                ("utm_campaign".to_string(), "black friday".to_string()),
                ("x".to_string(), "é".to_string())
            ]
        );
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("vtex_session=; a=1; b=\"2\"; vtex_session=tok"),
        );
        let c = RequestCookies::parse(&h);
        assert_eq!(c.get_all(SESSION_COOKIE).collect::<Vec<_>>(), vec!["tok"]);
        assert_eq!(c.get_all("b").next(), Some("2"));
        assert!(!c.only_session_token());
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("vtex_session=tok"));
        assert!(RequestCookies::parse(&h).only_session_token());
        assert!(RequestCookies::parse(&HeaderMap::new()).only_session_token());
    }
}
