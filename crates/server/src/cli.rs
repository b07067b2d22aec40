//! The `sessiond` command line: `serve`, `check`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::check::{conditions, feeds, linking_keys, warnings};
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
        /// Store: embedded, memory, redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS),
        /// redis+cluster://HOST:PORT[,HOST:PORT…] [default: embedded].
        #[arg(long, env = "SESSIOND_STORE")]
        store: Option<String>,
        /// Log format: text or json [default: text].
        #[arg(long, env = "SESSIOND_LOG_FORMAT")]
        log_format: Option<String>,
    },
    /// Validate the configuration and print each account's apps and their dependencies.
    Check {
        /// Configuration file (TOML); the built-in demo configuration when absent.
        #[arg(long, env = "SESSIOND_CONFIG")]
        config: Option<PathBuf>,
        /// What to print: the report (text), or the app dependency graph for Graphviz (dot) or
        /// Mermaid (mermaid).
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
    },
    /// Print an identity token (the VtexIdclientAutCookie value) with VTEX ID's claims, signed
    /// with the account's identity key: for demos and tests.
    AuthToken {
        /// The account whose identity key signs the token.
        #[arg(long)]
        account: String,
        /// The user's email (the token's `sub`).
        #[arg(long)]
        email: String,
        /// Mint an admin token (VtexIdclientAutCookie) instead of a store-user token.
        #[arg(long)]
        admin: bool,
        /// For an account whose identity is a `public_key_pem`: the private key (PEM file)
        /// that signs its tokens.
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
        /// Configuration file (TOML); the built-in demo configuration when absent.
        #[arg(long, env = "SESSIOND_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// What `sessiond check` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// Each account's apps, which feeds which, and warnings.
    Text,
    /// The app dependency graph in Graphviz's DOT language.
    Dot,
    /// The app dependency graph as a Mermaid flowchart.
    Mermaid,
}

/// Lifetime of tokens minted by `auth-token`.
const AUTH_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// The identity token `sessiond auth-token` prints: `userId` is the customer's (or, with
/// `admin`, the admin's) id when the email is known, else a stable id derived from the email.
/// With `signing_key` (a PEM file), signs with that private key (the account's identity is a
/// public key); else with the account's `hs256_secret`.
pub fn auth_token(
    settings: &Settings,
    account: &str,
    email: &str,
    admin: bool,
    signing_key: Option<&std::path::Path>,
) -> Result<String, String> {
    if email.trim().is_empty() || !email.contains('@') {
        return Err(format!("`{email}` is not an email address"));
    }
    let tenancy =
        Tenancy::new(&settings.accounts, &settings.default_account).map_err(|e| e.to_string())?;
    let acct = tenancy
        .find(account)
        .ok_or_else(|| format!("no account named `{account}` is configured"))?;
    let known = if admin {
        acct.commerce
            .admins
            .iter()
            .find(|a| a.email.eq_ignore_ascii_case(email))
            .map(|a| a.id.clone())
    } else {
        acct.commerce
            .customers
            .iter()
            .find(|c| c.email.eq_ignore_ascii_case(email))
            .map(|c| c.id.clone())
    };
    let user_id = known.unwrap_or_else(|| {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            email.to_ascii_lowercase().as_bytes(),
        )
        .to_string()
    });
    let signing_key = signing_key
        .map(|path| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))
        })
        .transpose()?;
    let what = sessiond_apps::identity::Mint {
        account: &acct.name,
        email,
        user_id: &user_id,
        admin,
        now_secs: crate::clock::system_ms() / 1000,
        ttl_secs: AUTH_TOKEN_TTL_SECS,
    };
    sessiond_apps::identity::mint(acct.identity.identity(), &what, signing_key.as_deref())
}

