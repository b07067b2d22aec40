//! The apps installed at run time (admin API): changes to the configured apps of each account,
//! kept in the store's `apps` setting. Every process on a shared store (Redis) follows it,
//! reading it every [`FOLLOW_EVERY`]; the embedded store keeps it across restarts. The
//! configuration file gives the starting set (and is the place for built-ins' data and
//! secrets); the setting says, per account, which apps were installed or replaced through the
//! admin API and which configured ones were uninstalled.
//!
//! A change is read, applied and written back with compare-and-swap on the setting's bytes, so
//! two administrators changing apps at once through two processes lose neither change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{AppConfig, ConfigError};
use crate::repo::{Repository, StoreError};
use crate::tenancy::{Account, Tenancy};

/// The setting the installed apps are kept in.
pub const SETTING: &str = "apps";

/// How often a process on a shared store reads the setting again.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Most compare-and-swap attempts of one change.
const ATTEMPTS: usize = 16;

/// The changes to the configured apps, by account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// By account name.
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountChanges>,
}

/// The changes to one account's configured apps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountChanges {
    /// Apps installed or replaced, in the order they were first installed. One named like a
    /// configured app takes its place (and precedence); the others come after the configured
    /// ones.
    #[serde(default)]
    pub installed: Vec<AppConfig>,
    /// Configured apps uninstalled.
    #[serde(default)]
    pub removed: Vec<String>,
}

impl AccountChanges {
    /// The apps of an account configured with `configured`, after these changes. An app that
    /// takes the place of a configured one keeps that one's `secret`: secrets stay in the
    /// configuration file (never in the store, never shown by the admin API), and replacing a
    /// signed app through the admin API must not leave its calls unsigned.
    pub fn apply(&self, configured: &[AppConfig]) -> Vec<AppConfig> {
        let mut apps: Vec<AppConfig> = configured
            .iter()
            .filter(|app| !self.removed.contains(&app.name))
            .map(
                |app| match self.installed.iter().find(|i| i.name == app.name) {
                    Some(installed) => AppConfig {
                        secret: app.secret.clone(),
                        ..installed.clone()
                    },
                    None => app.clone(),
                },
            )
            .collect();
        for app in &self.installed {
            if !configured.iter().any(|c| c.name == app.name) {
                apps.push(app.clone());
            }
        }
        apps
    }
}

/// Why a change of apps failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No account has that name.
    #[error("no account is named `{0}`")]
    NoAccount(String),
    /// The account has no app of that name.
    #[error("account `{account}` has no app named `{app}`")]
    NoApp {
        /// The account.
        account: String,
        /// The app.
        app: String,
    },
    /// The apps would not validate (the message names the app and the field).
    #[error("{0}")]
    Invalid(String),
    /// The store failed or did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other processes kept changing the apps.
    #[error("the apps kept changing under this request; try again")]
    Busy,
}

/// The apps installed at run time, over the configured ones.
pub struct Catalog {
    repo: Arc<Repository>,
    tenancy: Arc<Tenancy>,
    /// The setting's bytes as last applied (`None`: never set). Held from reading the setting
    /// to installing what it says, so that a refresh and a change in this process (or two
    /// changes) install their apps in the order they read and wrote the setting.
    applied: tokio::sync::Mutex<Option<Vec<u8>>>,
}

/// What an install did.
pub struct Installed {
    /// The account as it now stands.
    pub account: Arc<Account>,
    /// Whether the app is new to the account (else it replaced one of the same name).
    pub created: bool,
}

impl Catalog {
    /// A catalog of `tenancy`'s accounts, kept in `repo`'s store.
    pub fn new(repo: Arc<Repository>, tenancy: Arc<Tenancy>) -> Self {
        Catalog {
            repo,
            tenancy,
            applied: tokio::sync::Mutex::new(None),
        }
    }

