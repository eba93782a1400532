//! Catching a watch cache that fell behind without an error.
//!
//! kubundle reads its children from its watch caches. A watch that silently misses events (an API
//! server whose own watch cache re-synced with etcd after an outage, say) would leave a cached
//! child behind the API server with no error to show for it, and a status that stops telling the
//! truth. A rollout that makes no progress is where that shows: kubundle already looks closer at
//! such rollouts (their pods, every 10 s); it then also reads the Deployment itself (one GET) and
//! compares its resourceVersion with the cached one. A watch event may be a moment on its way, so
//! the cache counts as behind only when, at a later look at least [`LAG`] on, it still has not
//! reached the version the API server had at the first: then the fresh object replaces the
//! cached one at once, the kind's watch lists again
//! (a new watch, whose list replaces the whole cache of that kind), `/readyz` answers 503 until
//! that list is done, `kubundle_cache_stale_total{resource}` counts it and a WARN line says so.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::Notify;

/// How long a watch may take to bring a version the API server already had.
pub const LAG: Duration = Duration::from_secs(5);

/// Per watch stream (by resource name), a way to ask it to list again.
#[derive(Debug, Default)]
pub struct Relists {
    streams: HashMap<&'static str, Arc<Relist>>,
    /// Objects whose cached version was behind the API server's at a look: (the API server's
    /// version then, when), by "namespace/name".
    suspects: Mutex<HashMap<String, (String, Instant)>>,
}

#[derive(Debug, Default)]
struct Relist {
    asked: Notify,
    /// Asked and the new list not done yet.
    pending: AtomicBool,
}

impl Relists {
    /// Relists for the streams watching these resources.
    pub fn new(names: &[&'static str]) -> Self {
        Relists {
            streams: names
                .iter()
                .map(|n| (*n, Arc::new(Relist::default())))
                .collect(),
            suspects: Mutex::default(),
        }
    }

    /// One look at object `key`: true when its cached version is still behind one the API server
    /// had at least [`LAG`] ago (the watch missed it); `compare` orders two resourceVersions.
    pub fn behind(
        &self,
        key: &str,
        cached: &str,
        api_server: &str,
        now: Instant,
        compare: impl Fn(&str, &str) -> Option<std::cmp::Ordering>,
    ) -> bool {
        let less = |a: &str, b: &str| compare(a, b) == Some(std::cmp::Ordering::Less);
        let mut suspects = self.suspects.lock().unwrap();
        if !less(cached, api_server) {
            suspects.remove(key);
            return false;
        }
        match suspects.get(key) {
            Some((then, at)) if now.saturating_duration_since(*at) >= LAG => {
                let missed = less(cached, then);
                if missed {
                    suspects.remove(key);
                } else {
                    // Caught up with that one; a newer one is on its way.
                    suspects.insert(key.to_string(), (api_server.to_string(), now));
                }
                missed
            }
            Some(_) => false,
            None => {
                if suspects.len() >= 1024 {
                    suspects.retain(|_, (_, at)| now.saturating_duration_since(*at) < LAG * 4);
                }
                suspects.insert(key.to_string(), (api_server.to_string(), now));
                false
            }
        }
    }

    /// Asks the stream of `name` to list again.
    pub fn request(&self, name: &str) {
        if let Some(r) = self.streams.get(name) {
            r.pending.store(true, Ordering::Release);
            r.asked.notify_one();
        }
    }

    /// The resources whose cache is being listed again after it was found behind.
    pub fn pending(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self
            .streams
            .iter()
            .filter(|(_, r)| r.pending.load(Ordering::Acquire))
            .map(|(n, _)| *n)
            .collect();
        out.sort();
        out
    }

    /// Wraps the watch of `name` (`make` starts one): when asked, the current watch is dropped
    /// and a new one started, which begins with a list.
    pub fn relistable<T, S, F>(
        &self,
        name: &'static str,
        make: F,
    ) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static
    where
        T: Send + 'static,
        S: Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
        F: Fn() -> S + Send + 'static,
    {
        let relist = self
            .streams
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new(Relist::default()));
        type Boxed<T> =
            Pin<Box<dyn Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send>>;
        let first: Boxed<T> = Box::pin(make());
        futures::stream::unfold(
            (first, make, relist),
            move |(mut stream, make, relist)| async move {
                loop {
                    tokio::select! {
                        item = stream.next() => {
                            if matches!(item, Some(Ok(watcher::Event::InitDone))) {
                                relist.pending.store(false, Ordering::Release);
                            }
                            return item.map(|i| (i, (stream, make, relist)));
                        }
                        () = relist.asked.notified() => {
                            tracing::info!(resource = name, "listing again: the cache was behind the API server");
                            stream = Box::pin(make());
                        }
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_only_when_a_version_the_api_server_had_does_not_arrive_in_time() {
        let relists = Relists::new(&["deployments"]);
        let order = |a: &str, b: &str| a.parse::<u64>().ok()?.partial_cmp(&b.parse::<u64>().ok()?);
        let t0 = Instant::now();
        // Up to date: nothing.
        assert!(!relists.behind("ns/web", "10", "10", t0, order));
        // An event on its way: a suspect, not behind.
        assert!(!relists.behind("ns/web", "10", "12", t0, order));
        assert!(!relists.behind("ns/web", "10", "12", t0 + LAG / 2, order));
        // It arrived (and a newer one is on its way): not behind.
        assert!(!relists.behind("ns/web", "12", "13", t0 + LAG, order));
        // 13 never arrives.
        assert!(relists.behind("ns/web", "12", "14", t0 + LAG * 2, order));
        // Caught up after the relist.
        assert!(!relists.behind("ns/web", "14", "14", t0 + LAG * 3, order));
    }

    #[tokio::test]
    async fn a_request_starts_a_new_watch_and_is_pending_until_its_list_is_done() {
        let relists = Arc::new(Relists::new(&["deployments"]));
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = started.clone();
        // Each watch: a list (Init, InitDone), then nothing more.
        let make = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            futures::stream::iter(vec![
                Ok(watcher::Event::<u8>::Init),
                Ok(watcher::Event::InitDone),
            ])
            .chain(futures::stream::pending())
        };
        let mut stream = Box::pin(relists.relistable("deployments", make));
        assert!(matches!(
            stream.next().await,
            Some(Ok(watcher::Event::Init))
        ));
        assert!(matches!(
            stream.next().await,
            Some(Ok(watcher::Event::InitDone))
        ));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert!(relists.pending().is_empty());

        relists.request("deployments");
        assert_eq!(relists.pending(), vec!["deployments"]);
        assert!(matches!(
            stream.next().await,
            Some(Ok(watcher::Event::Init))
        ));
        assert_eq!(started.load(Ordering::SeqCst), 2, "a new watch");
        assert_eq!(
            relists.pending(),
            vec!["deployments"],
            "until its list is done"
        );
        assert!(matches!(
            stream.next().await,
            Some(Ok(watcher::Event::InitDone))
        ));
        assert!(relists.pending().is_empty());
    }
}
