//! Properties of the stored form of sessions that must hold for any session, not only for the
//! examples of the unit tests: a record decodes to the session it was encoded from, answers cut
//! out of a record are the answers rendered from the session, an in-place edit of `public`
//! gives the record of the edited session, an `items` filter selects exactly the keys it
//! names, a segment token decodes to the segment's JSON and depends only on the segment, and
//! a batch of writes leaves a session as writing them one by one would.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value as Json};
use sessiond_core::items::{REDACTED, SECRET_NAMESPACE};
use sessiond_core::record::header;
use sessiond_core::segment::{self, Segment};
use sessiond_core::{Changes, Items, Key, Namespace, Record, Session, SessionId, Value};

/// Names as sites write them: letters, digits and `_-.`.
const PLAIN: &str = "[A-Za-z0-9_.-]{1,12}";

/// Names JSON must escape (quotes, backslashes, control characters), mixed with non-ASCII.
const ESCAPED: &str = r#"[a-z"\\\x00-\x1f\x7fé☃😀\u{2028} .]{1,6}"#;

/// Key names the manager and its apps use, among them all the segment's inputs.
const WELL_KNOWN_KEYS: [&str; 17] = [
    "utm_source",
    "utm_campaign",
    "utmi_campaign",
    "channel",
    "currencyCode",
    "currencySymbol",
    "countryCode",
    "cultureInfo",
    "channelPrivacy",
    "campaigns",
    "priceTables",
    "regionId",
    "facets",
    "email",
    "id",
    "orderFormId",
    "VtexIdclientAutCookie_demo",
];

/// Namespaces the manager and its apps use; `cookie` is the secret one.
const WELL_KNOWN_NAMESPACES: [&str; 8] = [
    "public", "cookie", "account", "profile", "store", "rnb", "checkout", "search",
];

/// The session keys of the segment's multi-valued inputs.
const SEGMENT_LISTS: [(&str, &str); 2] = [("rnb", "campaigns"), ("profile", "priceTables")];
/// The session keys of the segment's single-valued inputs.
const SEGMENT_TEXTS: [(&str, &str); 11] = [
    ("store", "channel"),
    ("checkout", "regionId"),
    ("public", "utm_campaign"),
    ("public", "utm_source"),
    ("public", "utmi_campaign"),
    ("store", "currencyCode"),
    ("store", "currencySymbol"),
    ("store", "countryCode"),
    ("store", "cultureInfo"),
    ("store", "channelPrivacy"),
    ("search", "facets"),
];

fn key_name() -> BoxedStrategy<String> {
    prop_oneof![
        12 => PLAIN,
        6 => prop::sample::select(WELL_KNOWN_KEYS.to_vec()).prop_map(str::to_owned),
        1 => ESCAPED,
    ]
    .boxed()
}

fn namespace_name() -> BoxedStrategy<String> {
    prop_oneof![
        24 => prop::sample::select(WELL_KNOWN_NAMESPACES.to_vec()).prop_map(str::to_owned),
        8 => "[a-z][A-Za-z0-9_-]{0,10}",
        2 => "[a-zé☃😀]{1,6}",
        1 => ESCAPED,
    ]
    .boxed()
}

/// Strings: empty, plain, escaped, non-ASCII, and long ones with an escape far from the start.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just(String::new()),
        4 => "[A-Za-z0-9 _.,:/-]{1,24}",
        2 => r#"[a-z"\\\x00-\x1f\x7fé☃😀\u{2028} {}\[\],:]{1,12}"#,
        1 => r#"[a-z ]{20,40}["\\\n][a-z]{0,10}"#,
        1 => any::<String>(),
    ]
    .boxed()
}

fn parsed_number(text: String) -> Json {
    serde_json::from_str(&text).expect("the pattern gives JSON numbers")
}

