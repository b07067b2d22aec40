//! Building and running the service: store, keys, accounts, router, listener.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Settings;
use crate::http::cookies::{CookieLines, CookieStyle};
use crate::http::request::Filters;
use crate::http::{router, AppState};
use crate::repo::{open_store, Repository, SessionStore};
use crate::service::SessionService;
use crate::tenancy::Tenancy;
use crate::token::{generate_pem, Keyring};

/// The name of the session signing key among the values a shared store keeps.
const SIGNING_KEY: &str = "session-signing-key";

/// How often expired sessions are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: Arc<AppState>,
    store: Arc<dyn SessionStore>,
}

impl Application {
    /// Opens the store, loads the keys, builds the accounts and binds the listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// [`Application::build`], serving requests at the time `clock` says (tests set it).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let tenancy = Tenancy::new(&settings.accounts, &settings.default_account)?;
        tenancy.start();
        for account in tenancy.accounts() {
            for warning in crate::cli::app_warnings(account.apps.index().apps()) {
                tracing::warn!(account = %account.name, "{warning}");
            }
        }
        let store = open_store(&settings.store, &settings.data_dir, settings.store_timeout).await?;
        let repo = Repository::new(
            store.clone(),
            settings.store_timeout,
            settings.cache_sessions,
        );
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
        let service = SessionService::new(
            repo,
            keys,
            settings.session_ttl,
            settings.limits.max_public_keys,
            settings.fast_paths,
        );
        let state = Arc::new(AppState {
            tenancy,
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
        });
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        Ok(Application {
            listener,
            router: router(state.clone()),
            state,
            store,
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

    /// Serves until `shutdown` completes, purging expired sessions in the background.
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
        let result = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        purge.abort();
        result
    }
}