    /// Reads the setting and installs what it says, if it changed since last read. An account
    /// whose changed apps do not validate here (this process's configuration differs) keeps its
    /// apps, with a warning.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut applied = self.applied.lock().await;
        let stored = self.repo.setting(SETTING).await?;
        if *applied == stored {
            return Ok(());
        }
        let changes = parse(stored.as_deref()).unwrap_or_else(|e| {
            tracing::warn!("the stored `{SETTING}` setting is unreadable, ignored: {e}");
            Changes::default()
        });
        for account in self.tenancy.accounts() {
            let configured = self.tenancy.configured_apps(&account.name).unwrap_or(&[]);
            let apps = changes
                .accounts
                .get(&account.name)
                .map_or_else(|| configured.to_vec(), |c| c.apply(configured));
            if apps == account.entries {
                continue;
            }
            match self.tenancy.with_apps(&account.name, &apps) {
                Ok(next) => {
                    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
                    tracing::info!(account = %account.name, apps = %names.join(", "), "apps changed");
                    self.tenancy.replace(Arc::new(next));
                }
                Err(e) => tracing::warn!(
                    account = %account.name,
                    "the stored apps do not validate here; keeping the current ones: {e}"
                ),
            }
        }
        *applied = stored;
        Ok(())
    }

    /// On a shared store, reads the setting every [`FOLLOW_EVERY`] until `stop` says so.
    pub fn follow(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if !self.repo.shared() {
            return;
        }
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FOLLOW_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = self.refresh().await {
                    tracing::debug!("cannot read the installed apps: {e}");
                }
            }
        });
    }

    /// Installs `app` in `account` (replacing the app of the same name), validated as
    /// `sessiond check` validates, stored, and in force in this process at once.
    /// An app that takes the place of a configured one keeps that one's `secret` (see
    /// [`AccountChanges::apply`]).
    pub async fn install(
        &self,
        account: &str,
        mut app: AppConfig,
    ) -> Result<Installed, CatalogError> {
        let name = app.name.clone();
        app.secret = None;
        self.change(account, |changes, configured, current| {
            let created = !current.iter().any(|a| a.name == name);
            changes.removed.retain(|r| *r != name);
            match changes.installed.iter_mut().find(|a| a.name == name) {
                Some(installed) => *installed = app.clone(),
                None => changes.installed.push(app.clone()),
            }
            // A configured app that is installed unchanged needs no entry.
            let unsigned = |a: &AppConfig| AppConfig {
                secret: None,
                ..a.clone()
            };
            if configured.iter().any(|c| unsigned(c) == app) {
                changes.installed.retain(|a| a.name != name);
            }
            Ok(created)
        })
        .await
        .map(|(account, created)| Installed { account, created })
    }

    /// Uninstalls app `name` of `account`.
    pub async fn uninstall(&self, account: &str, name: &str) -> Result<Arc<Account>, CatalogError> {
        self.change(account, |changes, configured, current| {
            if !current.iter().any(|a| a.name == name) {
                return Err(CatalogError::NoApp {
                    account: account.to_owned(),
                    app: name.to_owned(),
                });
            }
            changes.installed.retain(|a| a.name != name);
            if configured.iter().any(|a| a.name == name)
                && !changes.removed.iter().any(|r| r == name)
            {
                changes.removed.push(name.to_owned());
            }
            Ok(())
        })
        .await
        .map(|(account, ())| account)
    }

    /// Applies `edit` to the stored changes of `account` (given them, its configured apps and
    /// its current ones), validates the result, stores it with compare-and-swap (again from
    /// the newer setting when another process stored first), and installs it here.
    async fn change<T>(
        &self,
        account: &str,
        edit: impl Fn(&mut AccountChanges, &[AppConfig], &[AppConfig]) -> Result<T, CatalogError>,
    ) -> Result<(Arc<Account>, T), CatalogError> {
        let current = self
            .tenancy
            .find(account)
            .ok_or_else(|| CatalogError::NoAccount(account.to_owned()))?;
        let configured = self.tenancy.configured_apps(&current.name).unwrap_or(&[]);
        let mut applied = self.applied.lock().await;
        for _ in 0..ATTEMPTS {
            let stored = self.repo.setting(SETTING).await?;
            // Unreadable (written by another version, say): never overwritten from here.
            let mut changes = parse(stored.as_deref()).map_err(|e| {
                CatalogError::Invalid(format!(
                    "the stored apps cannot be read by this version ({e}); change them where they can"
                ))
            })?;
            let entry = changes.accounts.entry(current.name.clone()).or_default();
            let before = entry.apply(configured);
            let result = edit(entry, configured, &before)?;
            let apps = entry.apply(configured);
            if entry.installed.is_empty() && entry.removed.is_empty() {
                changes.accounts.remove(&current.name);
            }
            let next = self
                .tenancy
                .with_apps(&current.name, &apps)
                .map_err(|e| match e {
                    ConfigError::Invalid(m) => CatalogError::Invalid(m),
                    other => CatalogError::Invalid(other.to_string()),
                })?;
            let bytes = serde_json::to_vec(&changes).expect("the changes serialise");
            match self
                .repo
                .put_setting(SETTING, &bytes, stored.as_deref())
                .await
            {
                Ok(()) => {
                    let next = Arc::new(next);
                    self.tenancy.replace(next.clone());
                    *applied = Some(bytes);
                    return Ok((next, result));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CatalogError::Busy)
    }
}

/// The stored changes (none when the setting is missing), or why they cannot be read.
fn parse(stored: Option<&[u8]>) -> Result<Changes, serde_json::Error> {
    match stored {
        None => Ok(Changes::default()),
        Some(bytes) => serde_json::from_slice(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, url: &str) -> AppConfig {
        AppConfig {
            name: name.into(),
            url: Some(url.into()),
            ..AppConfig::default()
        }
    }

    #[test]
    fn changes_replace_in_place_append_and_remove() {
        let configured = vec![
            app("a", "http://a/"),
            app("b", "http://b/"),
            app("c", "http://c/"),
        ];
        let changes = AccountChanges {
            installed: vec![app("x", "http://x/"), app("b", "http://b2/")],
            removed: vec!["c".into()],
        };
        let names: Vec<(String, Option<String>)> = changes
            .apply(&configured)
            .into_iter()
            .map(|a| (a.name, a.url))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a".into(), Some("http://a/".into())),
                ("b".into(), Some("http://b2/".into())),
                ("x".into(), Some("http://x/".into())),
            ]
        );
        assert_eq!(AccountChanges::default().apply(&configured), configured);
    }
}
