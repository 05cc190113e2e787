//! The `tokengate` binary.

use clap::Parser;
use tokengate_server::cli::{run_admin, Cli, Command};
use tokengate_server::{init_tracing, serve, server::open_store};

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
        command => {
            let store = open_store(&config).await?;
            run_admin(command, &config, store).await
        }
    }
}
