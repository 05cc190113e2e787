//! The `tokengate` binary.

use clap::Parser;
use tokengate_core::Revocation;
use tokengate_server::cli::{backup, run_admin, Cli, Command};
use tokengate_server::config::Config;
use tokengate_server::{init_tracing, serve, server::open_store};
use tokengate_store::RedisBus;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config()?;
    init_tracing(config.log_format);
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        // Never through open_store: it would create (and migrate) a missing database.
        Command::Backup(args) => backup(&config, args).await,
        command => {
            let store = open_store(&config).await?;
            let recorded = run_admin(command, &config, store).await?;
            push_to_cluster(&config, &recorded).await;
            Ok(())
        }
    }
}

/// In a cluster, push what an admin command recorded so every node applies it at once.
/// It is already durable: if Redis cannot be reached, the nodes still read it from the
/// database within a second, so this only warns.
async fn push_to_cluster(config: &Config, recorded: &[Revocation]) {
    let (Some(url), false) = (&config.redis_url, recorded.is_empty()) else {
        return;
    };
    let pushed = match RedisBus::connect(url, &config.redis_namespace).await {
        Ok(bus) => bus.publish(recorded).await,
        Err(error) => Err(error),
    };
    if let Err(error) = pushed {
        eprintln!("warning: could not push to the cluster ({error}); nodes will read it from the database within a second");
    }
}
