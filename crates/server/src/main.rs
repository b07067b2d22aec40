//! The `sessiond` binary.

use clap::Parser;
use sessiond::cli::{auth_token, check_graph, check_report, CheckFormat, Cli, Command};
use sessiond::config::{LogFormat, Settings};
use sessiond::{telemetry, Application};

/// mimalloc instead of the system allocator: a request allocates many small short-lived
/// buffers, and the store's memtables churn; see BENCHMARKS.md for what it bought.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each cause once: a cause whose text the message above it already
/// holds (a configuration error quoting its TOML error, say) is not repeated.
fn report(error: &anyhow::Error) -> String {
    let mut out = format!("Error: {error}");
    let mut shown = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
            shown = text;
        }
    }
    out
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.command.settings();
    telemetry::init_logs(
        settings
            .as_ref()
            .map(|s| s.log_format)
            .unwrap_or(LogFormat::Text),
    );
    let settings = settings?;
    match cli.command {
        Command::Check { format, .. } => {
            if format == CheckFormat::Text {
                print!("{}", check_report(&settings)?);
                println!("configuration ok");
            } else {
                print!("{}", check_graph(&settings, format)?);
            }
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let addr = app.local_addr()?;
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("sessiond listening on http://{addr}");
    app.run_until(signal()).await?;
    Ok(())
}

/// Completes at the first SIGTERM or SIGINT; a second one ends the process at once.
async fn signal() {
    let first = next_signal().await;
    tracing::info!(signal = first, "shutting down");
    tokio::spawn(async {
        let second = next_signal().await;
        tracing::warn!(signal = second, "second signal: exiting at once");
        std::process::exit(if second == "SIGINT" { 130 } else { 143 });
    });
}

/// The name of the next SIGTERM or SIGINT received.
async fn next_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; never stop on our own.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