/// The report of `sessiond check`: each account's apps, which app feeds which, and warnings
/// (overlapping outputs, inputs nothing writes, feedback cycles).
pub fn check_report(settings: &Settings) -> Result<String, crate::config::ConfigError> {
    use std::fmt::Write;
    let tenancy = Tenancy::new(&settings.accounts, &settings.default_account)?;
    let mut accounts = tenancy.accounts();
    accounts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for account in accounts {
        let _ = writeln!(out, "account {} ({})", account.name, account.id);
        let apps = account.apps.index().apps();
        let feeds = feeds(apps);
        for (i, app) in apps.iter().enumerate() {
            let names: Vec<&str> = feeds[i].iter().map(|&j| apps[j].name.as_str()).collect();
            let _ = writeln!(
                out,
                "  {}. {}{}{} -> {}",
                i + 1,
                app.name,
                if app.run_on_create {
                    " (runOnCreate)"
                } else {
                    ""
                },
                conditions(app),
                if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.join(", ")
                }
            );
        }
        for warning in warnings(apps, &feeds) {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    Ok(out)
}

/// The app dependency graph of every account (`sessiond check --format dot|mermaid`): apps
/// as nodes (runOnCreate apps marked), an edge from an app to each app that watches one of its
/// outputs, labelled with those keys.
pub fn check_graph(
    settings: &Settings,
    format: CheckFormat,
) -> Result<String, crate::config::ConfigError> {
    use std::fmt::Write;
    let tenancy = Tenancy::new(&settings.accounts, &settings.default_account)?;
    let mut accounts = tenancy.accounts();
    accounts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    if format == CheckFormat::Mermaid {
        out.push_str("flowchart LR\n");
    }
    for (n, account) in accounts.iter().enumerate() {
        let apps = account.apps.index().apps();
        let feeds = feeds(apps);
        // Quoted for both languages: `"` and `\` cannot stand in a label as they are.
        let quoted = |text: &str| text.replace(['"', '\\'], "'");
        match format {
            CheckFormat::Dot => {
                let _ = writeln!(out, "digraph \"{}\" {{", quoted(&account.name));
                out.push_str("  rankdir=LR;\n  node [shape=box];\n");
                for app in apps {
                    let style = if app.run_on_create {
                        ", style=bold"
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        out,
                        "  \"{}\" [label=\"{}{}\"{style}];",
                        quoted(&app.name),
                        quoted(&app.name),
                        if app.run_on_create {
                            "\\n(runOnCreate)"
                        } else {
                            ""
                        }
                    );
                }
                for (i, targets) in feeds.iter().enumerate() {
                    for &j in targets {
                        let _ = writeln!(
                            out,
                            "  \"{}\" -> \"{}\" [label=\"{}\"];",
                            quoted(&apps[i].name),
                            quoted(&apps[j].name),
                            linking_keys(&apps[i], &apps[j])
                                .iter()
                                .map(|k| quoted(k))
                                .collect::<Vec<_>>()
                                .join("\\n")
                        );
                    }
                }
                out.push_str("}\n");
            }
            CheckFormat::Mermaid => {
                let _ = writeln!(out, "  subgraph a{n}[\"{}\"]", quoted(&account.name));
                for (i, app) in apps.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "    a{n}_{i}[\"{}{}\"]",
                        quoted(&app.name),
                        if app.run_on_create {
                            "<br/>(runOnCreate)"
                        } else {
                            ""
                        }
                    );
                }
                for (i, targets) in feeds.iter().enumerate() {
                    for &j in targets {
                        let _ = writeln!(
                            out,
                            "    a{n}_{i} -->|\"{}\"| a{n}_{j}",
                            linking_keys(&apps[i], &apps[j])
                                .iter()
                                .map(|k| quoted(k))
                                .collect::<Vec<_>>()
                                .join("<br/>")
                        );
                    }
                }
                out.push_str("  end\n");
            }
            CheckFormat::Text => {}
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
                log_format,
            } => Settings::load(
                config.as_deref(),
                Overrides {
                    listen: listen.clone(),
                    data_dir: data_dir.clone(),
                    store: store.clone(),
                    log_format: log_format.clone(),
                },
            ),
            Command::Check { config, .. } | Command::AuthToken { config, .. } => {
                Settings::load(config.as_deref(), Overrides::default())
            }
        }
    }
}
