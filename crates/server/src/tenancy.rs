//! Tenancy: which account a request belongs to, and what that account has installed. The apps
//! of an account can change while the process runs (the admin API, see `catalog`): each
//! account is swapped whole, so a request works with one set of apps from start to end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use sessiond_apps::http::HttpApp;
use sessiond_apps::identity::Verifier;
use sessiond_apps::{builtin, CommerceData};
use sessiond_core::{AppSpec, Apps, Key, Transformer};

use crate::config::{AccountConfig, AppConfig, ConfigError};

/// Per-call timeout of an app without `timeout_ms`.
pub const DEFAULT_APP_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest `timeout_ms` accepted: a cycle may wait `max_rounds` times this per attempt.
pub const MAX_APP_TIMEOUT: Duration = Duration::from_secs(10);

/// Namespace of the account ids derived from account names (stable across restarts).
const ACCOUNT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5e55_10d0_4c1e_4b7a_9d0e_61c0_a1d5_e55d);

/// One account, ready to serve.
#[derive(Debug)]
pub struct Account {
    /// Account name, lower case.
    pub name: String,
    /// Account UUID.
    pub id: String,
    /// Most transform rounds per request.
    pub max_rounds: u32,
    /// Installed apps (declarations indexed by watched key, transformers, timeouts).
    pub apps: Apps,
    /// Commerce data read by the built-in apps.
    pub commerce: Arc<CommerceData>,
    /// Verifies the account's identity tokens (and holds its identity table).
    pub identity: Arc<Verifier>,
    /// The installed apps as written (in precedence order), what [`Account::apps`] was built
    /// from.
    pub entries: Vec<AppConfig>,
    /// Whether a new session that holds only what the create cycle derives can go unsaved
    /// until it first changes: no HTTP app can take part in the create cycle (none runs on
    /// create, nor watches anything an app of the create cycle writes), so the cycle gives
    /// the same session every time it derives it again, without a call out.
    pub lazy_creates: bool,
}

impl Account {
    /// Builds an account from its configuration, validating every app declaration. HTTP apps
    /// are called through `client`.
    pub fn from_config(cfg: &AccountConfig, client: &reqwest::Client) -> Result<Self, ConfigError> {
        let name = cfg.name.to_ascii_lowercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(ConfigError::Invalid(format!(
                "account name `{}` must be letters, digits and `-` (a DNS label)",
                cfg.name
            )));
        }
        let id = match &cfg.id {
            Some(id) => uuid::Uuid::parse_str(id)
                .map_err(|e| ConfigError::Invalid(format!("account `{name}` id `{id}`: {e}")))?
                .to_string(),
            None => uuid::Uuid::new_v5(&ACCOUNT_ID_NAMESPACE, name.as_bytes()).to_string(),
        };
        let commerce = Arc::new(cfg.commerce());
        let identity = Arc::new(
            Verifier::new(&cfg.identity.clone().unwrap_or_default())
                .map_err(|e| ConfigError::Invalid(format!("account `{name}`: {e}")))?,
        );
        let max_rounds = cfg.max_rounds.unwrap_or(10);
        if max_rounds == 0 {
            return Err(ConfigError::Invalid(format!(
                "account `{name}`: max_rounds must be at least 1"
            )));
        }
        let account = Account {
            name,
            id,
            max_rounds,
            apps: Apps::default(),
            commerce,
            identity,
            entries: Vec::new(),
            lazy_creates: true,
        };
        account.with_apps(&cfg.apps, client)
    }

    /// This account with `entries` installed instead of its apps (each validated as
    /// `sessiond check` does); its commerce data and identity provider are shared.
    pub fn with_apps(
        &self,
        entries: &[AppConfig],
        client: &reqwest::Client,
    ) -> Result<Account, ConfigError> {
        let name = &self.name;
        let (commerce, identity) = (&self.commerce, &self.identity);
        let mut installed = Vec::with_capacity(entries.len());
        for (i, app) in entries.iter().enumerate() {
            if entries[..i].iter().any(|earlier| earlier.name == app.name) {
                return Err(ConfigError::Invalid(format!(
                    "account `{name}`: app `{}` is installed twice",
                    app.name
                )));
            }
            let spec = app_spec(name, app)?;
            let transformer: Arc<dyn Transformer> = match &app.url {
                Some(url) => Arc::new(HttpApp::new(
                    client.clone(),
                    checked_url(name, &app.name, &transform_url(url, &app.name))?,
                    app.secret.as_deref(),
                )),
                None => builtin::transformer(&app.name, commerce.clone(), identity).ok_or_else(
                    || {
                        ConfigError::Invalid(format!(
                            "account `{name}`: no built-in app is named `{}`",
                            app.name
                        ))
                    },
                )?,
            };
            let timeout = app
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_APP_TIMEOUT);
            if timeout.is_zero() || timeout > MAX_APP_TIMEOUT {
                return Err(ConfigError::Invalid(format!(
                    "account `{name}`, app `{}`: timeout_ms must be between 1 and {}",
                    app.name,
                    MAX_APP_TIMEOUT.as_millis()
                )));
            }
            installed.push((spec, transformer, timeout));
        }
        let apps = Apps::new(installed);
        let lazy_creates = !create_cycle(apps.index().apps())
            .into_iter()
            .any(|i| entries[i].url.is_some());
        Ok(Account {
            name: self.name.clone(),
            id: self.id.clone(),
            max_rounds: self.max_rounds,
            apps,
            commerce: commerce.clone(),
            identity: identity.clone(),
            entries: entries.to_vec(),
            lazy_creates,
        })
    }

    /// Whether an app of this account reads identity tokens (its provider's keys must then be
    /// kept up to date).
    fn reads_tokens(&self) -> bool {
        self.apps
            .index()
            .apps()
            .iter()
            .any(|app| app.name == builtin::AUTHENTICATION)
    }
}

