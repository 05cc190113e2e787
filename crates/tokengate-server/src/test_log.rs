//! Test support: a log writer that keeps every line it is given, for tests that assert on
//! what the server logs.
//!
//! `tracing` caches per call site whether anyone listens, across all threads: a test that
//! installs its own subscriber while another does the same can find its events or spans
//! cached as disabled. Tests that capture logs therefore take [`CAPTURE`] for the whole
//! capture and rebuild that cache once their subscriber is in place.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::SubscriberBuilder;

/// Held by a test while it captures logs.
pub(crate) static CAPTURE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A shared buffer that a `tracing` subscriber writes into.
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// A plain-text subscriber builder writing into this buffer.
    pub(crate) fn subscriber(
        &self,
    ) -> SubscriberBuilder<
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        tracing_subscriber::filter::LevelFilter,
        impl for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
    > {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
    }

    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
