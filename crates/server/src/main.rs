//! The `sessiond` binary.

use clap::Parser;
use sessiond::cli::{auth_token, check_report, Cli, Command};
use sessiond::Application;

/// mimalloc instead of the system allocator: a request allocates many small short-lived
/// buffers, and the store's memtables churn; see BENCHMARKS.md for what it bought.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SESSIOND_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = cli.command.settings()?;
    match cli.command {
        Command::Check { .. } => {
            print!("{}", check_report(&settings)?);
            println!("configuration ok");
            Ok(())
        }
        Command::AuthToken {
            ref account,
            ref email,
            admin,
            ref signing_key,
            ..
        } => {
            let token = auth_token(&settings, account, email, admin, signing_key.as_deref())
                .map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
        Command::Serve { .. } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(settings)),
    }
}

async fn serve(settings: sessiond::config::Settings) -> anyhow::Result<()> {
    let cache_sessions = settings.cache_sessions;
    let app = Application::build(settings).await?;
    let addr = app.local_addr()?;
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("sessiond listening on http://{addr}");
    tracing::info!(%addr, cache_sessions, "listening");
    app.run_until(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
