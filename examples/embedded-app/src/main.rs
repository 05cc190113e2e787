//! `embedded-app`: parse the command line and run the app (see the library's docs).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tokengate_example_embedded::{run, Options, SeedUser};

/// An axum app that embeds tokengate: /login, /hello, /logout and /ws.
#[derive(Parser)]
struct Args {
    /// Directory holding app.db (users, sessions, the signing key, revocations).
    #[arg(long, default_value = "./example-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Create this user if missing; repeatable.
    #[arg(long = "user", value_name = "EMAIL:PASSWORD")]
    users: Vec<SeedUser>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    run(Options {
        data_dir: args.data_dir,
        listen: args.listen,
        users: args.users,
    })
    .await
}
