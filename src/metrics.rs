//! Prometheus metrics, prefix `kubundle_`. Per-object state is never a label: the AppBundle count
//! by Ready status is computed from the controller's cache when scraped.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

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
    /// AppBundles by Ready condition status (True, False, Unknown), set at scrape time.
    pub appbundles: IntGaugeVec,
    /// 1 while this replica is the leader (or leader election is off), 0 while it stands by.
    pub leader: prometheus::IntGauge,
    /// Failed watch requests by resource (appbundles, deployments, services).
    pub watch_errors: IntCounterVec,
    /// Process metrics (CPU, memory, file descriptors), with the conventional unprefixed names.
    process: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("kubundle".into()), None).expect("valid registry prefix");
        let reconciles = IntCounterVec::new(
            Opts::new("reconcile_total", "Reconciles of AppBundles, by result"),
            &["result"],
        )
        .unwrap();
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
        let errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Failed reconciles, by error reason",
            ),
            &["reason"],
        )
        .unwrap();
        let writes = IntCounterVec::new(
            Opts::new(
                "api_writes_total",
                "Write requests kubundle sent to the API server, by kind and verb",
            ),
            &["kind", "verb"],
        )
        .unwrap();
        let appbundles = IntGaugeVec::new(
            Opts::new(
                "appbundles",
                "AppBundles watched, by the status of their Ready condition",
            ),
            &["ready"],
        )
        .unwrap();
        let leader = prometheus::IntGauge::new(
            "leader",
            "1 while this replica is the leader and reconciles (or leader election is off), 0 while it stands by",
        )
        .unwrap();
        let watch_errors = IntCounterVec::new(
            Opts::new(
                "watch_errors_total",
                "Failed watch requests (the stream retries with backoff), by resource",
            ),
            &["resource"],
        )
        .unwrap();
        for c in [
            Box::new(leader.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(watch_errors.clone()),
            Box::new(reconciles.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(errors.clone()),
            Box::new(writes.clone()),
            Box::new(appbundles.clone()),
        ] {
            registry.register(c).unwrap();
        }
        let process = Registry::new();
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap();
        // Every series is exported from the start (at 0), so rates and alerts work before the first event.
        for result in ["success", "error"] {
            reconciles.with_label_values(&[result]).reset();
        }
        for resource in ["appbundles", "deployments", "services"] {
            watch_errors.with_label_values(&[resource]).reset();
        }
        for reason in crate::error::Error::LABELS {
            errors.with_label_values(&[reason]).reset();
        }
        for (kind, verb) in [
            ("Deployment", "apply"),
            ("Service", "apply"),
            ("AppBundle", "apply_status"),
            ("Event", "publish"),
            ("Lease", "create"),
            ("Lease", "update"),
        ] {
            writes.with_label_values(&[kind, verb]).reset();
        }
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            errors,
            writes,
            appbundles,
            leader,
            watch_errors,
            process,
        }
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