/// The apps (positions) a create cycle may call when the request changes nothing: those run on
/// create or triggered by the account keys every new session gets, and those triggered by
/// what any of these writes.
fn create_cycle(apps: &[AppSpec]) -> Vec<usize> {
    let account_keys = [
        Key::new("account", "id"),
        Key::new("account", "accountName"),
    ];
    let feeds = crate::check::feeds(apps);
    let mut called: Vec<usize> = (0..apps.len())
        .filter(|&i| apps[i].run_on_create || account_keys.iter().any(|k| apps[i].triggered_by(k)))
        .collect();
    let mut next = 0;
    while next < called.len() {
        for &j in &feeds[called[next]] {
            if !called.contains(&j) {
                called.push(j);
            }
        }
        next += 1;
    }
    called
}

/// The transform URL of an HTTP app: `url` as given, or `<url>/_v/<name>/session/transform` when
/// `url` is only a base (no path).
fn transform_url(url: &str, name: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) if after_scheme[i..] != *"/" => url.to_owned(),
        _ => format!("{}/_v/{name}/session/transform", url.trim_end_matches('/')),
    }
}

/// `url` when it is an absolute `http://` URL (this build speaks plain HTTP to apps).
fn checked_url(account: &str, app: &str, url: &str) -> Result<String, ConfigError> {
    let invalid = |why: String| {
        ConfigError::Invalid(format!(
            "account `{account}`, app `{app}`: url `{url}` {why}"
        ))
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("is not a URL: {e}")))?;
    if parsed.scheme() != "http" || parsed.host_str().is_none() {
        return Err(invalid(
            "must be an http://HOST[:PORT]/… URL (https apps go through a local TLS proxy)".into(),
        ));
    }
    Ok(url.to_owned())
}

/// The declaration of one installed app: a built-in's own, or the configured one.
fn app_spec(account: &str, app: &AppConfig) -> Result<AppSpec, ConfigError> {
    let invalid =
        |m: String| ConfigError::Invalid(format!("account `{account}`, app `{}`: {m}", app.name));
    let declared = match (&app.configuration, &app.configuration_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give `configuration` or `configuration_file`, not both".into(),
            ))
        }
        (Some(inline), None) => Some(inline.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            let mut parsed: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("{} is not JSON: {e}", path.display())))?;
            // VTEX's file is keyed by app name; take this app's entry (or the only one).
            let entry = match parsed.as_object_mut() {
                Some(obj) if obj.contains_key(&app.name) => obj.remove(&app.name),
                Some(obj) if obj.len() == 1 => obj.values_mut().next().map(std::mem::take),
                _ => None,
            };
            Some(entry.ok_or_else(|| {
                invalid(format!(
                    "{} has no declaration keyed `{}`",
                    path.display(),
                    app.name
                ))
            })?)
        }
        (None, None) => None,
    };
    let mut spec = match (declared, app.url.is_some()) {
        (Some(body), true) => AppSpec::from_declaration(&app.name, &body)
            .map_err(|e| ConfigError::Invalid(format!("account `{account}`: {e}")))?,
        (None, false) => builtin::spec(&app.name).ok_or_else(|| {
            invalid(format!(
                "no built-in app has this name (built-ins: {}); an HTTP app needs `url` and `configuration`",
                builtin::NAMES.join(", ")
            ))
        })?,
        (None, true) => {
            return Err(invalid(
                "an HTTP app needs `configuration` or `configuration_file`".into(),
            ))
        }
        (Some(_), false) => return Err(invalid("an app with a `configuration` needs a `url`".into())),
    };
    if let Some(run) = app.run_on_create {
        spec.run_on_create = run;
    }
    if let Some(when) = &app.when {
        spec.when = sessiond_core::Condition::parse_all(&app.name, when)
            .map_err(|e| ConfigError::Invalid(format!("account `{account}`: {e}")))?;
    }
    Ok(spec)
}

