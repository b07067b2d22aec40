//! Configuration: the TOML file (or the built-in demo), `SESSIOND_*` variables and flags,
//! resolved into [`Settings`]. Precedence: flag > environment > file > default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sessiond_apps::commerce::{
    Admin, Campaign, CommerceData, Customer, DeliveryArea, SalesChannel,
};
use sessiond_apps::identity::Identity;

pub use crate::repo::StoreSpec;
pub use crate::telemetry::LogFormat;

/// The demo configuration, used when no `--config` is given.
pub const DEMO_CONFIG: &str = include_str!("../../../config/demo.toml");

/// Default of `cache_sessions` where the machine's memory is unknown.
pub const DEFAULT_CACHE_SESSIONS: usize = 200_000;

/// Memory a cached session is budgeted at when sizing the default cache. A session of a dozen
/// values takes about 1 KiB as its record alone, with its segment token shared, its snapshot and
/// its map entry (measured: 1.4 KiB before the token was shared, at 300,000 sessions; the token
/// is ~340 bytes), which is how most of them are cached; one decoded for a full edit, or keeping
/// a filtered answer, takes more.
const CACHED_SESSION_BYTES: u64 = 4096;

/// The default `cache_sessions`: as many sessions as fit in a quarter of the memory this
/// process may use (the machine's, or its control group's limit when lower), between 10,000
/// and 4,000,000.
pub fn default_cache_sessions() -> usize {
    match usable_memory() {
        Some(bytes) => (bytes / 4 / CACHED_SESSION_BYTES).clamp(10_000, 4_000_000) as usize,
        None => DEFAULT_CACHE_SESSIONS,
    }
}

/// The memory this process may use: the machine's (`/proc/meminfo`), or the control group's
/// limit (`memory.max`, cgroup v2) when that is lower. `None` where neither can be read.
fn usable_memory() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let group = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|m| m.trim().parse::<u64>().ok());
    match (machine, group) {
        (Some(m), Some(g)) => Some(m.min(g)),
        (m, g) => m.or(g),
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address.
    pub listen: Option<String>,
    /// Data directory (embedded store, generated keys).
    pub data_dir: Option<PathBuf>,
    /// Store URL: `embedded`, `memory`, `redis://…`, `redis+cluster://…`.
    pub store: Option<String>,
    /// Account used when neither the host nor `an` names one.
    pub default_account: Option<String>,
    /// Session lifetime, humantime (`5d`).
    pub session_ttl: Option<String>,
    /// Whether cookies carry `Secure`.
    pub secure_cookies: Option<bool>,
    /// Bearer token of the admin API.
    pub admin_token: Option<String>,
    /// Bound on every store call, humantime (`1s`).
    pub store_timeout: Option<String>,
    /// Most sessions kept in memory (embedded and memory stores; 0: none; default: see
    /// [`default_cache_sessions`]).
    pub cache_sessions: Option<usize>,
    /// How long a stopping server lets requests in flight finish, humantime (`30s`).
    pub shutdown_timeout: Option<String>,
    /// How long a client may take to send a request's head (request line and headers), also
    /// the longest a kept-alive connection may wait idle for its next request, humantime
    /// (`75s`: longer than the idle timeout of the usual proxies in front, so that they close
    /// an idle connection first).
    pub header_read_timeout: Option<String>,
    /// How long a client may take to send a request's body once its head is in, humantime
    /// (`30s`).
    pub request_timeout: Option<String>,
    /// How long a client may go without taking any of what it is sent, humantime (`30s`).
    pub write_timeout: Option<String>,
    /// Log format: `text` (default) or `json`.
    pub log_format: Option<String>,
    /// An address serving `GET /metrics` alone (`listen` then answers 404 for it).
    pub metrics_listen: Option<String>,
    /// Whether the measured shortcuts are used (default true): edits of plain `public` keys on
    /// the stored record, answers cut out of the stored one, segment cookie lines shared
    /// between sessions, the previous segment token kept when no segment input changed. Off,
    /// every request takes the simple path; both give the same bytes (a test runs the API both
    /// ways).
    pub fast_paths: Option<bool>,
    /// PEM of the ES256 private key signing session tokens (else generated in `data_dir`).
    pub signing_key_pem: Option<String>,
    /// File holding that PEM.
    pub signing_key_file: Option<PathBuf>,
    /// Further public keys (PEM) whose tokens are accepted, for key rotation.
    #[serde(default)]
    pub verification_keys_pem: Vec<String>,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The accounts (tenants).
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
}