/// Integers, floats, and numbers beyond the precision of `i64`, `u64` and `f64`.
fn number() -> BoxedStrategy<Json> {
    use prop::num::f64 as float;
    prop_oneof![
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        (float::POSITIVE | float::NEGATIVE | float::NORMAL | float::SUBNORMAL | float::ZERO)
            .prop_map(Json::from),
        "-?[1-9][0-9]{19,40}".prop_map(parsed_number),
        r"-?(0|[1-9][0-9]{0,5})\.[0-9]{17,30}([eE][+-]?[0-9]{1,3})?".prop_map(parsed_number),
        "-?[1-9][eE][+-]?[0-9]{3,4}".prop_map(parsed_number),
    ]
    .boxed()
}

/// Any JSON but `null`, nested up to three levels.
fn json() -> BoxedStrategy<Json> {
    let leaf = prop_oneof![
        3 => text().prop_map(Json::String),
        2 => number(),
        1 => any::<bool>().prop_map(Json::Bool),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let member = prop_oneof![
            3 => text(),
            1 => prop::sample::select(vec!["value", "keepAlive"]).prop_map(str::to_owned),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec((member, inner), 0..4)
                .prop_map(|members| Json::Object(members.into_iter().collect())),
        ]
    })
    .boxed()
}

fn value() -> BoxedStrategy<Value> {
    (json(), prop::bool::weighted(0.25))
        .prop_map(|(value, keep_alive)| Value { value, keep_alive })
        .boxed()
}

fn millis() -> BoxedStrategy<u64> {
    prop_oneof![4 => 1_600_000_000_000u64..1_900_000_000_000, 1 => any::<u64>()].boxed()
}

prop_compose! {
    fn session()(
        account in "[a-z][a-z0-9-]{0,15}",
        id in any::<[u8; 16]>(),
        public in prop::collection::vec((key_name(), value()), 0..5),
        secrets in prop::collection::vec((key_name(), value()), 0..3),
        others in prop::collection::vec(
            (namespace_name(), prop::collection::vec((key_name(), value()), 1..5)),
            0..5,
        ),
        version in prop_oneof![4 => 1u64..10_000, 1 => any::<u64>()],
        (created_at, updated_at, expires_at) in (millis(), millis(), millis()),
        active in any::<bool>(),
        debug in any::<bool>(),
        replaced_by in prop::option::weighted(0.2, any::<[u8; 16]>()),
    ) -> Session {
        let mut s = Session::new(account, created_at, 0);
        s.id = SessionId::from_bytes(id);
        let values = [("public".to_owned(), public), (SECRET_NAMESPACE.to_owned(), secrets)];
        for (namespace, entries) in values.into_iter().chain(others) {
            for (name, value) in entries {
                s.set(&Key::new(namespace.as_str(), name), value);
            }
        }
        s.version = version;
        s.updated_at = updated_at;
        s.expires_at = expires_at;
        s.active = active;
        s.debug = debug;
        s.replaced_by = replaced_by.map(SessionId::from_bytes);
        s
    }
}

fn needs_escape(text: &str) -> bool {
    text.chars().any(|c| c == '"' || c == '\\' || c < '\u{20}')
}

/// Whether any namespace or key of `s` is written with escapes.
fn has_escaped_names(s: &Session) -> bool {
    s.namespaces
        .iter()
        .any(|(ns, values)| needs_escape(ns) || values.iter().any(|(name, _)| needs_escape(name)))
}

