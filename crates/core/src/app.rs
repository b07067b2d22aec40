//! Session app declarations (`input`, `output`, `runOnCreate`) and the index that answers
//! "which apps watch this key" without scanning every app.
//!
//! The declaration format is VTEX's `vtex.session/configuration.json`:
//! `{"<name>": {"input": {"<ns>": ["key", "Pattern_.*"]}, "output": {"<ns>": ["key"]}}}`,
//! plus `runOnCreate` (also spelled `RunOnCreate`), and sessiond's `when`: the conditions under
//! which a conditional app runs (see [`Condition`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regex::Regex;

use crate::session::{Key, Namespaces};

/// Why an app declaration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppSpecError {
    /// The declaration is not of the `configuration.json` shape.
    #[error("app `{app}`: {message}")]
    Shape {
        /// The app's name.
        app: String,
        /// What is wrong.
        message: String,
    },
    /// An input key pattern is not a valid regular expression.
    #[error("app `{app}`: input pattern `{pattern}` is not a valid regular expression: {reason}")]
    BadPattern {
        /// The app's name.
        app: String,
        /// The offending pattern.
        pattern: String,
        /// The regex engine's complaint.
        reason: String,
    },
}

/// An input key: an exact name, or an anchored regular expression over key names.
#[derive(Clone, Debug)]
pub enum KeyPattern {
    /// Matches one key name.
    Exact(String),
    /// Matches every key name the whole expression matches.
    Regex {
        /// The expression as declared.
        source: String,
        /// The compiled, anchored expression.
        regex: Regex,
    },
}

impl PartialEq for KeyPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl KeyPattern {
    /// Parses a declared key: it is a pattern when it contains a regex metacharacter other
    /// than `.` and `-` (so `vtex-impersonated-customer-email` is exact, `VtexIdclientAutCookie_.*`
    /// a pattern).
    pub fn parse(source: &str) -> Result<Self, regex::Error> {
        const META: &[char] = &[
            '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '^', '$', '\\',
        ];
        if !source.contains(META) {
            return Ok(KeyPattern::Exact(source.to_owned()));
        }
        let regex = Regex::new(&format!("^(?:{source})$"))?;
        Ok(KeyPattern::Regex {
            source: source.to_owned(),
            regex,
        })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            KeyPattern::Exact(s) => s == name,
            KeyPattern::Regex { regex, .. } => regex.is_match(name),
        }
    }

    /// The key or expression as declared.
    pub fn as_str(&self) -> &str {
        match self {
            KeyPattern::Exact(s) => s,
            KeyPattern::Regex { source, .. } => source,
        }
    }
}

/// One condition of a conditional app (`when`): what `key` must hold for the app to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// The key tested.
    pub key: Key,
    /// What it must hold.
    pub test: Test,
}

/// What a [`Condition`] asks of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Test {
    /// The key holds one of these strings (`"value"` or `["a", "b"]`).
    OneOf(Vec<String>),
    /// The key is set (`true`) or absent (`false`).
    Set(bool),
}

impl Condition {
    /// Whether the condition holds in `namespaces`. A value that is not a string is compared
    /// by its JSON text (`true`, `3`).
    pub fn holds(&self, namespaces: &Namespaces) -> bool {
        let value = namespaces
            .get(&self.key.namespace)
            .and_then(|ns| ns.get(self.key.name.as_str()));
        match (&self.test, value) {
            (Test::Set(set), value) => value.is_some() == *set,
            (Test::OneOf(_), None) => false,
            (Test::OneOf(wanted), Some(v)) => match &v.value {
                serde_json::Value::String(text) => wanted.iter().any(|w| w == text),
                other => {
                    let text = other.to_string();
                    wanted.contains(&text)
                }
            },
        }
    }

    /// The condition as written in `when` (`"namespace.key" = …`), for traces and graphs.
    pub fn describe(&self) -> String {
        let quoted = |s: &String| serde_json::Value::String(s.clone()).to_string();
        match &self.test {
            Test::OneOf(values) if values.len() == 1 => {
                format!("{} = {}", self.key, quoted(&values[0]))
            }
            Test::OneOf(values) => format!(
                "{} = [{}]",
                self.key,
                values.iter().map(quoted).collect::<Vec<_>>().join(", ")
            ),
            Test::Set(set) => format!("{} = {set}", self.key),
        }
    }

