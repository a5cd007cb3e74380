//! The process-wide shutdown signal, handed to every server and worker.
//!
//! [`Shutdown`] is a cheap, clonable handle. It fires once — on Ctrl-C or SIGTERM
//! (after [`Shutdown::listen_for_signals`]) or on [`Shutdown::trigger`] — and every
//! clone observes it, including clones that start waiting after it fired. A second
//! Ctrl-C/SIGTERM while shutting down exits the process immediately (code 130), so
//! a stuck shutdown can always be interrupted.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// A clonable shutdown signal.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that only fires on [`Shutdown::trigger`].
    pub(crate) fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    /// A signal that also fires on Ctrl-C or SIGTERM. Must be called from within
    /// a Tokio runtime.
    pub(crate) fn with_signals() -> Self {
        let shutdown = Self::new();
        shutdown.listen_for_signals();
        shutdown
    }

    /// Spawns a task that triggers this signal on Ctrl-C or SIGTERM, and exits the
    /// process on a second one. Must be called from within a Tokio runtime.
    pub(crate) fn listen_for_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            let name = os_signal().await;
            tracing::info!(
                signal = name,
                "shutting down; send it again to exit immediately"
            );
            shutdown.trigger();
            let name = os_signal().await;
            tracing::warn!(
                signal = name,
                "second signal: exiting without a clean shutdown"
            );
            std::process::exit(130);
        });
    }

    /// Fires the signal (idempotent).
    pub(crate) fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Completes once the signal has fired (immediately if it already has).
    pub(crate) async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// A `'static` future completing when the signal fires, for APIs that take
    /// ownership of a shutdown future (e.g. tonic's `serve_with_shutdown`).
    pub(crate) fn wait_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        let shutdown = self.clone();
        async move { shutdown.wait().await }
    }
}

/// Waits for Ctrl-C or SIGTERM and returns the signal's name.
async fn os_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops amai");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn trigger_wakes_every_clone_including_late_ones() {
        let shutdown = Shutdown::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = shutdown.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        let owned = tokio::spawn(shutdown.wait_owned());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!*shutdown.tx.borrow());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), shutdown.wait())
                .await
                .is_err()
        );
        shutdown.clone().trigger();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(1), w)
                .await
                .expect("woken")
                .expect("join");
        }
        tokio::time::timeout(Duration::from_secs(1), owned)
            .await
            .expect("woken")
            .expect("join");
        assert!(*shutdown.tx.borrow());
        // Late waiters complete at once; triggering twice is fine.
        shutdown.trigger();
        tokio::time::timeout(Duration::from_millis(100), shutdown.wait())
            .await
            .expect("already fired");
    }

    /// Runs in a child process (see `sigterm_fires_the_signal`): it signals itself.
    #[tokio::test]
    async fn sigterm_probe_child() {
        if std::env::var_os("AMAI_SHUTDOWN_TEST_PROBE").is_none() {
            return;
        }
        let shutdown = Shutdown::with_signals();
        tokio::time::sleep(Duration::from_millis(50)).await; // let the listener register
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("SIGTERM fires the signal");
    }

    #[test]
    fn sigterm_fires_the_signal() {
        crate::test_support::run_probe_child(
            "shutdown::tests::sigterm_probe_child",
            &[("AMAI_SHUTDOWN_TEST_PROBE", "1")],
        );
    }
}
