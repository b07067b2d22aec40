//! The `sessiond` command line: `serve`, `check`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Overrides, Settings};
use crate::tenancy::Tenancy;

/// A self-hostable, VTEX-compatible session manager.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the demo account on the embedded store unless configured otherwise).
    Serve {
        /// Configuration file (TOML); the built-in demo configuration when absent.
        #[arg(long, env = "SESSIOND_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, IP:PORT [default: 127.0.0.1:8080].
        #[arg(long, env = "SESSIOND_LISTEN")]
        listen: Option<String>,
        /// Data directory [default: ./data].
        #[arg(long, env = "SESSIOND_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Store: embedded, memory, redis://HOST:PORT, redis+cluster://HOST:PORT[,HOST:PORT…] [default: embedded].
        #[arg(long, env = "SESSIOND_STORE")]
        store: Option<String>,
    },
    /// Validate the configuration and print each account's apps and their dependencies.
    Check {
        /// Configuration file (TOML); the built-in demo configuration when absent.
        #[arg(long, env = "SESSIOND_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// The report of `sessiond check`: each account's apps and which app feeds which.
pub fn check_report(settings: &Settings) -> Result<String, crate::config::ConfigError> {
    use std::fmt::Write;
    let tenancy = Tenancy::new(&settings.accounts, &settings.default_account)?;
    let mut accounts: Vec<_> = tenancy.accounts().collect();
    accounts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for account in accounts {
        let _ = writeln!(out, "account {} ({})", account.name, account.id);
        let apps = account.apps.apps();
        for (i, app) in apps.iter().enumerate() {
            let feeds: Vec<&str> = apps
                .iter()
                .filter(|other| {
                    app.output.iter().any(|(ns, keys)| {
                        keys.iter().any(|k| {
                            other.watches(&sessiond_core::Key::new(ns.as_str(), k.as_str()))
                        })
                    })
                })
                .map(|other| other.name.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  {}. {}{} -> {}",
                i + 1,
                app.name,
                if app.run_on_create {
                    " (runOnCreate)"
                } else {
                    ""
                },
                if feeds.is_empty() {
                    "-".to_owned()
                } else {
                    feeds.join(", ")
                }
            );
        }
    }
    Ok(out)
}

impl Command {
    /// The settings of `serve`/`check`, from file, environment and flags.
    pub fn settings(&self) -> Result<Settings, crate::config::ConfigError> {
        match self {
            Command::Serve {
                config,
                listen,
                data_dir,
                store,
            } => Settings::load(
                config.as_deref(),
                Overrides {
                    listen: listen.clone(),
                    data_dir: data_dir.clone(),
                    store: store.clone(),
                },
            ),
            Command::Check { config } => Settings::load(config.as_deref(), Overrides::default()),
        }
    }
}
