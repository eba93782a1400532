//! The watch streams' resilience and health.
//!
//! Each watch stream (AppBundles, Deployments, Services) backs off on its own, 250 ms doubling to
//! at most 5 s and reset by the first event that gets through, so after an API-server restart
//! every stream is back within seconds. (kube-runtime's Controller otherwise puts all trigger
//! streams behind one shared backoff that grows to 30 s and resets only after two quiet minutes:
//! every stream's reconnect error after an outage pushed all of them further out.)
//!
//! [`WatchHealth`] records each stream's errors: `/readyz` says not ready while a stream keeps
//! failing, and `kubundle_watch_errors_total{resource}` counts them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::utils::{Backoff, StreamBackoff};
use kube::runtime::watcher;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// Longest pause between two attempts of one watch stream.
pub const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(5);

/// A watch stream counts as failing while its last error is this recent and no event came since:
/// a stream that keeps failing errs at least every [`MAX_WATCH_BACKOFF`].
const FAILING_WINDOW: Duration = Duration::from_secs(10);

/// Exponential backoff of one watch stream: 250 ms, 500 ms, 1 s, 2 s, 4 s, 5 s, 5 s, ...
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: Duration::from_millis(250),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(MAX_WATCH_BACKOFF);
        Some(current)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = WatchBackoff::default();
    }
}

/// A Controller trigger backoff that never waits: the streams back off on their own.
#[derive(Debug, Clone, Default)]
pub struct NoBackoff;

impl Iterator for NoBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for NoBackoff {
    fn reset(&mut self) {}
}

/// The health of the watch streams, shared with `/readyz`.
#[derive(Debug)]
pub struct WatchHealth {
    names: Vec<&'static str>,
    /// Per stream, the time of its last error while no event has come since.
    last_errors: Mutex<Vec<Option<Instant>>>,
}

impl WatchHealth {
    /// Health of the streams watching these resources.
    pub fn new(names: &[&'static str]) -> Self {
        WatchHealth {
            names: names.to_vec(),
            last_errors: Mutex::new(vec![None; names.len()]),
        }
    }

    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| *n == name)
            .expect("a stream registered in WatchHealth::new")
    }

    fn record(&self, name: &str, at: Instant, ok: bool) {
        let i = self.index(name);
        self.last_errors.lock().unwrap()[i] = if ok { None } else { Some(at) };
    }

    /// The resources whose watch is failing at `now`; empty when all are healthy.
    pub fn failing_at(&self, now: Instant) -> Vec<&'static str> {
        let last_errors = self.last_errors.lock().unwrap();
        self.names
            .iter()
            .zip(last_errors.iter())
            .filter(|(_, e)| e.is_some_and(|t| now.saturating_duration_since(t) < FAILING_WINDOW))
            .map(|(n, _)| *n)
            .collect()
    }

    /// [`WatchHealth::failing_at`] now.
    pub fn failing(&self) -> Vec<&'static str> {
        self.failing_at(Instant::now())
    }
}

/// Wraps a watch stream: its own backoff, errors logged (once per outage), counted and recorded
/// in `health`.
pub fn resilient<S, T>(
    name: &'static str,
    stream: S,
    health: std::sync::Arc<WatchHealth>,
    metrics: Metrics,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
{
    let mut failing = false;
    StreamBackoff::new(stream, WatchBackoff::default()).inspect(move |item| {
        let now = Instant::now();
        match item {
            Ok(_) => {
                if failing {
                    info!(resource = name, "watch is back");
                    failing = false;
                }
                health.record(name, now, true);
            }
            // 410 Gone: the watch's resourceVersion was compacted away; the watcher lists again at
            // once. Routine (the API server's watch cache expires), not a failure.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                debug!(resource = name, "watch expired (410 Gone); listing again");
            }
            Err(e) => {
                metrics.watch_errors.with_label_values(&[name]).inc();
                if !failing {
                    warn!(resource = name, error = %e, "watch failed; retrying with backoff (at most 5 s apart)");
                    failing = true;
                }
                health.record(name, now, false);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_seconds_and_resets() {
        let mut b = WatchBackoff::default();
        let ms: Vec<u128> = b.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn a_stream_fails_until_an_event_or_ten_quiet_seconds() {
        let h = WatchHealth::new(&["appbundles", "deployments"]);
        let t0 = Instant::now();
        assert!(h.failing_at(t0).is_empty());
        h.record("deployments", t0, false);
        assert_eq!(h.failing_at(t0 + Duration::from_secs(9)), ["deployments"]);
        assert!(h.failing_at(t0 + Duration::from_secs(11)).is_empty());
        h.record("deployments", t0 + Duration::from_secs(1), true);
        assert!(h.failing_at(t0 + Duration::from_secs(2)).is_empty());
    }
}
