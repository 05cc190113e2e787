//! The `tokengate` binary.

use clap::Parser;
use tokengate_core::Revocation;
use tokengate_server::cli::{backup, run_admin, Cli, Command};
use tokengate_server::config::Config;
use tokengate_server::{init_tracing, serve, server::open_store};
use tokengate_store::RedisBus;

/// jemalloc rather than glibc's malloc: after a bulk import of 1 000 000 revocations glibc
/// kept 139 MiB against 69 MiB for the same server restarted on the same data (freed
/// tables and request buffers stay in its arenas); jemalloc with its background thread
/// gives them back (see BENCHMARKS.md, "Memory").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    return_freed_memory_when_idle();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// jemalloc gives freed pages back to the OS (after its 10 s decay) only when something
/// allocates, unless its background thread does it: without it an idle server keeps
/// what a burst freed.
fn return_freed_memory_when_idle() {
    #[cfg(not(target_env = "msvc"))]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: jemalloc's background thread did not start ({error}); freed memory is returned only under load");
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