/// Every `(namespace, key)` of `s`, in the session's order.
fn keys_of(s: &Session) -> Vec<(String, String)> {
    s.namespaces
        .iter()
        .flat_map(|(ns, values)| {
            values
                .iter()
                .map(move |(name, _)| (ns.clone(), name.clone()))
        })
        .collect()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One entry of a generated `items` filter.
#[derive(Clone, Debug)]
enum Entry {
    /// A key the session has.
    Known(Index),
    /// A namespace the session has, whole.
    WholeKnown(Index),
    /// A key the session does not have, in a namespace it has.
    MissingKey(Index, String),
    Unknown(String, String),
    WholeUnknown(String),
    All,
    Empty,
    /// Text that names nothing, or names something by accident.
    Junk(String),
}

fn entry() -> BoxedStrategy<Entry> {
    prop_oneof![
        6 => any::<Index>().prop_map(Entry::Known),
        2 => any::<Index>().prop_map(Entry::WholeKnown),
        1 => (any::<Index>(), key_name()).prop_map(|(i, k)| Entry::MissingKey(i, k)),
        1 => (namespace_name(), key_name()).prop_map(|(n, k)| Entry::Unknown(n, k)),
        1 => namespace_name().prop_map(Entry::WholeUnknown),
        1 => Just(Entry::All),
        1 => Just(Entry::Empty),
        1 => "[a-z.* ]{0,6}".prop_map(Entry::Junk),
    ]
    .boxed()
}

/// The text of `entry` for session `s`, padded with `pad`.
fn entry_text(s: &Session, entry: &Entry, (before, after): &(String, String)) -> String {
    let keys = keys_of(s);
    let namespaces: Vec<&String> = s.namespaces.iter().map(|(ns, _)| ns).collect();
    let text = match entry {
        Entry::Known(i) if !keys.is_empty() => {
            let (ns, name) = i.get(&keys);
            format!("{ns}.{name}")
        }
        Entry::WholeKnown(i) if !namespaces.is_empty() => format!("{}.*", i.get(&namespaces)),
        Entry::MissingKey(i, name) if !namespaces.is_empty() => {
            format!("{}.{name}-missing", i.get(&namespaces))
        }
        Entry::Known(_) | Entry::WholeKnown(_) | Entry::MissingKey(..) => "public.absent".into(),
        Entry::Unknown(ns, name) => format!("{ns}-unknown.{name}"),
        Entry::WholeUnknown(ns) => format!("{ns}-unknown.*"),
        Entry::All => "*".into(),
        Entry::Empty => String::new(),
        Entry::Junk(junk) => junk.clone(),
    };
    format!("{before}{text}{after}")
}

fn padding() -> BoxedStrategy<(String, String)> {
    ("[ \t]{0,2}", "[ \t]{0,2}").boxed()
}

/// Where a write to `public` goes.
#[derive(Clone, Debug)]
enum Target {
    /// A key `public` has.
    Existing(Index),
    Fresh(String),
}

/// What a write to `public` does.
#[derive(Clone, Debug)]
enum Op {
    /// Writes the value the key has already (removes it when it has none).
    Same,
    Set(Value),
    Delete,
}

fn public_write() -> BoxedStrategy<(Target, Op)> {
    let target = prop_oneof![
        3 => any::<Index>().prop_map(Target::Existing),
        2 => PLAIN.prop_map(Target::Fresh),
        1 => ESCAPED.prop_map(Target::Fresh),
    ];
    let op = prop_oneof![
        2 => Just(Op::Same),
        4 => value().prop_map(Op::Set),
        2 => Just(Op::Delete),
    ];
    (target, op).boxed()
}

/// Whether a write of `public.name` may take the in-place path: the server sends writes of
/// the segment's inputs through the full path, which derives a new segment token.
fn plain_public(name: &str) -> bool {
    !Segment::reads(&Key::new("public", name))
}

/// The changes `writes` make to the `public` namespace of `s`.
fn public_changes(s: &Session, writes: &[(Target, Op)]) -> Changes {
    let existing: Vec<&String> = s
        .namespaces
        .get("public")
        .map(|values| values.iter().map(|(name, _)| name).collect())
        .unwrap_or_default();
    let existing: Vec<&String> = existing
        .into_iter()
        .filter(|name| plain_public(name))
        .collect();
    let mut changes = Changes::new();
    for (target, op) in writes {
        let name = match target {
            Target::Existing(i) if !existing.is_empty() => i.get(&existing).to_string(),
            Target::Existing(_) => "fresh".to_owned(),
            Target::Fresh(name) if plain_public(name) => name.clone(),
            Target::Fresh(name) => format!("{name}-x"),
        };
        let key = Key::new("public", name.as_str());
        match op {
            Op::Same => match s.get("public", &name) {
                Some(value) => changes.set(key, value.clone()),
                None => changes.remove(key),
            },
            Op::Set(value) => changes.set(key, value.clone()),
            Op::Delete => changes.remove(key),
        }
    }
    changes
}

/// Whether `(ns, name)` can be named in an `items` filter: entries are split at commas and
/// trimmed, and the namespace ends at the first dot.
fn nameable(ns: &str, name: &str) -> bool {
    !ns.is_empty()
        && !name.is_empty()
        && name != "*"
        && !ns.contains(['.', ','])
        && !name.contains(',')
        && ns.trim() == ns
        && name.trim() == name
}

/// The `(namespace, key, shown value)` of an answer, in its order; `None` when a namespace of
/// the answer is empty.
fn answered(answer: &[u8]) -> Option<Vec<(String, String, Json)>> {
    let answer: Json = serde_json::from_slice(answer).ok()?;
    let mut out = Vec::new();
    for (ns, values) in answer["namespaces"].as_object()? {
        let values = values.as_object()?;
        if values.is_empty() {
            return None;
        }
        for (name, value) in values {
            out.push((ns.clone(), name.clone(), value.clone()));
        }
    }
    Some(out)
}

/// A value as an answer shows it in namespace `ns`.
fn shown(ns: &str, value: &Value) -> Json {
    let value = if ns == SECRET_NAMESPACE {
        Value {
            value: Json::String(REDACTED.to_owned()),
            keep_alive: value.keep_alive,
        }
    } else {
        value.clone()
    };
    serde_json::to_value(value).expect("values serialize")
}

/// How a list input of the segment is written in a session.
fn list_forms(items: &[String], spaces: &[String], order: &[Index]) -> (Json, Json) {
    let joined: Vec<String> = items
        .iter()
        .zip(spaces.iter().cycle())
        .map(|(item, space)| format!("{space}{item}{space}"))
        .collect();
    let mut shuffled: Vec<Json> = match items {
        [] => Vec::new(),
        _ => order
            .iter()
            .map(|i| Json::String(i.get(items).clone()))
            .collect(),
    };
    shuffled.extend(items.iter().rev().cloned().map(Json::String));
    (Json::String(joined.join(",")), Json::Array(shuffled))
}

/// Two ways of writing the same text input of the segment.
fn text_forms(value: &Json) -> (Json, Option<Json>) {
    let other = match value {
        Json::String(s) if s.is_empty() => None,
        Json::String(s) => Some(Json::String(s.clone())),
        other => Some(Json::String(other.to_string())),
    };
    (value.clone(), other)
}

/// A session without any of the segment's inputs.
fn without_segment(mut s: Session) -> Session {
    for (ns, name) in SEGMENT_LISTS.iter().chain(&SEGMENT_TEXTS) {
        s.remove(&Key::new(*ns, *name));
    }
    s
}

/// A list input of the segment: its items (trimmed, without commas), the spaces around them
/// in the comma-joined form, and the items the array form repeats.
type ListInput = (Vec<String>, Vec<String>, Vec<Index>);

fn segment_list() -> BoxedStrategy<Option<ListInput>> {
    prop::option::of((
        prop::collection::vec("[A-Za-z0-9_é-][A-Za-z0-9 _é-]{0,6}[A-Za-z0-9_é-]", 0..4),
        prop::collection::vec("[ ]{0,2}", 1..3),
        prop::collection::vec(any::<Index>(), 0..4),
    ))
    .boxed()
}

fn segment_text() -> BoxedStrategy<Option<Json>> {
    prop::option::of(prop_oneof![
        4 => text().prop_map(Json::String),
        1 => number(),
        1 => any::<bool>().prop_map(Json::Bool),
        1 => json(),
    ])
    .boxed()
}

/// A write of a batch: which key the session has (if it has any), else which of a few; the
/// value, or `None` to remove.
type BatchWrite = (Option<Index>, (String, String), Option<Value>);

/// A write of a batch: to a key among a few (so that batches write keys twice, and remove and
/// rewrite them), or to one the session has; a value among a few (so that writes repeat what is
/// there), or a removal.
fn batch_write() -> BoxedStrategy<BatchWrite> {
    let few_keys = (
        prop::sample::select(vec!["public", "store", "zz"]),
        prop::sample::select(vec!["a", "b", "k"]),
    )
        .prop_map(|(ns, name)| (ns.to_owned(), name.to_owned()));
    let few_values = prop_oneof![
        1 => Just(None),
        3 => (prop::sample::select(vec!["1", "2"]), any::<bool>())
            .prop_map(|(v, keep_alive)| Some(Value { value: Json::from(v), keep_alive })),
    ];
    (
        prop::option::weighted(0.3, any::<Index>()),
        few_keys,
        few_values,
    )
        .boxed()
}

/// Every value of `s` by key.
fn values_of(s: &Session) -> BTreeMap<(String, String), Value> {
    s.namespaces
        .iter()
        .flat_map(|(ns, keys)| {
            keys.iter()
                .map(move |(name, value)| ((ns.clone(), name.clone()), value.clone()))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A stored session must come back exactly as it was saved, whatever its keys and values:
    /// anything else loses or alters visitors' data.
    #[test]
    fn a_record_decodes_to_the_session_it_encodes(s in session()) {
        let record = Record::encode(&s, None);
        let parsed = Record::parse(record.stored())?;
        let decoded = parsed.decode()?;
        prop_assert_eq!(&decoded, &s);
        prop_assert_eq!(header(&parsed.stored()), Some((s.version, s.expires_at)));
        prop_assert_eq!(
            (parsed.id(), parsed.account(), parsed.version(), parsed.active()),
            (s.id, s.account.as_str(), s.version, s.active)
        );
        prop_assert_eq!(
            (parsed.updated_at(), parsed.expires_at(), parsed.replaced_by()),
            (s.updated_at, s.expires_at, s.replaced_by)
        );
        prop_assert_eq!(parsed.has_secrets(), s.namespaces.contains_key(SECRET_NAMESPACE));
        prop_assert_eq!(parsed.segment_token(), Segment::of(&s).encode());
        prop_assert_eq!(
            lossy(&Record::encode(&decoded, None).stored()),
            lossy(&record.stored())
        );
    }

    /// Reads answer from the stored bytes without decoding the session: the cut answer must be
    /// the rendered one byte for byte, or clients see answers that depend on the read path.
    #[test]
    fn a_cut_answer_is_the_rendered_answer(
        s in session(),
        entries in prop::collection::vec((entry(), padding()), 0..8),
    ) {
        let raw = entries
            .iter()
            .map(|(entry, pad)| entry_text(&s, entry, pad))
            .collect::<Vec<_>>()
            .join(",");
        let items = Items::parse(&raw);
        let record = Record::parse(Record::encode(&s, None).stored())?;
        let rendered = s.answer(&items);
        prop_assert!(serde_json::from_slice::<Json>(&rendered).is_ok());
        match record.answer_for(&items) {
            Some(cut) => prop_assert_eq!(lossy(&cut), lossy(&rendered), "items={:?}", raw),
            None => prop_assert!(
                has_escaped_names(&s),
                "no cut answer for items={:?} of a session without escaped names",
                raw
            ),
        }
        let all = s.answer(&Items::all());
        prop_assert_eq!(lossy(&record.answer()), lossy(&all));
        prop_assert_eq!(&s.answer(&Items::parse("*")), &all);
        if let Some(cut) = record.answer_for(&Items::all()) {
            prop_assert_eq!(lossy(&cut), lossy(&all));
        }
    }

    /// Plain writes of `public` skip decoding and rendering the session: the record they give
    /// must be the one the full path encodes, or the stored session depends on the path taken.
    #[test]
    fn an_in_place_edit_of_public_is_the_record_of_the_edited_session(
        s in session(),
        writes in prop::collection::vec(public_write(), 0..6),
        now in millis(),
        ttl in 0u64..100_000_000,
    ) {
        let record = Record::parse(Record::encode(&s, None).stored())?;
        let changes = public_changes(&s, &writes);
        let Some(mut editing) = record.edit("public") else {
            prop_assert!(
                has_escaped_names(&s),
                "no in-place edit of a session without escaped names"
            );
            return Ok(());
        };
        let empty = Namespace::new();
        prop_assert_eq!(
            &editing.values,
            s.namespaces.get("public").map_or(&empty, |values| &**values)
        );
        let before = editing.values.clone();
        for (key, value) in changes.iter() {
            match value {
                Some(value) => {
                    editing.values.insert(key.name.clone(), value.clone());
                }
                None => {
                    editing.values.remove(key.name.as_str());
                }
            }
        }
        let (version, expires_at) = (record.version().saturating_add(1), now.saturating_add(ttl));
        let got = editing.finish(version, now, expires_at);

        let mut edited = s.clone();
        let delta = edited.apply(&changes);
        edited.version = version;
        edited.updated_at = now;
        edited.expires_at = expires_at;
        prop_assert_eq!(editing.values == before, delta.is_empty());
        prop_assert_eq!(lossy(&got.stored()), lossy(&Record::encode(&edited, None).stored()));
        prop_assert_eq!(Record::parse(got.stored())?.decode()?, edited);
    }

    /// Clients ask for the keys they need: a filter listing keys must answer exactly those of
    /// them the session has, in the session's order, however the list is ordered or spaced.
    #[test]
    fn a_filter_answers_exactly_the_keys_it_lists(
        s in session(),
        picks in prop::collection::vec(any::<Index>(), 0..8),
        unknown in prop::collection::vec((namespace_name(), key_name()), 0..3),
        pad in padding(),
    ) {
        let nameable_keys: Vec<(String, String)> = keys_of(&s)
            .into_iter()
            .filter(|(ns, name)| nameable(ns, name))
            .collect();
        let mut listed: Vec<String> = Vec::new();
        let mut wanted = BTreeSet::new();
        if !nameable_keys.is_empty() {
            for pick in &picks {
                let (ns, name) = pick.get(&nameable_keys);
                listed.push(format!("{ns}.{name}"));
                wanted.insert((ns.clone(), name.clone()));
            }
        }
        for (ns, name) in &unknown {
            let ns = format!("{}-unknown", ns.replace(['.', ','], "_"));
            let name = name.trim().replace([',', '*'], "_");
            if !name.is_empty() {
                listed.push(format!("{ns}.{name}"));
            }
        }
        let items = Items::parse(&listed.join(","));
        let (before, after) = &pad;
        let noisy: Vec<String> = listed
            .iter()
            .rev()
            .flat_map(|entry| [format!("{before}{entry}{after}"), entry.clone(), String::new()])
            .collect();
        prop_assert_eq!(&Items::parse(&noisy.join(",")), &items);
        prop_assert_eq!(items.is_empty(), listed.is_empty());
        prop_assert!(!items.selects_all());

        let expected: Vec<(String, String, Json)> = s
            .namespaces
            .iter()
            .flat_map(|(ns, values)| {
                values
                    .iter()
                    .map(move |(name, value)| (ns.clone(), name.clone(), shown(ns, value)))
            })
            .filter(|(ns, name, _)| wanted.contains(&(ns.clone(), name.clone())))
            .collect();
        let answer = s.answer(&items);
        prop_assert_eq!(answered(&answer), Some(expected));
        let answer: Json = serde_json::from_slice(&answer).expect("answers are JSON");
        prop_assert_eq!(&answer["id"], &Json::String(s.id.to_string()));
        prop_assert_eq!(&answer["version"], &Json::from(s.version));
        prop_assert_eq!(&answer["active"], &Json::Bool(s.active));
        prop_assert_eq!(&answer["debug"], &Json::Bool(s.debug));
    }

    /// The segment token is a cache key of storefronts and CDNs: it must decode to the
    /// segment's JSON, and the same segment, however its inputs are written in the session,
    /// must give the same token (and a different segment a different one).
    #[test]
    fn a_segment_token_decodes_to_its_json_and_depends_only_on_the_segment(
        base in (session(), session()),
        other in session(),
        lists in prop::collection::vec(segment_list(), 2),
        texts in prop::collection::vec(segment_text(), 11),
    ) {
        for (ns, name) in SEGMENT_LISTS.iter().chain(&SEGMENT_TEXTS) {
            prop_assert!(Segment::reads(&Key::new(*ns, *name)));
        }
        let (mut a, mut b) = (without_segment(base.0), without_segment(base.1));
        for ((ns, name), list) in SEGMENT_LISTS.iter().zip(&lists) {
            let Some((items, spaces, order)) = list else { continue };
            let (joined, array) = list_forms(items, spaces, order);
            a.set(&Key::new(*ns, *name), Value::new(joined));
            b.set(&Key::new(*ns, *name), Value::kept(array));
        }
        for ((ns, name), text) in SEGMENT_TEXTS.iter().zip(&texts) {
            let Some(value) = text else { continue };
            let (one, other) = text_forms(value);
            a.set(&Key::new(*ns, *name), Value::new(one));
            if let Some(other) = other {
                b.set(&Key::new(*ns, *name), Value::new(other));
            }
        }
        for s in [&a, &b, &other] {
            let segment = Segment::of(s);
            let token = segment.encode();
            let json: Map<String, Json> =
                serde_json::from_slice(&segment.to_json()).expect("segments are JSON objects");
            let decoded = segment::decode(&token).expect("tokens decode");
            prop_assert_eq!(
                decoded.keys().collect::<Vec<_>>(),
                json.keys().collect::<Vec<_>>()
            );
            prop_assert_eq!(&decoded, &json);
            prop_assert_eq!(segment::encode_map(&decoded), token);
        }
        let (sa, sb, so) = (Segment::of(&a), Segment::of(&b), Segment::of(&other));
        prop_assert_eq!(&sa, &sb);
        prop_assert_eq!(sa.encode(), sb.encode());
        prop_assert_eq!(sa == so, sa.encode() == so.encode());
    }

    /// `apply` is the one way requests and apps change a session: a batch (a request's writes,
    /// a round's answers, with keys written twice or not, few or many) must leave the session
    /// as its writes made one after the other would, drop the namespaces it empties, and report
    /// exactly the keys whose value differs from before the batch.
    #[test]
    fn a_batch_of_writes_is_its_writes_one_by_one(
        s in session(),
        writes in prop::collection::vec(batch_write(), 0..40),
    ) {
        let before = values_of(&s);
        let existing: Vec<&(String, String)> = before.keys().collect();
        let mut changes = Changes::new();
        let mut model = before.clone();
        for (pick, key, value) in writes {
            let (ns, name) = match pick {
                Some(i) if !existing.is_empty() => existing[i.index(existing.len())].clone(),
                _ => key,
            };
            match value {
                Some(v) => {
                    model.insert((ns.clone(), name.clone()), v.clone());
                    changes.set(Key::new(ns, name), v);
                }
                None => {
                    model.remove(&(ns.clone(), name.clone()));
                    changes.remove(Key::new(ns, name));
                }
            }
        }
        let mut after = s.clone();
        let delta = after.apply(&changes);
        prop_assert_eq!(&values_of(&after), &model);
        prop_assert!(after.namespaces.iter().all(|(_, keys)| !keys.is_empty()));
        let differs: BTreeSet<Key> = before
            .keys()
            .chain(model.keys())
            .filter(|k| before.get(*k) != model.get(*k))
            .map(|(ns, name)| Key::new(ns.as_str(), name.as_str()))
            .collect();
        prop_assert_eq!(delta, differs);
    }
}
