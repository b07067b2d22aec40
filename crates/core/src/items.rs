//! The `?items=` filter: which session values an answer shows.
//!
//! `items` is a comma-separated list of `namespace.key`, `namespace.*` or `*`. Unknown items are
//! simply absent from the answer; an empty or missing filter selects nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::session::{Namespace, Namespaces, Value};

/// The namespace whose values (identity cookies) are never shown by the public API.
pub const SECRET_NAMESPACE: &str = "cookie";

/// What a secret value is shown as.
pub const REDACTED: &str = "[redacted]";

/// A parsed `items` filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Items {
    all: bool,
    whole: BTreeSet<String>,
    keys: BTreeMap<String, BTreeSet<String>>,
}

impl Items {
    /// Parses the (already percent-decoded) value of `items`. Never fails: entries that
    /// name nothing (no dot, empty parts) select nothing.
    pub fn parse(raw: &str) -> Self {
        let mut items = Items::default();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                items.all = true;
                continue;
            }
            let Some((ns, key)) = entry.split_once('.') else {
                continue;
            };
            if ns.is_empty() || key.is_empty() {
                continue;
            }
            if key == "*" {
                items.whole.insert(ns.to_owned());
            } else {
                items
                    .keys
                    .entry(ns.to_owned())
                    .or_default()
                    .insert(key.to_owned());
            }
        }
        items
    }

    /// A filter that selects everything.
    pub fn all() -> Self {
        Items {
            all: true,
            ..Items::default()
        }
    }

    /// Whether the filter selects nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.all && self.whole.is_empty() && self.keys.is_empty()
    }

    /// Whether the filter selects every value (`*`).
    pub fn selects_all(&self) -> bool {
        self.all
    }

    /// The selected values of `namespaces` as a borrowed view that serializes like
    /// a copy of those values would, without copying any.
    pub fn view<'a>(&'a self, namespaces: &'a Namespaces) -> Selection<'a> {
        Selection {
            items: self,
            namespaces,
        }
    }

    /// Whether the filter takes every value of namespace `ns`.
    pub(crate) fn takes_whole(&self, ns: &str) -> bool {
        self.all || self.whole.contains(ns)
    }

    /// The keys of namespace `ns` the filter names one by one (in key order).
    pub(crate) fn named_keys(&self, ns: &str) -> Option<&BTreeSet<String>> {
        self.keys.get(ns)
    }

    /// The keys of `values` (namespace `ns`) this filter picks.
    fn picks<'a>(
        &'a self,
        ns: &str,
        values: &'a Namespace,
    ) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
        let whole = self.all || self.whole.contains(ns);
        let wanted = if whole { None } else { self.keys.get(ns) };
        let all = whole.then(|| values.iter());
        let some = wanted.map(|w| {
            w.iter()
                .filter_map(|k| values.get_indexed(values.find_index(k.as_str()).ok()?))
        });
        all.into_iter().flatten().chain(some.into_iter().flatten())
    }
}

/// A filter applied to a session's namespaces, serialized without copies (see [`Items::view`]).
pub struct Selection<'a> {
    items: &'a Items,
    namespaces: &'a Namespaces,
}

/// One namespace of a [`Selection`].
struct Picked<'a> {
    items: &'a Items,
    ns: &'a str,
    values: &'a Namespace,
}

/// A secret value as shown: `"[redacted]"`, its `keepAlive` kept.
#[derive(serde::Serialize)]
struct Redacted {
    value: &'static str,
    #[serde(rename = "keepAlive", skip_serializing_if = "std::ops::Not::not")]
    keep_alive: bool,
}

impl serde::Serialize for Selection<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if !self.items.is_empty() {
            for (ns, values) in self.namespaces {
                if self.items.picks(ns, values).next().is_none() {
                    continue;
                }
                let picked = Picked {
                    items: self.items,
                    ns,
                    values,
                };
                map.serialize_entry(ns, &picked)?;
            }
        }
        map.end()
    }
}