/// Request limits as written (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body, bytes.
    pub max_body_bytes: Option<usize>,
    /// Most keys written into `public` by one request.
    pub max_public_keys: Option<usize>,
    /// Longest key name, bytes.
    pub max_key_bytes: Option<usize>,
    /// Largest value (its JSON), bytes.
    pub max_value_bytes: Option<usize>,
    /// Deepest JSON nesting of a value.
    pub max_json_depth: Option<usize>,
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: Option<usize>,
    /// Most client connections open at once.
    pub max_connections: Option<usize>,
}

/// One account as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Account name (first DNS label of its hosts).
    pub name: String,
    /// Account UUID (derived from the name when absent).
    pub id: Option<String>,
    /// Most transform rounds per request.
    pub max_rounds: Option<u32>,
    /// How the account's identity tokens are verified (SPEC §6a).
    pub identity: Option<Identity>,
    /// Installed session apps, in precedence order.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Sales channels.
    #[serde(default)]
    pub sales_channels: Vec<SalesChannel>,
    /// Customers.
    #[serde(default)]
    pub customers: Vec<Customer>,
    /// Admin users.
    #[serde(default)]
    pub admins: Vec<Admin>,
    /// Delivery areas.
    #[serde(default)]
    pub delivery_areas: Vec<DeliveryArea>,
    /// Campaign audiences.
    #[serde(default)]
    pub campaigns: Vec<Campaign>,
}

/// One installed app as written: a built-in by name, or an HTTP app. The same entry, as JSON,
/// is what the admin API installs.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// App name.
    pub name: String,
    /// Transform URL of an HTTP app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Whether the app runs on session creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_on_create: Option<bool>,
    /// Per-call timeout of an HTTP app, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// HMAC secret signing the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The declaration (`{input, output}`), inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<serde_json::Value>,
    /// The declaration as VTEX's `configuration.json` file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration_file: Option<PathBuf>,
    /// The conditions under which the app runs (`{"namespace.key" = condition}`, SPEC §5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<serde_json::Value>,
}

