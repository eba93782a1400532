//! Prometheus metrics, prefix `kubundle_`. Per-object state is never a label: the AppBundle count
//! by Ready status is computed from the controller's cache when scraped.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The verbs of `kubundle_api_requests_total`.
pub const VERBS: [&str; 8] = [
    "GET", "LIST", "WATCH", "APPLY", "PATCH", "POST", "PUT", "DELETE",
];

/// The Kubernetes verb of a request to the API server, from its method, query and content type
/// (a GET of a collection is a LIST, `watch=true` a WATCH; a PATCH of type apply-patch an APPLY).
/// A GET whose path ends in a resource name cannot be told from a LIST of a subresource-less
/// collection by the path alone, so named paths are read by their segment count.
pub fn verb<B>(req: &http::Request<B>) -> &'static str {
    let query = req.uri().query().unwrap_or("");
    let watching = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match *req.method() {
        http::Method::GET if watching => "WATCH",
        http::Method::GET if is_collection(req.uri().path()) => "LIST",
        http::Method::GET => "GET",
        http::Method::PATCH => {
            let apply = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/apply-patch"));
            if apply { "APPLY" } else { "PATCH" }
        }
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        _ => "GET",
    }
}

/// A path names a collection: /api/v1/RESOURCE, /api/v1/namespaces/NS/RESOURCE,
/// /apis/GROUP/VERSION/RESOURCE, /apis/GROUP/VERSION/namespaces/NS/RESOURCE (and the discovery
/// paths, counted as reads of a list too).
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => &segments[segments.len().min(2)..],
        Some(&"apis") => &segments[segments.len().min(3)..],
        _ => return true,
    };
    matches!(rest, [] | [_] | ["namespaces", _, _])
}

/// The operator's metrics and their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result: `success` or `error`.
    pub reconciles: IntCounterVec,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Failed reconciles by error label (see `Error::label`).
    pub errors: IntCounterVec,
    /// Write requests to the API server by kind and verb.
    pub writes: IntCounterVec,
    /// Every request to the API server, by verb (GET, LIST, WATCH, APPLY, PATCH, POST, PUT, DELETE).
    pub requests: IntCounterVec,
    /// AppBundles by Ready condition status (True, False, Unknown), set at scrape time.
    pub appbundles: IntGaugeVec,
    /// 1 while this replica is the leader (or leader election is off), 0 while it stands by.
    pub leader: prometheus::IntGauge,
    /// Failed watch requests by resource (appbundles, deployments, services).
    pub watch_errors: IntCounterVec,
    /// Status fields this kubundle writes that the installed AppBundle CRD does not declare (0:
    /// the CRD is up to date), set at scrape time.
    pub crd_missing_fields: prometheus::IntGauge,
    /// Cached children found behind the API server (a watch that missed events), by resource.
    pub cache_stale: IntCounterVec,
    /// Canary releases' moves (started, step, promoted, aborted, reverted, restarted), by move.
    pub canary_moves: IntCounterVec,
    /// Runs of a canary's checks, by check kind (pod-health, prometheus, webhook) and verdict.
    pub canary_checks: IntCounterVec,
    /// Progress-only status writes put off because the budget all AppBundles share was spent.
    pub progress_deferred: prometheus::IntCounter,
    /// Process metrics (CPU, memory, file descriptors), with the conventional unprefixed names.
    process: Registry,
}