impl serde::Serialize for Picked<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.items.picks(self.ns, self.values) {
            if self.ns == SECRET_NAMESPACE {
                let shown = Redacted {
                    value: REDACTED,
                    keep_alive: value.keep_alive,
                };
                map.serialize_entry(key, &shown)?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The selected values, copied: the reference the borrowed [`Items::view`] is checked
    /// against.
    trait Select {
        fn select(&self, namespaces: &Namespaces) -> Namespaces;
    }

    impl Select for Items {
        fn select(&self, namespaces: &Namespaces) -> Namespaces {
            let mut out = Namespaces::new();
            if self.is_empty() {
                return out;
            }
            for (ns, values) in namespaces {
                let picked: Arc<Namespace> = if self.all || self.whole.contains(ns) {
                    values.clone()
                } else if let Some(wanted) = self.keys.get(ns) {
                    Arc::new(
                        wanted
                            .iter()
                            .filter_map(|k| values.get(k).map(|v| (k.clone(), v.clone())))
                            .collect(),
                    )
                } else {
                    continue;
                };
                if picked.is_empty() {
                    continue;
                }
                let picked = if ns == SECRET_NAMESPACE {
                    Arc::new(redact(Namespace::clone(&picked)))
                } else {
                    picked
                };
                out.insert(ns.clone(), picked);
            }
            out
        }
    }

    fn redact(values: Namespace) -> Namespace {
        values
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    Value {
                        value: serde_json::Value::String(REDACTED.to_owned()),
                        keep_alive: v.keep_alive,
                    },
                )
            })
            .collect()
    }

    fn sample() -> Namespaces {
        let mut n = Namespaces::new();
        Arc::make_mut(n.entry("public".into()).or_default()).insert("a".into(), Value::new("1"));
        Arc::make_mut(n.entry("public".into()).or_default()).insert("b".into(), Value::new("2"));
        Arc::make_mut(n.entry("store".into()).or_default())
            .insert("channel".into(), Value::new("1"));
        Arc::make_mut(n.entry("cookie".into()).or_default())
            .insert("VtexIdclientAutCookie".into(), Value::new("secret"));
        n
    }

    #[test]
    fn selects_keys_namespaces_and_all() {
        let n = sample();
        let one = Items::parse("public.a,store.missing,nope.x,bad");
        let got = one.select(&n);
        assert_eq!(got.len(), 1);
        assert_eq!(got.get("public").unwrap().len(), 1);
        assert_eq!(
            got.get("public").unwrap().get("a").unwrap(),
            &Value::new("1")
        );

        let ns = Items::parse("public.*");
        assert_eq!(ns.select(&n).get("public").unwrap().len(), 2);

        let all = Items::parse(" * ");
        assert_eq!(all.select(&n).len(), 3);
        assert!(Items::parse("").select(&n).is_empty());
    }

    #[test]
    fn cookies_are_redacted() {
        let n = sample();
        let got = Items::all().select(&n);
        assert_eq!(
            got.get("cookie")
                .unwrap()
                .get("VtexIdclientAutCookie")
                .unwrap()
                .value,
            serde_json::json!(REDACTED)
        );
        let got = Items::parse("cookie.VtexIdclientAutCookie").select(&n);
        assert_eq!(
            got.get("cookie")
                .unwrap()
                .get("VtexIdclientAutCookie")
                .unwrap()
                .value,
            serde_json::json!(REDACTED)
        );
    }

    #[test]
    fn the_view_serializes_as_the_selection() {
        let mut n = sample();
        Arc::make_mut(n.get_mut("cookie").unwrap()).insert("kept".into(), Value::kept("x"));
        for filter in [
            "*",
            "public.a,store.missing,nope.x,bad",
            "public.*,public.b",
            "cookie.*",
            "cookie.kept,store.channel",
            "",
            "public.zz",
        ] {
            let items = Items::parse(filter);
            assert_eq!(
                serde_json::to_string(&items.view(&n)).unwrap(),
                serde_json::to_string(&items.select(&n)).unwrap(),
                "filter {filter:?}"
            );
        }
        assert!(Items::parse("public.a,*").selects_all());
        assert!(!Items::parse("public.*").selects_all());
    }

    #[test]
    fn keys_may_contain_dots() {
        let mut n = Namespaces::new();
        Arc::make_mut(n.entry("public".into()).or_default()).insert("a.b".into(), Value::new("1"));
        assert_eq!(
            Items::parse("public.a.b")
                .select(&n)
                .get("public")
                .unwrap()
                .len(),
            1
        );
    }
}
