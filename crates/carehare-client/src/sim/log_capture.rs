//! Log lines captured as text, for tests that search them (for a warning
//! that must not be there, or a password): the client's own tests and the
//! live suite's (public as `testing::Captured`).

use std::sync::{Arc, Mutex};

/// Everything a [`subscriber`](Self::subscriber) of it logged, as plain
/// text. Clones share the buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// A subscriber that writes every event at `level` and above (with its
    /// spans) into this capture, without colours.
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// Sets [`subscriber`](Self::subscriber) as this thread's default until
    /// the guard is dropped.
    ///
    /// A callsite first hit on another thread while no subscriber wanted
    /// it can have its interest cached as "never", and then this thread
    /// never sees it: a warning that must not be there would go unseen. So
    /// the first call also makes the process's global subscriber one that
    /// wants everything and writes nowhere, which keeps every callsite's
    /// interest open, and each call rebuilds the interest cache for
    /// callsites cached before. Not for a test binary whose own global
    /// subscriber is the capture.
    pub fn on_this_thread(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        static EVERYTHING: std::sync::Once = std::sync::Once::new();
        EVERYTHING.call_once(|| {
            let sink = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(std::io::sink)
                .finish();
            // Another global subscriber already set wants what it wants;
            // the rebuild below still fixes the cache against it.
            let _ = tracing::subscriber::set_global_default(sink);
        });
        let guard = tracing::subscriber::set_default(self.subscriber(level));
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
