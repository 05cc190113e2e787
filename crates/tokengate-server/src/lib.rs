//! The `tokengate` server: an HTTP shell over the session service of
//! [`tokengate_sessions`], with its configuration and command line.
//!
//! - [`config`]: the one place configuration is read (defaults < file < env < flags).
//! - [`connections`]: the listener, with a connection limit and header and body deadlines.
//! - [`cli`]: `serve` and the admin commands (store-only operations of the service).
//! - [`server`]: start-up (the session service, which loads the keys and the live
//!   revocation set, and its maintenance task; then the gate over them).
//! - [`routes`]: the HTTP API of `docs/api.md`: each handler parses, calls the service, and maps
//!   the service's error to an answer ([`error`]).
//! - [`openapi`]: its OpenAPI document, generated from the handlers, at `GET /openapi.json`.
//! - [`state`]: what handlers share: the service, the gate, the configuration, the metrics.
//! - [`headers`]: security headers; [`trace`]: the request id and span of every request.
//! - [`pages`]: the server-rendered sign-in and "your sessions" pages (cookie session,
//!   CSRF), over the same service calls as the API.
//! - [`metrics`]: `GET /metrics` (Prometheus text) and what feeds it.

pub mod cli;
pub mod client;
pub mod config;
pub mod connections;
pub mod error;
pub mod headers;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod routes;
pub mod schema;
pub mod server;
pub mod state;
#[cfg(test)]
mod test_log;
pub mod trace;

use std::sync::Arc;

use tokengate_core::SystemClock;

use crate::config::{Config, LogFormat};
use crate::server::{open_store, Node};

/// Start logging. Lines never carry tokens, passwords, hashes or keys: handlers log ids only.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `tokengate serve`: open the store, load the index, listen until SIGTERM or Ctrl-C, then
/// finish in-flight requests and flush.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let listen = config.listen;
    let node = Node::start(config, Arc::new(SystemClock), store).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("tokengate listening on http://{addr}");
    let app = routes::router(node.state.clone());
    let limits = connections::ConnectionLimits::from_config(&node.state.config);
    let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
    let server = connections::serve(listener, app, limits, async move {
        shutdown_signal().await;
        let _ = signalled.send(true);
    });
    let mut server = tokio::spawn(server);
    tokio::select! {
        finished = &mut server => finished?,
        _ = on_signal.changed() => {
            tracing::info!("shutting down: finishing in-flight requests");
            // Long-lived responses (the revocation event stream) never finish by
            // themselves: give in-flight requests a bounded time, then stop anyway.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(finished) => finished?,
                Err(_) => {
                    tracing::warn!("requests still open after the grace period; closing them");
                    server.abort();
                }
            }
        }
    }
    node.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for in-flight requests before closing them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