    /// Parses `when` (`{"namespace.key": "value" | ["a", "b"] | true | false}`) of app `app`.
    pub fn parse_all(app: &str, when: &serde_json::Value) -> Result<Vec<Self>, AppSpecError> {
        let shape = |message: String| AppSpecError::Shape {
            app: app.to_owned(),
            message,
        };
        let table = when
            .as_object()
            .ok_or_else(|| shape("`when` must map `namespace.key` names to conditions".into()))?;
        table
            .iter()
            .map(|(name, test)| {
                let key = match name.split_once('.') {
                    Some((ns, k)) if !ns.is_empty() && !k.is_empty() => Key::new(ns, k),
                    _ => {
                        return Err(shape(format!(
                            "`when.{name}`: a condition's key must be `namespace.key`"
                        )))
                    }
                };
                let wrong = || {
                    shape(format!(
                        "`when.{name}` must be a string, a list of strings, true (set) or false (absent)"
                    ))
                };
                let test = match test {
                    serde_json::Value::String(v) => Test::OneOf(vec![v.clone()]),
                    serde_json::Value::Bool(b) => Test::Set(*b),
                    serde_json::Value::Array(values) if !values.is_empty() => Test::OneOf(
                        values
                            .iter()
                            .map(|v| v.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(wrong)?,
                    ),
                    _ => return Err(wrong()),
                };
                Ok(Condition { key, test })
            })
            .collect()
    }
}

/// One app's declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSpec {
    /// The app's name (the key of its `configuration.json`).
    pub name: String,
    /// Watched keys, by namespace.
    pub input: BTreeMap<String, Vec<KeyPattern>>,
    /// Keys the app may write, by namespace.
    pub output: BTreeMap<String, BTreeSet<String>>,
    /// Whether the app runs when a session is created.
    pub run_on_create: bool,
    /// The conditions under which it runs, all of which must hold (none: always). Their keys
    /// trigger the app like inputs do, but are not sent to it unless it declares them.
    pub when: Vec<Condition>,
}

