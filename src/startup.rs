//! Start-up: before the controller is built, kubundle must hear from the API server, which may
//! be restarting (connections refused, 5xx), throttling (429), or, just after a restart, still
//! warming its authorizer up (401 and 403 for a few seconds). kubundle waits for it, retrying with
//! backoff and saying why in its log and on `/readyz` (503), while `/healthz` answers ok:
//! exiting would only restart the process into the same wait, and the kubelet backs such restarts
//! off to minutes (CrashLoopBackOff) long after the API server is back. Only a missing AppBundle
//! CRD ends the process, with a message saying what to do: nothing but a person changes that.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::Client;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::reconcile::{CrdCheck, check_crd, gateway_api_served};

/// What the API server told kubundle at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// The cluster serves the Gateway API's HTTPRoutes.
    pub gateway_api: bool,
}

/// What kubundle is waiting for, as `/readyz` says it while it waits.
#[derive(Clone, Default)]
pub struct Waiting(Arc<Mutex<String>>);

impl Waiting {
    fn set(&self, why: String) {
        *self.0.lock().unwrap() = why;
    }

    fn get(&self) -> String {
        let why = self.0.lock().unwrap();
        if why.is_empty() {
            "starting: waiting for the API server".into()
        } else {
            format!("starting: waiting for the API server ({why})")
        }
    }
}

/// The endpoints while kubundle waits, served on a clone of the listener that the full endpoints
/// take over afterwards (connections that come in between wait in its backlog).
pub struct EarlyEndpoints {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl EarlyEndpoints {
    pub fn serve(
        listener: &std::net::TcpListener,
        metrics: Metrics,
        waiting: Waiting,
    ) -> std::io::Result<EarlyEndpoints> {
        let listener = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(
            axum::serve(listener, router(metrics, waiting))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        Ok(EarlyEndpoints { stop, task })
    }

    /// Stops serving (the requests in flight are answered first).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The endpoints while waiting: `/healthz` ok, `/readyz` 503 saying why, `/metrics`.
fn router(metrics: Metrics, waiting: Waiting) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(
                |State((metrics, _)): State<(Metrics, Waiting)>| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                },
            ),
        )
        .with_state((metrics, waiting))
}

async fn readyz(State((_, waiting)): State<(Metrics, Waiting)>) -> impl IntoResponse {
    (StatusCode::SERVICE_UNAVAILABLE, waiting.get())
}

/// The pause before the next try: 0.5 s, doubled each time, at most 10 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(10))
}

/// Waits until the AppBundles can be listed and the Gateway API's presence is known. Err (the
/// message to exit with) only when the AppBundle CRD is not installed.
pub async fn wait_for_api(
    client: &Client,
    namespace: Option<&str>,
    waiting: &Waiting,
) -> Result<Found, String> {
    let mut attempt = 0;
    loop {
        match check_crd(client, namespace).await {
            Ok(()) => break,
            Err(CrdCheck::NotInstalled(message)) => return Err(message),
            Err(CrdCheck::Unanswered(why)) => {
                warn!(error = %why, attempt = attempt + 1, "waiting for the API server");
                waiting.set(why);
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
    let mut attempt = 0;
    let gateway_api = loop {
        match gateway_api_served(client).await {
            Ok(served) => break served,
            Err(e) => {
                let why = format!("cannot tell whether the Gateway API is served: {e}");
                warn!(error = %why, attempt = attempt + 1, "waiting for the API server");
                waiting.set(why);
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    };
    if attempt > 0 {
        info!("the API server answers: starting");
    }
    Ok(Found { gateway_api })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let pauses: Vec<u64> = (0..8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
    }

    #[test]
    fn readyz_says_what_it_waits_for() {
        let w = Waiting::default();
        assert_eq!(w.get(), "starting: waiting for the API server");
        w.set("cannot list AppBundles: connection refused".into());
        assert!(
            w.get()
                .ends_with("(cannot list AppBundles: connection refused)")
        );
    }
}