/// Every configured account, found by name.
pub struct Tenancy {
    accounts: HashMap<String, Slot>,
    /// The default account's name.
    default: String,
    /// The client HTTP apps are called through.
    client: reqwest::Client,
}

/// One account: as configured, and as it now stands.
struct Slot {
    configured: Vec<AppConfig>,
    current: ArcSwap<Account>,
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("accounts", &self.accounts.keys().collect::<Vec<_>>())
            .field("default", &self.default)
            .finish()
    }
}

impl Tenancy {
    /// Builds the accounts; `default_account` must be one of them.
    pub fn new(configs: &[AccountConfig], default_account: &str) -> Result<Self, ConfigError> {
        // One pooled client for every HTTP app of every account. The cycle bounds each call;
        // the connect timeout only keeps a dead host from holding a pool slot.
        // Redirects are not followed: an app's inputs (identity cookies among them) go to the
        // configured URL only; a 3xx is a failure of that app.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| ConfigError::Invalid(format!("cannot build the HTTP app client: {e}")))?;
        let mut accounts = HashMap::new();
        for cfg in configs {
            let account = Account::from_config(cfg, &client)?;
            let slot = Slot {
                configured: cfg.apps.clone(),
                current: ArcSwap::from_pointee(account),
            };
            let name = slot.current.load().name.clone();
            if accounts.insert(name, slot).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "account `{}` is configured twice",
                    cfg.name
                )));
            }
        }
        let default = default_account.to_ascii_lowercase();
        if !accounts.contains_key(&default) {
            return Err(ConfigError::Invalid(format!(
                "default_account `{default_account}` is not a configured account"
            )));
        }
        Ok(Tenancy {
            accounts,
            default,
            client,
        })
    }

    /// The account of a request: the first DNS label of `host` when it names an account,
    /// else `an` when it names one, else the default account.
    pub fn resolve(&self, host: Option<&str>, an: Option<&str>) -> Arc<Account> {
        let by_host = host.and_then(|h| {
            let label = h.split(['.', ':']).next()?;
            self.slot(label)
        });
        by_host
            .or_else(|| an.and_then(|a| self.slot(a)))
            .unwrap_or_else(|| &self.accounts[&self.default])
            .current
            .load_full()
    }

    fn slot(&self, name: &str) -> Option<&Slot> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.accounts.get(&name.to_ascii_lowercase())
        } else {
            self.accounts.get(name)
        }
    }

    /// The account named `name` (any case), if it is configured.
    pub fn find(&self, name: &str) -> Option<Arc<Account>> {
        self.slot(name).map(|slot| slot.current.load_full())
    }

    /// The apps account `name` was configured with.
    pub fn configured_apps(&self, name: &str) -> Option<&[AppConfig]> {
        self.slot(name).map(|slot| slot.configured.as_slice())
    }

    /// Account `name` with `entries` as its apps, validated, without installing it.
    pub fn with_apps(&self, name: &str, entries: &[AppConfig]) -> Result<Account, ConfigError> {
        let account = self
            .find(name)
            .ok_or_else(|| ConfigError::Invalid(format!("no account is named `{name}`")))?;
        account.with_apps(entries, &self.client)
    }

    /// Makes `account` (built by [`Tenancy::with_apps`]) the one requests for its name get
    /// from now on; requests under way keep the one they started with.
    pub fn replace(&self, account: Arc<Account>) {
        if let Some(slot) = self.accounts.get(&account.name) {
            if account.reads_tokens() {
                account.identity.start();
            }
            slot.current.store(account);
        }
    }

    /// All accounts, as they now stand.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        self.accounts
            .values()
            .map(|slot| slot.current.load_full())
            .collect()
    }

    /// Starts what the accounts keep up to date in the background: the keys of identity
    /// providers given by `jwks_url`, for the accounts whose apps read identity tokens.
    /// Needs a Tokio runtime.
    pub fn start(&self) {
        for account in self.accounts() {
            if account.reads_tokens() {
                account.identity.start();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, Settings};

    fn tenancy() -> Tenancy {
        let mut s = Settings::load(None, Overrides::default()).unwrap();
        let mut acme = toml::from_str::<AccountConfig>("name = \"Acme\"").unwrap();
        acme.apps.clear();
        s.accounts.push(acme);
        Tenancy::new(&s.accounts, &s.default_account).unwrap()
    }

    #[test]
    fn host_then_an_then_default() {
        let t = tenancy();
        assert_eq!(t.resolve(Some("ACME.example.com:8443"), None).name, "acme");
        assert_eq!(t.resolve(Some("acme"), Some("demo")).name, "acme");
        assert_eq!(t.resolve(Some("127.0.0.1:8080"), Some("Acme")).name, "acme");
        assert_eq!(
            t.resolve(Some("shop.example.com"), Some("nope")).name,
            "demo"
        );
        assert_eq!(t.resolve(None, None).name, "demo");
    }

    #[test]
    fn creates_are_lazy_unless_an_http_app_takes_part_in_the_create_cycle() {
        let demo = tenancy().resolve(None, None);
        assert!(demo.lazy_creates, "built-in apps only");
        let client = reqwest::Client::new();
        let with = |declaration: &str| {
            let app: AppConfig = toml::from_str(&format!(
                "name = \"x\"\nurl = \"http://127.0.0.1:1\"\nconfiguration = {declaration}"
            ))
            .unwrap();
            let mut entries = demo.entries.clone();
            entries.push(app);
            demo.with_apps(&entries, &client).unwrap().lazy_creates
        };
        let loyalty =
            r#"{ input = { public = ["loyaltyCard"] }, output = { loyalty = ["tier"] } }"#;
        assert!(
            with(loyalty),
            "an app called only for a value the request sets"
        );
        let on_create =
            r#"{ runOnCreate = true, input = { public = ["a"] }, output = { x = ["y"] } }"#;
        assert!(!with(on_create), "an app run on create");
        let channel = r#"{ input = { store = ["channel"] }, output = { x = ["y"] } }"#;
        assert!(
            !with(channel),
            "an app watching what the create cycle writes"
        );
        let account = r#"{ input = { account = ["id"] }, output = { x = ["y"] } }"#;
        assert!(
            !with(account),
            "an app watching the account keys every session gets"
        );
    }

    #[test]
    fn account_ids_are_stable() {
        let t = tenancy();
        let acme = t.resolve(Some("acme"), None);
        assert_eq!(acme.id, tenancy().resolve(Some("acme"), None).id);
        assert_eq!(
            t.resolve(None, None).id,
            "6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51"
        );
    }

    #[test]
    fn demo_apps_watch_identity_cookies() {
        let t = tenancy();
        let demo = t.resolve(None, None);
        let index = demo.apps.index();
        assert!(index.watches_cookie("VtexIdclientAutCookie_demo"));
        assert!(index.watches_cookie("vtex-impersonated-customer-email"));
        assert!(!index.watches_cookie("_ga"));
    }

    #[test]
    fn http_apps_default_to_the_vtex_route() {
        assert_eq!(
            transform_url("http://127.0.0.1:9000", "loyalty"),
            "http://127.0.0.1:9000/_v/loyalty/session/transform"
        );
        assert_eq!(
            transform_url("http://h:1/", "x"),
            "http://h:1/_v/x/session/transform"
        );
        assert_eq!(transform_url("http://h/custom", "x"), "http://h/custom");
    }

    #[test]
    fn unknown_builtin_and_half_http_apps_are_refused() {
        for body in [
            "name = \"x\"\n[[apps]]\nname = \"vtex.nope\"",
            "name = \"x\"\n[[apps]]\nname = \"loyalty\"\nurl = \"http://127.0.0.1:1/\"",
            "name = \"x\"\n[[apps]]\nname = \"l\"\nconfiguration = { input = { public = [\"((\"] } }\nurl = \"http://x/\"",
            "name = \"x\"\n[[apps]]\nname = \"l\"\nconfiguration = { input = { public = [\"a\"] } }\nurl = \"https://x/\"",
            "name = \"x\"\n[[apps]]\nname = \"l\"\nconfiguration = { input = { public = [\"a\"] } }\nurl = \"not a url\"",
        ] {
            let cfg: AccountConfig = toml::from_str(body).unwrap();
            assert!(Account::from_config(&cfg, &reqwest::Client::new()).is_err(), "{body}");
        }
    }
}