/// The moves of a canary `kubundle_canary_moves_total` counts.
pub const CANARY_MOVES: [&str; 6] = [
    "started",
    "restarted",
    "step",
    "promoted",
    "aborted",
    "reverted",
];

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("kubundle".into()), None).expect("valid registry prefix");
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap();
            registry.register(Box::new(c.clone())).unwrap();
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = prometheus::IntGauge::new(name, help).unwrap();
            registry.register(Box::new(g.clone())).unwrap();
            g
        };
        let reconciles = counters(
            "reconcile_total",
            "Reconciles of AppBundles, by result",
            &["result"],
        );
        let errors = counters(
            "reconcile_errors_total",
            "Failed reconciles, by error reason",
            &["reason"],
        );
        let writes = counters(
            "api_writes_total",
            "Write requests kubundle sent to the API server, by kind and verb",
            &["kind", "verb"],
        );
        let requests = counters(
            "api_requests_total",
            "Requests kubundle sent to the API server (reads, watches and writes), by verb",
            &["verb"],
        );
        let watch_errors = counters(
            "watch_errors_total",
            "Failed watch requests (the stream retries with backoff), by resource",
            &["resource"],
        );
        let cache_stale = counters(
            "cache_stale_total",
            "Cached children found behind the API server (their watch missed events; it lists again), by resource",
            &["resource"],
        );
        let canary_moves = counters(
            "canary_moves_total",
            "Moves of canary releases (started, restarted, step, promoted, aborted, reverted), by move",
            &["move"],
        );
        let canary_checks = counters(
            "canary_checks_total",
            "Results of canary checks, by check kind (pod-health, prometheus, webhook) and verdict (Pass, Fail, NoData, Error)",
            &["check", "verdict"],
        );
        let leader = gauge(
            "leader",
            "1 while this replica is the leader and reconciles (or leader election is off), 0 while it stands by",
        );
        let crd_missing_fields = gauge(
            "crd_missing_fields",
            "Status fields this kubundle writes that the installed AppBundle CRD does not declare (apply the CRD of this version when not 0)",
        );
        let progress_deferred = prometheus::IntCounter::new(
            "status_progress_deferred_total",
            "Progress-only status writes put off because the progress budget all AppBundles share was spent (milestones are never put off)",
        )
        .unwrap();
        registry
            .register(Box::new(progress_deferred.clone()))
            .unwrap();
        let appbundles = IntGaugeVec::new(
            Opts::new(
                "appbundles",
                "AppBundles watched, by the status of their Ready condition",
            ),
            &["ready"],
        )
        .unwrap();
        registry.register(Box::new(appbundles.clone())).unwrap();
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "Duration of one AppBundle reconcile",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .unwrap();
        registry
            .register(Box::new(reconcile_duration.clone()))
            .unwrap();
        let process = Registry::new();
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap();
        let metrics = Metrics {
            registry,
            reconciles,
            reconcile_duration,
            errors,
            writes,
            requests,
            appbundles,
            leader,
            watch_errors,
            crd_missing_fields,
            cache_stale,
            canary_moves,
            canary_checks,
            progress_deferred,
            process,
        };
        metrics.export_at_zero();
        metrics
    }

    /// Every series is exported from the start (at 0), so rates and alerts work before the first
    /// event.
    fn export_at_zero(&self) {
        for result in ["success", "error"] {
            self.reconciles.with_label_values(&[result]).reset();
        }
        for resource in ["appbundles", "deployments", "services"] {
            self.watch_errors.with_label_values(&[resource]).reset();
        }
        self.cache_stale.with_label_values(&["deployments"]).reset();
        for m in CANARY_MOVES {
            self.canary_moves.with_label_values(&[m]).reset();
        }
        for reason in crate::error::Error::LABELS {
            self.errors.with_label_values(&[reason]).reset();
        }
        for (kind, verb) in [
            ("Deployment", "apply"),
            ("Service", "apply"),
            ("AppBundle", "apply_status"),
            ("Event", "publish"),
            ("Lease", "create"),
            ("Lease", "update"),
        ] {
            self.writes.with_label_values(&[kind, verb]).reset();
        }
        for verb in VERBS {
            self.requests.with_label_values(&[verb]).reset();
        }
    }

    /// Counts one request to the API server, by its Kubernetes verb.
    pub fn request<B>(&self, req: &http::Request<B>) {
        self.requests.with_label_values(&[verb(req)]).inc();
    }

    /// Counts one write request.
    pub fn write(&self, kind: &str, verb: &str) {
        self.writes.with_label_values(&[kind, verb]).inc();
    }

    /// Sets the AppBundle gauge from counts of Ready statuses.
    pub fn set_appbundles(&self, ready: i64, not_ready: i64, unknown: i64) {
        self.appbundles.with_label_values(&["True"]).set(ready);
        self.appbundles.with_label_values(&["False"]).set(not_ready);
        self.appbundles.with_label_values(&["Unknown"]).set(unknown);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut families = self.registry.gather();
        // The process collector counts CPU time in whole seconds (an integer counter): replaced
        // by the exact value.
        families.extend(
            self.process
                .gather()
                .into_iter()
                .filter(|f| f.name() != "process_cpu_seconds_total"),
        );
        families.push(cpu_seconds_family());
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// CPU time (user and system) this process has used, in seconds, with microsecond precision.
pub fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: initialised by the successful call above (and zeroed before).
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn cpu_seconds_family() -> prometheus::proto::MetricFamily {
    let counter = prometheus::Counter::new(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
    )
    .expect("a valid metric");
    counter.inc_by(process_cpu_seconds());
    use prometheus::core::Collector;
    counter.collect().remove(0)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, content_type: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn requests_are_counted_by_their_kubernetes_verb() {
        let cases = [
            (
                "GET",
                "/apis/apps/v1/namespaces/a/deployments/web",
                None,
                "GET",
            ),
            (
                "GET",
                "/apis/apps/v1/deployments?labelSelector=x",
                None,
                "LIST",
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/a/deployments?limit=500",
                None,
                "LIST",
            ),
            (
                "GET",
                "/apis/apps/v1/deployments?watch=true&resourceVersion=5",
                None,
                "WATCH",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods?labelSelector=x",
                None,
                "LIST",
            ),
            ("GET", "/api/v1/namespaces/a", None, "GET"),
            (
                "GET",
                "/apis/kubundle.dev/v1alpha1/namespaces/a/appbundles/web/status",
                None,
                "GET",
            ),
            ("GET", "/apis/gateway.networking.k8s.io/v1", None, "LIST"),
            (
                "PATCH",
                "/api/v1/namespaces/a/services/web?fieldManager=kubundle&force=true",
                Some("application/apply-patch+yaml"),
                "APPLY",
            ),
            (
                "PATCH",
                "/api/v1/namespaces/a/services/web",
                Some("application/merge-patch+json"),
                "PATCH",
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None,
                "POST",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/kubundle",
                None,
                "PUT",
            ),
            (
                "DELETE",
                "/apis/policy/v1/namespaces/a/poddisruptionbudgets/web",
                None,
                "DELETE",
            ),
        ];
        for (method, uri, ct, want) in cases {
            assert_eq!(verb(&req(method, uri, ct)), want, "{method} {uri}");
        }
    }
}
