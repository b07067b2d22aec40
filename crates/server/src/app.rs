//! Building and running the service: store, keys, accounts, router, listener.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::Settings;
use crate::config::StoreSpec;
use crate::http::admin::AdminToken;
use crate::http::connections::ConnectionLimits;
use crate::http::cookies::{CookieLines, CookieStyle};
use crate::http::request::Filters;
use crate::http::{AppState, Observe};
use crate::repo::{open_store, Repository, SessionStore};
use crate::service::SessionService;
use crate::tenancy::Tenancy;
use crate::token::{generate_pem, KeyOrigin, Keyring};

/// The name of the session signing key among the values a shared store keeps.
const SIGNING_KEY: &str = "session-signing-key";

/// How often expired sessions are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    /// The listener of `metrics_listen`, when configured.
    metrics_listener: Option<TcpListener>,
    service: Observe<axum::Router>,
    state: Arc<AppState>,
    store: Arc<dyn SessionStore>,
    shutdown_timeout: Duration,
    connections: ConnectionLimits,
}

impl Application {
    /// Opens the store, loads the keys, builds the accounts and binds the listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// [`Application::build`], serving requests at the time `clock` says (tests set it).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        // Every series is exported from the start, at 0 until something counts.
        crate::telemetry::metrics();
        crate::repo::store_metrics::commits();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            configuration = %settings.source,
            "starting sessiond"
        );
        let tenancy = Arc::new(Tenancy::new(&settings.accounts, &settings.default_account)?);
        tenancy.start();
        for account in tenancy.accounts() {
            let apps: Vec<&str> = account
                .apps
                .index()
                .apps()
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            tracing::info!(
                account = %account.name,
                id = %account.id,
                apps = %apps.join(", "),
                default = account.name == settings.default_account,
                "account"
            );
            for warning in crate::check::app_warnings(account.apps.index().apps()) {
                tracing::warn!(account = %account.name, "{warning}");
            }
        }
        let store = open_store(&settings.store, &settings.data_dir, settings.store_timeout).await?;
        match &settings.store {
            StoreSpec::Embedded => tracing::info!(
                store = "embedded",
                data_dir = %settings.data_dir.display(),
                "store: durable, on disk"
            ),
            StoreSpec::Memory => tracing::warn!(
                store = "memory",
                "store: process memory; every session is lost when the process stops"
            ),
            StoreSpec::Redis(_) => tracing::info!(
                store = %settings.store,
                timeout = ?settings.store_timeout,
                "store: Redis, shared with every process configured alike"
            ),
        }
        let repo = Arc::new(Repository::new(
            store.clone(),
            settings.store_timeout,
            settings.cache_sessions,
        ));
        repo.watch().await?;
        // Processes on a shared store sign with one key: the first one's (a configured PEM
        // still wins); alone, a process keeps its key in its data directory.
        let shared_key = match &settings.signing_key_pem {
            Some(_) => None,
            None if !repo.shared() => None,
            None => repo
                .agree(SIGNING_KEY, generate_pem()?.as_bytes())
                .await?
                .map(String::from_utf8)
                .transpose()
                .context("the shared session signing key is not text")?,
        };
        let keys = Keyring::load(
            settings
                .signing_key_pem
                .as_deref()
                .or(shared_key.as_deref()),
            &settings.verification_keys_pem,
            &settings.data_dir,
        )?;
        let origin = match (keys.origin(), &settings.signing_key_pem, &shared_key) {
            (_, Some(_), _) => "configured".to_owned(),
            (_, None, Some(_)) => "shared through the store".to_owned(),
            (KeyOrigin::Generated(path), ..) => format!("generated into {}", path.display()),
            (KeyOrigin::Loaded(path), ..) => format!("loaded from {}", path.display()),
            (KeyOrigin::Given, ..) => "configured".to_owned(),
        };
        tracing::info!(kid = %keys.kid(), verification_keys = keys.jwks()["keys"].as_array().map_or(0, Vec::len), "session signing key {origin}");
        let jwks = serde_json::to_vec(keys.jwks())
            .context("writing the JWK set")?
            .into();
        // Apps installed at run time (admin API), kept in the store.
        let catalog = Arc::new(Catalog::new(repo.clone(), tenancy.clone()));
        catalog.refresh().await?;
        let service = SessionService::new(
            repo,
            keys,
            settings.session_ttl,
            settings.limits.max_public_keys,
            settings.fast_paths,
        );
        let state = Arc::new(AppState {
            tenancy,
            catalog,
            admin_token: settings.admin_token.as_deref().map(AdminToken::new),
            service,
            limits: settings.limits.clone(),
            clock,
            cookies: CookieLines::new(
                CookieStyle {
                    max_age: settings.session_ttl.as_secs(),
                    secure: settings.secure_cookies,
                },
                settings.fast_paths,
            ),
            filters: Filters::default(),
            fast_paths: settings.fast_paths,
            jwks,
            metrics_here: settings.metrics_listen.is_none(),
        });
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics_listen {addr}"))?,
            ),
            None => None,
        };
        if !settings.secure_cookies && !settings.listen.ip().is_loopback() {
            tracing::warn!("cookies without Secure on a non-loopback address: browsers send them over plain HTTP too");
        }
        tracing::info!(
            addr = %listener.local_addr()?,
            metrics = %metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map_or("on the listen address".to_owned(), |a| a.to_string()),
            secure_cookies = settings.secure_cookies,
            cache_sessions = settings.cache_sessions,
            session_ttl = ?settings.session_ttl,
            shutdown_timeout = ?settings.shutdown_timeout,
            admin_api = settings.admin_token.is_some(),
            "listening"
        );
        Ok(Application {
            listener,
            metrics_listener,
            service: crate::http::service(state.clone()),
            state,
            store,
            shutdown_timeout: settings.shutdown_timeout,
            connections: ConnectionLimits::new(&settings.limits),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The store the sessions are saved in, for tools and tests that read what was saved.
    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` completes, purging expired sessions in the background; then
    /// stops accepting connections, lets the requests in flight finish (for at most
    /// `shutdown_timeout`), and closes the store.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let needs_purge = state.service.needs_purge();
        let purge = tokio::spawn(async move {
            if !needs_purge {
                return;
            }
            let mut tick = tokio::time::interval(PURGE_EVERY);
            loop {
                tick.tick().await;
                match state.service.purge_expired(state.clock.now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired sessions purged"),
                    Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
                }
            }
        });
        // Tells everything that must stop with the server that it is stopping.
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        // On a shared store, other processes' app changes are followed until then.
        self.state.catalog.clone().follow(stopping.clone());
        let until_stopping = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        };
        let metrics = self.metrics_listener.map(|listener| {
            let stopped = until_stopping(stopping.clone());
            let limits = self.connections.clone();
            tokio::spawn(crate::http::connections::serve(
                listener,
                crate::http::metrics_router(),
                limits,
                stopped,
            ))
        });
        let drained = until_stopping(stopping);
        let server =
            crate::http::connections::serve(self.listener, self.service, self.connections, signal);
        let timeout = self.shutdown_timeout;
        tokio::select! {
            () = server => {},
            () = async move {
                drained.await;
                tokio::time::sleep(timeout).await;
            } => {
                tracing::warn!(?timeout, "requests still in flight after shutdown_timeout; stopping without them");
            }
        };
        purge.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        // The last handles of the store: the embedded one finishes its writes and closes.
        drop(self.state);
        drop(self.store);
        tracing::info!("stopped");
        Ok(())
    }
}