impl AppSpec {
    /// Builds a declaration from its body (`{"input": …, "output": …, "runOnCreate": …}`).
    pub fn from_declaration(name: &str, body: &serde_json::Value) -> Result<Self, AppSpecError> {
        let shape = |message: String| AppSpecError::Shape {
            app: name.to_owned(),
            message,
        };
        let obj = body
            .as_object()
            .ok_or_else(|| shape("the declaration must be a JSON object".into()))?;
        let lists = |field: &str| -> Result<BTreeMap<String, Vec<String>>, AppSpecError> {
            let Some(v) = obj.get(field) else {
                return Ok(BTreeMap::new());
            };
            let map = v
                .as_object()
                .ok_or_else(|| shape(format!("`{field}` must map namespaces to key lists")))?;
            map.iter()
                .map(|(ns, keys)| {
                    let keys = keys
                        .as_array()
                        .and_then(|a| {
                            a.iter()
                                .map(|k| k.as_str().map(str::to_owned))
                                .collect::<Option<Vec<_>>>()
                        })
                        .ok_or_else(|| {
                            shape(format!("`{field}.{ns}` must be a list of key names"))
                        })?;
                    Ok((ns.clone(), keys))
                })
                .collect()
        };
        let mut input = BTreeMap::new();
        for (ns, keys) in lists("input")? {
            let patterns = keys
                .iter()
                .map(|k| {
                    KeyPattern::parse(k).map_err(|e| AppSpecError::BadPattern {
                        app: name.to_owned(),
                        pattern: k.clone(),
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            input.insert(ns, patterns);
        }
        let output = lists("output")?
            .into_iter()
            .map(|(ns, keys)| (ns, keys.into_iter().collect()))
            .collect();
        let run_on_create = match obj.get("runOnCreate").or_else(|| obj.get("RunOnCreate")) {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err(shape("`runOnCreate` must be true or false".into())),
        };
        let when = match obj.get("when") {
            None => Vec::new(),
            Some(when) => Condition::parse_all(name, when)?,
        };
        Ok(AppSpec {
            name: name.to_owned(),
            input,
            output,
            run_on_create,
            when,
        })
    }

    /// Parses a whole `configuration.json` file: `{"<name>": {declaration}}`, one or more apps.
    pub fn from_configuration_json(text: &str) -> Result<Vec<Self>, AppSpecError> {
        let parsed: serde_json::Value =
            serde_json::from_str(text).map_err(|e| AppSpecError::Shape {
                app: "configuration.json".into(),
                message: format!("not valid JSON: {e}"),
            })?;
        let obj = parsed.as_object().ok_or_else(|| AppSpecError::Shape {
            app: "configuration.json".into(),
            message: "must be a JSON object keyed by app name".into(),
        })?;
        obj.iter()
            .map(|(name, body)| AppSpec::from_declaration(name, body))
            .collect()
    }

    /// Whether the app watches `key`.
    pub fn watches(&self, key: &Key) -> bool {
        self.input
            .get(&key.namespace)
            .is_some_and(|ps| ps.iter().any(|p| p.matches(&key.name)))
    }

    /// Whether a change of `key` calls the app: it watches it, or a condition tests it.
    pub fn triggered_by(&self, key: &Key) -> bool {
        self.watches(key) || self.when.iter().any(|c| c.key == *key)
    }

    /// The first of its conditions that does not hold in `namespaces`, if any.
    pub fn failing_condition(&self, namespaces: &Namespaces) -> Option<&Condition> {
        self.when.iter().find(|c| !c.holds(namespaces))
    }

    /// Whether the app may write `key`.
    pub fn writes(&self, key: &Key) -> bool {
        self.output
            .get(&key.namespace)
            .is_some_and(|ks| ks.contains(&key.name))
    }
}

/// The maps of [`AppIndex`]: keyed by names from the configuration (a request's keys are only
/// looked up), hashed with foldhash, seeded anew for every map.
type ByName<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// The installed apps of one account, in precedence order, indexed by the keys they watch.
#[derive(Clone, Debug, Default)]
pub struct AppIndex {
    apps: Vec<AppSpec>,
    exact: ByName<ByName<Vec<usize>>>,
    patterns: ByName<Vec<(KeyPattern, usize)>>,
}

impl AppIndex {
    /// Indexes `apps`; their order is their precedence (a later app wins a same-key write).
    pub fn new(apps: Vec<AppSpec>) -> Self {
        let mut index = AppIndex::default();
        for (i, app) in apps.iter().enumerate() {
            for (ns, patterns) in &app.input {
                for p in patterns {
                    match p {
                        KeyPattern::Exact(name) => index
                            .exact
                            .entry(ns.clone())
                            .or_default()
                            .entry(name.clone())
                            .or_default()
                            .push(i),
                        KeyPattern::Regex { .. } => index
                            .patterns
                            .entry(ns.clone())
                            .or_default()
                            .push((p.clone(), i)),
                    }
                }
            }
            // A condition's key triggers the app like an input (a change re-evaluates it).
            for condition in &app.when {
                let watchers = index
                    .exact
                    .entry(condition.key.namespace.clone())
                    .or_default()
                    .entry(condition.key.name.clone())
                    .or_default();
                if !watchers.contains(&i) {
                    watchers.push(i);
                }
            }
        }
        index.apps = apps;
        index
    }

    /// The apps, in precedence order.
    pub fn apps(&self) -> &[AppSpec] {
        &self.apps
    }

    /// Positions (in precedence order) of the apps that watch `key`.
    pub fn watchers(&self, key: &Key) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        self.add_watchers(key, &mut out);
        out
    }

    /// Adds the positions of the apps that watch `key` to `out`.
    fn add_watchers(&self, key: &Key, out: &mut BTreeSet<usize>) {
        if let Some(ids) = self
            .exact
            .get(&key.namespace)
            .and_then(|m| m.get(&key.name))
        {
            out.extend(ids.iter().copied());
        }
        if self.patterns.is_empty() {
            return;
        }
        if let Some(ps) = self.patterns.get(&key.namespace) {
            out.extend(
                ps.iter()
                    .filter(|(p, _)| p.matches(&key.name))
                    .map(|(_, i)| *i),
            );
        }
    }

    /// Positions of the apps watching any key of `delta`: O(changed keys), not O(apps × keys).
    pub fn affected(&self, delta: &crate::session::Delta) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        for key in delta {
            self.add_watchers(key, &mut out);
        }
        out
    }

    /// Whether any installed app watches the request cookie `name` (`cookie` namespace input).
    pub fn watches_cookie(&self, name: &str) -> bool {
        self.watches("cookie", name)
    }

    /// Whether any app watches `namespace.name` (no allocation: asked for every cookie of
    /// every request).
    pub fn watches(&self, namespace: &str, name: &str) -> bool {
        self.exact
            .get(namespace)
            .is_some_and(|m| m.contains_key(name))
            || self
                .patterns
                .get(namespace)
                .is_some_and(|ps| ps.iter().any(|(p, _)| p.matches(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_vtex_configuration_json() {
        let apps = AppSpec::from_configuration_json(
            r#"{"search": {"input": {"public": ["facets"], "profile": ["email"]},
                           "output": {"search": ["facets"]}, "RunOnCreate": true}}"#,
        )
        .unwrap();
        assert_eq!(apps.len(), 1);
        assert!(apps[0].run_on_create);
        assert!(apps[0].watches(&Key::new("public", "facets")));
        assert!(apps[0].writes(&Key::new("search", "facets")));
        assert!(!apps[0].writes(&Key::new("public", "facets")));
    }

    #[test]
    fn patterns_are_anchored() {
        let p = KeyPattern::parse("VtexIdclientAutCookie_.*").unwrap();
        assert!(p.matches("VtexIdclientAutCookie_demo"));
        assert!(!p.matches("xVtexIdclientAutCookie_demo"));
        assert!(!p.matches("VtexIdclientAutCookie"));
        assert!(matches!(
            KeyPattern::parse("vtex-impersonated-customer-email").unwrap(),
            KeyPattern::Exact(_)
        ));
        let err = AppSpec::from_declaration("x", &json!({"input": {"cookie": ["(("]}}));
        assert!(matches!(err, Err(AppSpecError::BadPattern { .. })));
    }

    #[test]
    fn index_finds_exact_and_pattern_watchers() {
        let a = AppSpec::from_declaration(
            "auth",
            &json!({"input": {"cookie": ["VtexIdclientAutCookie", "VtexIdclientAutCookie_.*"]}}),
        )
        .unwrap();
        let b = AppSpec::from_declaration("b", &json!({"input": {"public": ["x"]}})).unwrap();
        let index = AppIndex::new(vec![a, b]);
        assert!(index.watches_cookie("VtexIdclientAutCookie"));
        assert!(index.watches_cookie("VtexIdclientAutCookie_demo"));
        assert!(!index.watches_cookie("other"));
        assert_eq!(
            index.watchers(&Key::new("public", "x")),
            BTreeSet::from([1])
        );
        assert!(index.watchers(&Key::new("public", "y")).is_empty());
    }

    #[test]
    fn conditions_parse_hold_and_trigger() {
        let app = AppSpec::from_declaration(
            "b2b",
            &json!({"input": {"profile": ["email"]}, "output": {"b2b": ["contract"]},
                    "when": {"profile.isAuthenticated": "true", "store.channel": ["2", "3"],
                             "public.blocked": false}}),
        )
        .unwrap();
        assert_eq!(app.when.len(), 3);
        let mut s = crate::Session::new("demo", 0, 1_000);
        let failing =
            |s: &crate::Session| app.failing_condition(&s.namespaces).map(|c| c.describe());
        assert_eq!(
            failing(&s).as_deref(),
            Some("profile.isAuthenticated = \"true\"")
        );
        s.set(
            &Key::new("profile", "isAuthenticated"),
            crate::Value::new("true"),
        );
        s.set(&Key::new("store", "channel"), crate::Value::new("3"));
        assert_eq!(failing(&s), None);
        s.set(&Key::new("public", "blocked"), crate::Value::new("x"));
        assert_eq!(failing(&s).as_deref(), Some("public.blocked = false"));
        let mut unset = crate::Changes::new();
        unset.remove(Key::new("public", "blocked"));
        s.apply(&unset);
        // A value that is not a string is compared by its JSON text.
        s.set(
            &Key::new("store", "channel"),
            crate::Value::new(serde_json::json!(2)),
        );
        assert_eq!(failing(&s), None);
        s.set(
            &Key::new("store", "channel"),
            crate::Value::new(serde_json::json!(4)),
        );
        assert_eq!(
            failing(&s).as_deref(),
            Some("store.channel = [\"2\", \"3\"]")
        );
        // A condition's key calls the app, and is not one of its inputs.
        let index = AppIndex::new(vec![app.clone()]);
        assert_eq!(
            index.watchers(&Key::new("store", "channel")),
            BTreeSet::from([0])
        );
        assert!(app.triggered_by(&Key::new("store", "channel")));
        assert!(!app.watches(&Key::new("store", "channel")));
        assert!(crate::cycle::inputs_of(&app, &s.namespaces)
            .get("store")
            .is_none());
        for (when, field) in [
            (json!({"isAuthenticated": "true"}), "when.isAuthenticated"),
            (json!({"profile.": "true"}), "when.profile."),
            (json!({"a.b": 3}), "when.a.b"),
            (json!({"a.b": []}), "when.a.b"),
            (json!({"a.b": ["x", 1]}), "when.a.b"),
        ] {
            let err = AppSpec::from_declaration("x", &json!({ "when": when })).unwrap_err();
            assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
        }
        assert!(AppSpec::from_declaration("x", &json!({"when": ["a.b"]})).is_err());
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(AppSpec::from_declaration("x", &json!([])).is_err());
        assert!(AppSpec::from_declaration("x", &json!({"input": {"public": "k"}})).is_err());
        assert!(AppSpec::from_declaration("x", &json!({"runOnCreate": "yes"})).is_err());
    }
}
