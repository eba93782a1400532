//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process serves),
//! `/readyz` (the AppBundle CRD in the cluster is not older than this kubundle, and the controller
//! has listed its AppBundles, its watches are not failing and it is reconciling, or this replica
//! stands by for the leader lease), `/debug/cache/{namespace}/{name}` (the resourceVersions and replica
//! counts kubundle's cache holds of one AppBundle's children: is its view behind the API server's?).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;

use crate::metrics::Metrics;
use crate::reconcile::count_ready;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub store: Store<crate::reconcile::CachedBundle>,
    pub ready: Arc<AtomicBool>,
    /// The health of the watch streams (not ready while one keeps failing; /healthz stays ok:
    /// restarting the process would not bring the API server back).
    pub watches: Arc<crate::reconcile::observe::watches::WatchHealth>,
    /// True while this replica stands by for the leader lease (ready: healthy and waiting).
    pub standby: Arc<AtomicBool>,
    /// The controller's shared state (its children cache for `/debug/cache`, the CRD's gap for
    /// `/readyz`).
    pub controller: Arc<crate::reconcile::Context>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/debug/cache/{namespace}/{name}", get(debug_cache))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let (t, f, u) = count_ready(&state.store);
    state.metrics.set_appbundles(t, f, u);
    let missing = state.controller.crd_skew.missing().len();
    state.metrics.crd_missing_fields.set(missing as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn debug_cache(
    State(state): State<HttpState>,
    Path((namespace, name)): Path<(String, String)>,
) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state
            .controller
            .cache
            .describe(&namespace, &name)
            .to_string(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    // Before standing by too: a replica of this version cannot do its job with this CRD.
    if let Some(problem) = state.controller.crd_skew.problem() {
        return (StatusCode::SERVICE_UNAVAILABLE, problem);
    }
    if state.standby.load(Ordering::Relaxed) {
        return (StatusCode::OK, "ok".to_string());
    }
    let failing = state.watches.failing();
    if !failing.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "watches failing (the API server unreachable, or the resource no longer served, say its CRD removed): {}",
                failing.join(", ")
            ),
        );
    }
    let relisting = state.controller.relists.pending();
    if !relisting.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "listing again: kubundle's cache was behind the API server (its watch missed events): {}",
                relisting.join(", ")
            ),
        );
    }
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the AppBundle cache is not synced yet".to_string(),
        )
    }
}