/// Request limits in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Most keys written into `public` by one request.
    pub max_public_keys: usize,
    /// Longest key name, bytes.
    pub max_key_bytes: usize,
    /// Largest value (its JSON), bytes.
    pub max_value_bytes: usize,
    /// Deepest JSON nesting of a value.
    pub max_json_depth: usize,
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Longest time to send a request's head; also the longest idle wait of a kept-alive
    /// connection.
    pub header_read_timeout: Duration,
    /// Longest time to send a request's body.
    pub request_timeout: Duration,
    /// Longest time a client may take nothing of what it is sent.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_public_keys: 256,
            max_key_bytes: 256,
            max_value_bytes: 16 * 1024,
            max_json_depth: 16,
            max_header_bytes: 32 * 1024,
            max_connections: 25_000,
            header_read_timeout: Duration::from_secs(75),
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Values given on the command line or in `SESSIOND_*` variables (clap merges those two).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--store`.
    pub store: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

/// Where the configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// The built-in demo configuration (no `--config`).
    Demo,
    /// A file.
    File(PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Demo => f.write_str("built-in demo"),
            ConfigSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Settings {
    /// Where the configuration came from.
    pub source: ConfigSource,
    /// Listen address.
    pub listen: SocketAddr,
    /// The address serving `/metrics` alone, when configured.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a stopping server lets requests in flight finish.
    pub shutdown_timeout: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store backend.
    pub store: StoreSpec,
    /// Default account name.
    pub default_account: String,
    /// Session lifetime.
    pub session_ttl: Duration,
    /// Whether cookies carry `Secure`.
    pub secure_cookies: bool,
    /// Admin bearer token (admin API off when absent).
    pub admin_token: Option<String>,
    /// Bound on every store call.
    pub store_timeout: Duration,
    /// Most sessions kept decoded in memory.
    pub cache_sessions: usize,
    /// Whether the measured shortcuts are used (see the file's `fast_paths`).
    pub fast_paths: bool,
    /// Signing key PEM, when configured.
    pub signing_key_pem: Option<String>,
    /// Extra verification keys (PEM).
    pub verification_keys_pem: Vec<String>,
    /// Request limits.
    pub limits: Limits,
    /// Accounts, as written.
    pub accounts: Vec<AccountConfig>,
}

impl Settings {
    /// Reads `config` (or the demo configuration) and applies `overrides`.
    pub fn load(config: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let text = match config {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => DEMO_CONFIG.to_owned(),
        };
        let base = config.and_then(Path::parent).unwrap_or(Path::new("."));
        let mut settings = Settings::from_text(&text, overrides, base)?;
        if let Some(path) = config {
            settings.source = ConfigSource::File(path.to_owned());
        }
        Ok(settings)
    }

    /// The settings a configuration file's `text` gives, with `overrides`; the files it names
    /// are read relative to `base`.
    pub fn from_text(text: &str, overrides: Overrides, base: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text)?;
        Settings::resolve(file, overrides, base)
    }

    fn resolve(file: FileConfig, o: Overrides, base: &Path) -> Result<Self, ConfigError> {
        let listen_text = o
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen address `{listen_text}` is not IP:PORT (e.g. 127.0.0.1:8080)"
            ))
        })?;
        let store = StoreSpec::parse(&o.store.or(file.store).unwrap_or_else(|| "embedded".into()))
            .map_err(ConfigError::Invalid)?;
        let metrics_listen = file
            .metrics_listen
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "metrics_listen address `{text}` is not IP:PORT (e.g. 127.0.0.1:9090)"
                    ))
                })
            })
            .transpose()?;
        let log_format = o
            .log_format
            .or(file.log_format)
            .map(|f| {
                LogFormat::parse(&f).ok_or_else(|| {
                    ConfigError::Invalid(format!("log_format `{f}` is not `text` or `json`"))
                })
            })
            .transpose()?
            .unwrap_or_default();
        let duration = |name: &str, v: Option<String>, default: &str| {
            let text = v.unwrap_or_else(|| default.to_owned());
            humantime::parse_duration(&text)
                .map_err(|e| ConfigError::Invalid(format!("{name} `{text}`: {e}")))
                .and_then(|d| {
                    if d.is_zero() {
                        Err(ConfigError::Invalid(format!(
                            "{name} must be more than zero"
                        )))
                    } else {
                        Ok(d)
                    }
                })
        };
        let session_ttl = duration("session_ttl", file.session_ttl, "5d")?;
        let store_timeout = duration("store_timeout", file.store_timeout, "1s")?;
        let shutdown_timeout = duration("shutdown_timeout", file.shutdown_timeout, "30s")?;
        let defaults = Limits::default();
        let l = file.limits;
        let limits = Limits {
            max_body_bytes: l.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_public_keys: l.max_public_keys.unwrap_or(defaults.max_public_keys),
            max_key_bytes: l.max_key_bytes.unwrap_or(defaults.max_key_bytes),
            max_value_bytes: l.max_value_bytes.unwrap_or(defaults.max_value_bytes),
            max_json_depth: l.max_json_depth.unwrap_or(defaults.max_json_depth),
            max_header_bytes: l.max_header_bytes.unwrap_or(defaults.max_header_bytes),
            max_connections: l.max_connections.unwrap_or(defaults.max_connections),
            header_read_timeout: duration("header_read_timeout", file.header_read_timeout, "75s")?,
            request_timeout: duration("request_timeout", file.request_timeout, "30s")?,
            write_timeout: duration("write_timeout", file.write_timeout, "30s")?,
        };
        // hyper keeps a request head in a buffer of at least 8 KiB.
        if limits.max_header_bytes < 8 * 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_header_bytes must be at least 8192".into(),
            ));
        }
        if limits.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_connections must be more than zero".into(),
            ));
        }
        let signing_key_pem = match (file.signing_key_pem, file.signing_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give signing_key_pem or signing_key_file, not both".into(),
                ))
            }
            (Some(pem), None) => Some(pem),
            (None, Some(path)) => {
                let path = base.join(path);
                Some(
                    std::fs::read_to_string(&path)
                        .map_err(|source| ConfigError::Read { path, source })?,
                )
            }
            (None, None) => None,
        };
        if file.accounts.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one [[accounts]] entry is needed".into(),
            ));
        }
        let default_account = file
            .default_account
            .unwrap_or_else(|| file.accounts[0].name.clone());
        if let Some(token) = &file.admin_token {
            if token.len() < 16 || token.trim() != token || token.chars().any(char::is_control) {
                return Err(ConfigError::Invalid(
                    "admin_token must be at least 16 characters, with no space at either end and no control character; leave it out to keep the admin API off".into(),
                ));
            }
        }
        let mut accounts = file.accounts;
        for a in &mut accounts {
            for app in &mut a.apps {
                if let Some(f) = &app.configuration_file {
                    app.configuration_file = Some(base.join(f));
                }
            }
        }
        Ok(Settings {
            source: ConfigSource::Demo,
            metrics_listen,
            shutdown_timeout,
            log_format,
            secure_cookies: file.secure_cookies.unwrap_or(!listen.ip().is_loopback()),
            listen,
            data_dir: o
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            store,
            default_account,
            session_ttl,
            admin_token: file.admin_token,
            store_timeout,
            cache_sessions: file.cache_sessions.unwrap_or_else(default_cache_sessions),
            fast_paths: file.fast_paths.unwrap_or(true),
            signing_key_pem,
            verification_keys_pem: file.verification_keys_pem,
            limits,
            accounts,
        })
    }
}

impl AccountConfig {
    /// The account's commerce data.
    pub fn commerce(&self) -> CommerceData {
        CommerceData {
            sales_channels: self.sales_channels.clone(),
            customers: self.customers.clone(),
            admins: self.admins.clone(),
            delivery_areas: self.delivery_areas.clone(),
            campaigns: self.campaigns.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_configuration_loads() {
        let s = Settings::load(None, Overrides::default()).unwrap();
        assert_eq!(s.default_account, "demo");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(!s.secure_cookies);
        assert_eq!(s.session_ttl, Duration::from_secs(5 * 24 * 3600));
        assert_eq!(s.store, StoreSpec::Embedded);
    }

    #[test]
    fn overrides_win_and_are_checked() {
        let o = Overrides {
            listen: Some("0.0.0.0:9000".into()),
            store: Some("memory".into()),
            data_dir: None,
            log_format: None,
        };
        let s = Settings::load(None, o).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert!(s.secure_cookies, "non-loopback listen defaults to Secure");
        assert_eq!(s.store, StoreSpec::Memory);
        let bad = Overrides {
            store: Some("postgres://x".into()),
            ..Overrides::default()
        };
        assert!(Settings::load(None, bad).is_err());
    }

    #[test]
    fn the_default_cache_is_sized_from_memory() {
        let s = Settings::load(None, Overrides::default()).unwrap();
        assert_eq!(s.cache_sessions, default_cache_sessions());
        assert!((10_000..=4_000_000).contains(&s.cache_sessions));
        // This machine's memory is known, so the default is not the fallback.
        assert!(usable_memory().is_some_and(|bytes| bytes > 0));
        let file = "cache_sessions = 7\n".to_owned() + DEMO_CONFIG;
        let path = std::env::temp_dir().join(format!("cache-{}.toml", std::process::id()));
        std::fs::write(&path, file).unwrap();
        let set = Settings::load(Some(&path), Overrides::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(set.cache_sessions, 7, "a configured size wins");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let file: Result<FileConfig, _> = toml::from_str("lisen = \"x\"");
        assert!(file.is_err());
    }
}
