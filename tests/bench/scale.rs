//! kubundle-bench: convergence time, API cost and memory of kubundle at N AppBundles, against a
//! floor measured in the same run: the same 2N children applied directly (server-side apply, same
//! concurrency) by a minimal client, with no operator in between.
//!
//! Run on the local control plane (tests/bench/run.sh does all of it):
//!   cargo build --release --bin kubundle
//!   cargo run --release --features bench --bin kubundle-bench -- --sizes 100,1000,5000
//! Prints progress and a table; writes JSON and a PNG plot (default: target/bench/).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use kubundle::api::{AppBundle, find_condition};
use kubundle::render;
use serde::Serialize;

mod latency;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks kubundle against a direct-apply floor on the local control plane")]
struct Args {
    /// Numbers of AppBundles, one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    sizes: Vec<usize>,
    /// Namespaces the objects are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Concurrency of the operator (--concurrency) and of the floor client.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of the steady-state window, in seconds.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// The operator binary (a release build).
    #[arg(long, default_value = "target/release/kubundle")]
    operator: PathBuf,
    /// Where the JSON and the PNG go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Rounds: every size is run this many times, interleaved (100, 1000, 100, 1000, ...); the
    /// tables give the range over the rounds.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Only redraw the tables and the plot from OUT/results.json.
    #[arg(long)]
    plot_only: bool,
    /// The Markdown file whose generated tables (between `<!-- bench:begin -->` and
    /// `<!-- bench:end -->`) are rewritten from the results.
    #[arg(long, default_value = "BENCHMARKS.md")]
    markdown: PathBuf,
    /// Measure convergence only (floor, then kubundle until Ready); skip the steady state, the
    /// restart and the image update. For quick comparisons while working on the operator.
    #[arg(long)]
    convergence_only: bool,
    /// Tries of the latency a person sees (one AppBundle → Ready against one Deployment →
    /// Available, idle and during a burst; latency.rs), after the sizes; 0: not measured.
    #[arg(long, default_value_t = 0)]
    latency_tries: usize,
    /// Measure the latency only (no sizes).
    #[arg(long)]
    latency_only: bool,
    /// The burst of new AppBundles the busy latency tries are made during.
    #[arg(long, default_value_t = 1000)]
    latency_burst: usize,
    /// The local cluster's state directory (its pids/ give the control plane's CPU time).
    #[arg(long, env = "KUBUNDLE_CLUSTER_DIR", default_value = ".cluster")]
    cluster_dir: PathBuf,
}

#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
struct Result {
    n: usize,
    /// Which round of `--repeats` (0-based).
    #[serde(default)]
    round: usize,
    /// Floor: seconds until all 2N children were applied, and until all N Deployments were Available.
    floor_children_s: f64,
    floor_available_s: f64,
    /// Floor with the custom resource: seconds until all N AppBundles had their one status
    /// write (Ready, after their Deployment was Available), the control plane's CPU and every
    /// request served until then (see `floor_cr`).
    #[serde(default)]
    floor_cr_ready_s: f64,
    #[serde(default)]
    floor_cr_control_plane_cpu_s: BTreeMap<String, f64>,
    #[serde(default)]
    floor_cr_cluster_requests_per_bundle: BTreeMap<String, f64>,
    /// kubundle's Ready over the floor-with-CR's Ready.
    #[serde(default)]
    ratio_ready_cr: f64,
    /// Floor of the image update: seconds from applying the new image to the floor-with-CR's N
    /// Deployments directly until all had rolled out and their AppBundles' status said so.
    #[serde(default)]
    floor_cr_image_update_s: f64,
    /// kubundle: seconds from creating N AppBundles until all 2N children exist, and until all N are Ready.
    kubundle_children_s: f64,
    kubundle_ready_s: f64,
    /// kubundle: seconds until all N Deployments were Available (the floor's measure).
    #[serde(default)]
    kubundle_available_s: f64,
    ratio_children: f64,
    ratio_ready: f64,
    /// CPU seconds the control plane's processes (etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler, kwok) spent from the start of each phase until all Available / Ready.
    #[serde(default)]
    floor_control_plane_cpu_s: BTreeMap<String, f64>,
    #[serde(default)]
    kubundle_control_plane_cpu_s: BTreeMap<String, f64>,
    /// Every request the API server served during each phase (from any client: the operator,
    /// the bench, the controllers, the scheduler, kwok), per AppBundle, by "resource[/sub] VERB";
    /// WATCH and series under 0.05 per AppBundle left out (answers other than 2xx, as "PUT 409",
    /// down to 0.005). The difference between the two is what kubundle costs the control plane
    /// beyond the floor.
    #[serde(default)]
    floor_cluster_requests_per_bundle: BTreeMap<String, f64>,
    #[serde(default)]
    kubundle_cluster_requests_per_bundle: BTreeMap<String, f64>,
    /// API requests the API server served per AppBundle, for the operator's resources, by verb
    /// (deployments and services: GET and APPLY; appbundles/status: APPLY).
    requests_per_bundle: BTreeMap<String, f64>,
    /// kubundle's own count of writes per AppBundle, by kind and verb.
    operator_writes_per_bundle: BTreeMap<String, f64>,
    /// kubundle's own count of every request per AppBundle (kubundle_api_requests_total), by verb,
    /// from creating the AppBundles until all were Ready.
    #[serde(default)]
    operator_requests_per_bundle: BTreeMap<String, f64>,
    /// Resident set size (VmRSS, MiB) at the end of the steady-state window.
    #[serde(default)]
    operator_steady_rss_mib: f64,
    /// Writes during the steady-state window: kubundle's counter, and the API server's.
    steady_writes_operator: f64,
    steady_writes_apiserver: f64,
    steady_seconds: u64,
    /// Operator process: peak RSS (MiB) and CPU seconds over the run up to the restart.
    operator_peak_rss_mib: f64,
    operator_cpu_s: f64,
    /// After a restart with N AppBundles: seconds until all N were reconciled, and writes made.
    restart_reconciled_s: f64,
    restart_writes: f64,
    /// Seconds from updating the image of all N AppBundles until all are Ready on the new image.
    image_update_ready_s: f64,
    /// Peak RSS of the restarted operator after the image update (MiB).
    operator_peak_rss_after_update_mib: f64,
}

fn log(msg: impl AsRef<str>) {
    eprintln!(
        "{} [bench] {}",
        k8s_openapi::jiff::Timestamp::now().strftime("%H:%M:%S"),
        msg.as_ref()
    );
}

fn namespaces(prefix: &str, n: usize, k: usize) -> Vec<String> {
    (0..k.min(n)).map(|i| format!("{prefix}-{n}-{i}")).collect()
}

fn bundle(name: &str, ns: &str, image: &str) -> AppBundle {
    let mut b: AppBundle = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubundle.dev/v1alpha1", "kind": "AppBundle",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"image": image, "replicas": 1, "ports": [{"name": "http", "containerPort": 80}],
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
    }))
    .unwrap();
    b.metadata.namespace = Some(ns.to_string());
    b
}

async fn create_namespaces(client: &Client, names: &[String]) {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"kubundle.dev/bench": "true"}}})).unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
    }
}

async fn delete_namespaces(client: &Client, names: &[String]) {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        let _ = api.delete(name, &DeleteParams::background()).await;
    }
    let start = Instant::now();
    loop {
        let mut left = 0;
        for name in names {
            if api.get_opt(name).await.unwrap().is_some() {
                left += 1;
            }
        }
        if left == 0 {
            break;
        }
        if start.elapsed().as_secs().is_multiple_of(15) {
            log(format!(
                "waiting for {left} namespaces to be deleted ({:.0} s)",
                start.elapsed().as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Watches `api` (from now) and returns when `count(objects matching pred) >= n`, with the time
/// since `t0`. Progress every 10 s.
async fn track<K, F>(
    api: Api<K>,
    config: watcher::Config,
    n: usize,
    t0: Instant,
    what: String,
    pred: F,
) -> f64
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
    F: Fn(&K) -> bool + Send + 'static,
{
    let mut matching: std::collections::HashSet<String> = Default::default();
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut last_report = Instant::now();
    while let Some(event) = stream.try_next().await.unwrap() {
        let mut apply = |obj: K| {
            let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
            if pred(&obj) {
                matching.insert(key);
            } else {
                matching.remove(&key);
            }
        };
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => apply(o),
            watcher::Event::Delete(o) => {
                matching.remove(&format!(
                    "{}/{}",
                    o.namespace().unwrap_or_default(),
                    o.name_any()
                ));
            }
            _ => {}
        }
        if matching.len() >= n {
            let t = t0.elapsed().as_secs_f64();
            log(format!("{what}: {n}/{n} after {t:.1} s"));
            return t;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            log(format!(
                "{what}: {}/{n} after {:.0} s",
                matching.len(),
                t0.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
    }
    panic!("watch ended");
}

fn bench_selector() -> String {
    format!("{}={}", render::labels::MANAGED_BY, render::labels::MANAGER)
}

/// The API server's request counters: (resource, subresource, verb) -> count, the verb followed
/// by the code when the answer was not 2xx.
async fn apiserver_requests(client: &Client) -> BTreeMap<(String, String, String), f64> {
    let text = client
        .request_text(http::Request::get("/metrics").body(vec![]).unwrap())
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        // Answers other than 2xx are counted apart ("PUT 409"): a conflict is a write the
        // writer makes again.
        let code = label("code");
        let verb = if code.starts_with('2') || code.is_empty() {
            label("verb")
        } else {
            format!("{} {code}", label("verb"))
        };
        *out.entry((label("resource"), label("subresource"), verb))
            .or_insert(0.0) += value;
    }
    out
}

fn delta(
    before: &BTreeMap<(String, String, String), f64>,
    after: &BTreeMap<(String, String, String), f64>,
    resource: &str,
    sub: &str,
    verb: &str,
) -> f64 {
    let key = (resource.to_string(), sub.to_string(), verb.to_string());
    after.get(&key).unwrap_or(&0.0) - before.get(&key).unwrap_or(&0.0)
}

/// All requests between two readings, per AppBundle, by "resource[/sub] VERB" (see Result).
fn requests_per_bundle(
    before: &BTreeMap<(String, String, String), f64>,
    after: &BTreeMap<(String, String, String), f64>,
    n: usize,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for ((resource, sub, verb), value) in after {
        if verb == "WATCH" || resource.is_empty() {
            continue;
        }
        let per = (value
            - before
                .get(&(resource.clone(), sub.clone(), verb.clone()))
                .unwrap_or(&0.0))
            / n as f64;
        // Answers other than 2xx ("PUT 409") are kept down to 0.005 per AppBundle.
        if per >= 0.05 || (verb.contains(' ') && per >= 0.005) {
            let sub = if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            };
            out.insert(
                format!("{resource}{sub} {verb}"),
                (per * 100.0).round() / 100.0,
            );
        }
    }
    out
}

/// Writes the API server served for the resources kubundle writes.
fn server_writes(
    before: &BTreeMap<(String, String, String), f64>,
    after: &BTreeMap<(String, String, String), f64>,
) -> f64 {
    let mut total = 0.0;
    for (resource, sub) in [
        ("deployments", ""),
        ("services", ""),
        ("appbundles", "status"),
    ] {
        for verb in ["APPLY", "PATCH", "PUT", "POST", "DELETE"] {
            total += delta(before, after, resource, sub, verb);
        }
    }
    total
}

struct Operator {
    child: tokio::process::Child,
    url: String,
}

impl Operator {
    async fn start(binary: &Path, concurrency: usize, log_dir: &Path) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log_file = std::fs::File::create(log_dir.join(format!("operator-{port}.log"))).unwrap();
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--listen-address",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (build it: cargo build --release --bin kubundle)",
                    binary.display()
                )
            });
        let url = format!("http://127.0.0.1:{port}/metrics");
        while scrape(&url).await.is_none() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the operator exited ({status}); its log: {}",
                    log_dir.join(format!("operator-{port}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Operator { child, url }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Peak resident set size (VmHWM), MiB.
    fn peak_rss_mib(&self) -> f64 {
        self.rss_mib("VmHWM:")
    }

    /// A memory figure of /proc/PID/status (VmHWM:, VmRSS:), MiB.
    fn rss_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        kb / 1024.0
    }

    /// User + system CPU seconds.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap()
    }

    async fn metrics(&self) -> String {
        scrape(&self.url)
            .await
            .expect("the operator stopped serving /metrics")
    }

    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// User + system CPU seconds of a process (children not included).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds so far of each control-plane process recorded in the cluster's pids/ directory.
fn control_plane_cpu(cluster_dir: &Path) -> BTreeMap<String, f64> {
    let Ok(entries) = std::fs::read_dir(cluster_dir.join("pids")) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            // Each file holds "<pid> <binary>".
            let text = std::fs::read_to_string(e.path()).ok()?;
            let pid = text.split_whitespace().next()?.parse().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                cpu_seconds(pid)?,
            ))
        })
        .collect()
}

/// CPU seconds spent per component between two readings of `control_plane_cpu`, plus a total.
fn cpu_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    let mut d: BTreeMap<String, f64> = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                ((v - before.get(k).unwrap_or(&0.0)) * 100.0).round() / 100.0,
            )
        })
        .collect();
    let total = d.values().sum::<f64>();
    d.insert("total".into(), (total * 100.0).round() / 100.0);
    d
}

async fn scrape(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn series_sum(metrics: &str, prefix: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (
                series.trim_start_matches(prefix).to_string(),
                value.parse().unwrap(),
            )
        })
        .collect()
}

fn is_ready_on(b: &AppBundle, image: &str) -> bool {
    let Some(status) = b.status.as_ref() else {
        return false;
    };
    status.observed_generation == b.metadata.generation
        && status.image.as_deref() == Some(image)
        && find_condition(&status.conditions, "Ready").is_some_and(|c| c.status == "True")
}

async fn floor(client: &Client, n: usize, args: &Args) -> Floor {
    let names = namespaces("floor", n, args.namespaces);
    create_namespaces(client, &names).await;
    let cpu_before = control_plane_cpu(&args.cluster_dir);
    let requests_before = apiserver_requests(client).await;
    let t0 = Instant::now();
    let available = tokio::spawn(track(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default().labels(&bench_selector()),
        n,
        t0,
        format!("floor N={n}: Deployments Available"),
        |d: &Deployment| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1),
    ));
    let params = PatchParams::apply("bench-floor").force();
    let done = Arc::new(AtomicUsize::new(0));
    stream::iter(0..n)
        .map(|i| {
            let (client, params, done) = (client.clone(), params.clone(), done.clone());
            let ns = names[i % names.len()].clone();
            async move {
                let mut b = bundle(&format!("app-{i}"), &ns, "nginx:1.27");
                b.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
                let mut d = render::deployment(&b).unwrap();
                let mut s = render::service(&b).unwrap();
                // No owner: the garbage collector would delete children of an AppBundle that does not exist.
                d.metadata.owner_references = None;
                s.metadata.owner_references = None;
                let name = format!("app-{i}");
                Api::<Deployment>::namespaced(client.clone(), &ns)
                    .patch(&name, &params, &Patch::Apply(&d))
                    .await
                    .unwrap();
                Api::<Service>::namespaced(client, &ns)
                    .patch(&name, &params, &Patch::Apply(&s))
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<()>()
        .await;
    let children = t0.elapsed().as_secs_f64();
    log(format!(
        "floor N={n}: {} children applied after {children:.1} s",
        2 * n
    ));
    let available = available.await.unwrap();
    let cpu = cpu_delta(&cpu_before, &control_plane_cpu(&args.cluster_dir));
    let requests = requests_per_bundle(&requests_before, &apiserver_requests(client).await, n);
    log(format!(
        "floor N={n}: control plane CPU {:.1} s until Available",
        cpu["total"]
    ));
    delete_namespaces(client, &names).await;
    Floor {
        children,
        available,
        cpu,
        requests,
    }
}

/// What the floor phase measured.
struct Floor {
    children: f64,
    available: f64,
    cpu: BTreeMap<String, f64>,
    requests: BTreeMap<String, f64>,
}

/// The floor that includes the custom resource: what any operator of an AppBundle-like resource
/// must cost at the least, with no operator running. A minimal client creates the N AppBundles
/// (the real CRD, its schema and CEL rules), server-side-applies each one's two children (owned by
/// it), and writes one status per AppBundle (Ready, from a watch on the Deployments) when its
/// Deployment turns Available. Unless `--convergence-only`, it then applies a new image to the N
/// Deployments directly and writes each status again once rolled out: the image update's floor.
async fn floor_cr(client: &Client, n: usize, args: &Args, result: &mut Result) {
    let names = namespaces("floorcr", n, args.namespaces);
    create_namespaces(client, &names).await;
    let cpu_before = control_plane_cpu(&args.cluster_dir);
    let requests_before = apiserver_requests(client).await;
    let t0 = Instant::now();
    let ready = floor_cr_status_writer(client, &names, n, t0, "nginx:1.27", args.concurrency);
    let params = PatchParams::apply("bench-floor-cr").force();
    stream::iter(0..n)
        .map(|i| {
            let (client, params) = (client.clone(), params.clone());
            let ns = names[i % names.len()].clone();
            async move {
                let name = format!("app-{i}");
                let b = Api::<AppBundle>::namespaced(client.clone(), &ns)
                    .create(&PostParams::default(), &bundle(&name, &ns, "nginx:1.27"))
                    .await
                    .unwrap();
                let d = render::deployment(&b).unwrap();
                let s = render::service(&b).unwrap();
                Api::<Deployment>::namespaced(client.clone(), &ns)
                    .patch(&name, &params, &Patch::Apply(&d))
                    .await
                    .unwrap();
                Api::<Service>::namespaced(client, &ns)
                    .patch(&name, &params, &Patch::Apply(&s))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<()>()
        .await;
    result.floor_cr_ready_s = ready.await.unwrap();
    result.floor_cr_control_plane_cpu_s =
        cpu_delta(&cpu_before, &control_plane_cpu(&args.cluster_dir));
    result.floor_cr_cluster_requests_per_bundle =
        requests_per_bundle(&requests_before, &apiserver_requests(client).await, n);
    log(format!(
        "floor with the CR N={n}: all Ready after {:.1} s, control plane CPU {:.1} s",
        result.floor_cr_ready_s, result.floor_cr_control_plane_cpu_s["total"]
    ));
    if !args.convergence_only {
        let t0 = Instant::now();
        let updated = floor_cr_status_writer(client, &names, n, t0, "nginx:1.28", args.concurrency);
        stream::iter(0..n)
            .map(|i| {
                let (client, params) = (client.clone(), params.clone());
                let ns = names[i % names.len()].clone();
                async move {
                    let name = format!("app-{i}");
                    let api = Api::<AppBundle>::namespaced(client.clone(), &ns);
                    let mut b = api.get(&name).await.unwrap();
                    b.spec.image = "nginx:1.28".into();
                    let d = render::deployment(&b).unwrap();
                    Api::<Deployment>::namespaced(client, &ns)
                        .patch(&name, &params, &Patch::Apply(&d))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(args.concurrency)
            .collect::<()>()
            .await;
        result.floor_cr_image_update_s = updated.await.unwrap();
        log(format!(
            "floor with the CR N={n}: image updated, all rolled out after {:.1} s",
            result.floor_cr_image_update_s
        ));
    }
    delete_namespaces(client, &names).await;
}

/// The floor-with-CR's status writer: watches the Deployments in `names` and, the first time each
/// is rolled out on `image` and Available, writes its AppBundle's status once (server-side
/// apply, as kubundle does). Returns the seconds since `t0` when all `n` were written.
fn floor_cr_status_writer(
    client: &Client,
    names: &[String],
    n: usize,
    t0: Instant,
    image: &'static str,
    concurrency: usize,
) -> tokio::task::JoinHandle<f64> {
    let client = client.clone();
    let names: std::collections::HashSet<String> = names.iter().cloned().collect();
    tokio::spawn(async move {
        let rolled_out = |d: &Deployment| {
            let s = d.status.clone().unwrap_or_default();
            let on_image = d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.as_deref())
                == Some(image);
            on_image
                && s.observed_generation == d.metadata.generation
                && s.updated_replicas == Some(1)
                && s.available_replicas == Some(1)
                && s.replicas == Some(1)
        };
        let (tx, rx) = futures::channel::mpsc::unbounded::<(String, String)>();
        let writer = {
            let client = client.clone();
            tokio::spawn(async move {
                let params = PatchParams::apply("bench-floor-cr").force();
                rx.take(n)
                    .for_each_concurrent(concurrency, |(ns, name)| {
                        let (client, params) = (client.clone(), params.clone());
                        async move {
                            let api = Api::<AppBundle>::namespaced(client, &ns);
                            let now = k8s_openapi::jiff::Timestamp::now().to_string();
                            let status = serde_json::json!({
                                "apiVersion": "kubundle.dev/v1alpha1", "kind": "AppBundle",
                                "status": {
                                    "observedGeneration": 1,
                                    "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                                    "availableReplicas": 1, "image": image,
                                    "replicaSummary": "1/1",
                                    "selector": format!("app.kubernetes.io/instance={name},\
                                        app.kubernetes.io/managed-by=kubundle,\
                                        app.kubernetes.io/name={name}"),
                                    "address": {"type": "ClusterIP",
                                        "url": format!("http://{name}.{ns}.svc.cluster.local:80")},
                                    "conditions": [
                                        {"type": "Ready", "status": "True", "reason": "Available",
                                         "message": format!("1 of 1 pods run {image} and are available"),
                                         "observedGeneration": 1,
                                         "lastTransitionTime": now},
                                        {"type": "Reconciling", "status": "False", "reason": "Done",
                                         "message": "", "observedGeneration": 1,
                                         "lastTransitionTime": now},
                                        {"type": "Stalled", "status": "False", "reason": "Done",
                                         "message": "", "observedGeneration": 1,
                                         "lastTransitionTime": now}]}});
                            api.patch_status(&name, &params, &Patch::Apply(&status))
                                .await
                                .unwrap();
                        }
                    })
                    .await;
                t0.elapsed().as_secs_f64()
            })
        };
        let mut sent: std::collections::HashSet<(String, String)> = Default::default();
        let mut stream = watcher(
            Api::<Deployment>::all(client),
            watcher::Config::default().labels(&bench_selector()),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        while sent.len() < n {
            let Some(d) = stream.try_next().await.unwrap() else {
                panic!("watch ended")
            };
            let key = (d.namespace().unwrap_or_default(), d.name_any());
            if names.contains(&key.0) && rolled_out(&d) && sent.insert(key.clone()) {
                tx.unbounded_send(key).unwrap();
            }
        }
        let t = writer.await.unwrap();
        log(format!(
            "floor with the CR: {n} statuses ({image}) written after {t:.1} s"
        ));
        t
    })
}

async fn kubundle(client: &Client, n: usize, args: &Args, result: &mut Result) {
    let names = namespaces("bench", n, args.namespaces);
    create_namespaces(client, &names).await;
    let log_dir = args.out.clone();
    let operator = Operator::start(&args.operator, args.concurrency, &log_dir).await;
    let requests_before = apiserver_requests(client).await;
    let writes_before = series_sum(&operator.metrics().await, "kubundle_api_writes_total");
    let cpu_before = control_plane_cpu(&args.cluster_dir);

    let t0 = Instant::now();
    let meta_selector = watcher::Config::default().labels(&bench_selector());
    let deployments = tokio::spawn(track(
        Api::<PartialObjectMeta<Deployment>>::all(client.clone()),
        meta_selector.clone(),
        n,
        t0,
        format!("kubundle N={n}: Deployments exist"),
        |_| true,
    ));
    let services = tokio::spawn(track(
        Api::<PartialObjectMeta<Service>>::all(client.clone()),
        meta_selector,
        n,
        t0,
        format!("kubundle N={n}: Services exist"),
        |_| true,
    ));
    let ready = tokio::spawn(track(
        Api::<AppBundle>::all(client.clone()),
        watcher::Config::default(),
        n,
        t0,
        format!("kubundle N={n}: AppBundles Ready"),
        |b: &AppBundle| is_ready_on(b, "nginx:1.27"),
    ));
    let available = tokio::spawn(track(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default().labels(&bench_selector()),
        n,
        t0,
        format!("kubundle N={n}: Deployments Available"),
        |d: &Deployment| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1),
    ));
    let requests_own_before = series_sum(&operator.metrics().await, "kubundle_api_requests_total");
    stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let ns = names[i % names.len()].clone();
            async move {
                let b = bundle(&format!("app-{i}"), &ns, "nginx:1.27");
                Api::<AppBundle>::namespaced(client, &ns)
                    .create(&PostParams::default(), &b)
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<()>()
        .await;
    log(format!(
        "kubundle N={n}: {n} AppBundles created after {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    result.kubundle_children_s = deployments.await.unwrap().max(services.await.unwrap());
    result.kubundle_ready_s = ready.await.unwrap();
    result.kubundle_available_s = available.await.unwrap();
    let requests_own_after = series_sum(&operator.metrics().await, "kubundle_api_requests_total");
    result.kubundle_control_plane_cpu_s =
        cpu_delta(&cpu_before, &control_plane_cpu(&args.cluster_dir));
    result.operator_cpu_s = operator.cpu_seconds();
    result.operator_peak_rss_mib = operator.peak_rss_mib();

    let requests_after = apiserver_requests(client).await;
    result.kubundle_cluster_requests_per_bundle =
        requests_per_bundle(&requests_before, &requests_after, n);
    let per = |x: f64| x / n as f64;
    for (resource, sub, verb) in [
        ("deployments", "", "GET"),
        ("services", "", "GET"),
        ("deployments", "", "APPLY"),
        ("services", "", "APPLY"),
        ("appbundles", "status", "APPLY"),
    ] {
        let key = format!(
            "{resource}{}{sub} {verb}",
            if sub.is_empty() { "" } else { "/" }
        );
        result.requests_per_bundle.insert(
            key,
            per(delta(
                &requests_before,
                &requests_after,
                resource,
                sub,
                verb,
            )),
        );
    }
    for (series, value) in &requests_own_after {
        let d = value - requests_own_before.get(series).unwrap_or(&0.0);
        if d > 0.0 {
            let verb = series
                .trim_start_matches("{verb=\"")
                .trim_end_matches("\"}");
            result
                .operator_requests_per_bundle
                .insert(verb.to_string(), per(d));
        }
    }
    let writes_after = series_sum(&operator.metrics().await, "kubundle_api_writes_total");
    for (series, value) in &writes_after {
        let d = value - writes_before.get(series).unwrap_or(&0.0);
        if d > 0.0 {
            result
                .operator_writes_per_bundle
                .insert(series.clone(), per(d));
        }
    }

    log(format!(
        "kubundle N={n}: control plane CPU {:.1} s until Ready; operator CPU {:.1} s",
        result.kubundle_control_plane_cpu_s["total"], result.operator_cpu_s
    ));
    if args.convergence_only {
        operator.stop().await;
        delete_namespaces(client, &names).await;
        return;
    }

    // Steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ours, server) = (
        series_sum(&operator.metrics().await, "kubundle_api_writes_total"),
        apiserver_requests(client).await,
    );
    log(format!(
        "kubundle N={n}: steady state, {} s",
        args.steady_seconds
    ));
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let (ours2, server2) = (
        series_sum(&operator.metrics().await, "kubundle_api_writes_total"),
        apiserver_requests(client).await,
    );
    result.steady_writes_operator = ours2.values().sum::<f64>() - ours.values().sum::<f64>();
    result.steady_writes_apiserver = server_writes(&server, &server2);
    result.steady_seconds = args.steady_seconds;
    result.operator_steady_rss_mib = operator.rss_mib("VmRSS:");
    result.operator_peak_rss_mib = operator.peak_rss_mib();
    result.operator_cpu_s = operator.cpu_seconds();

    // Restart with N existing AppBundles.
    operator.stop().await;
    let server_before = apiserver_requests(client).await;
    let t0 = Instant::now();
    let operator = Operator::start(&args.operator, args.concurrency, &log_dir).await;
    loop {
        let m = operator.metrics().await;
        let reconciled = series_sum(&m, "kubundle_reconcile_total")
            .get("{result=\"success\"}")
            .copied()
            .unwrap_or(0.0);
        if reconciled >= n as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result.restart_reconciled_s = t0.elapsed().as_secs_f64();
    result.restart_writes = server_writes(&server_before, &apiserver_requests(client).await);
    log(format!(
        "kubundle N={n}: restarted, {n} reconciled after {:.1} s, {} writes",
        result.restart_reconciled_s, result.restart_writes
    ));

    // Image update of all N.
    let t0 = Instant::now();
    let updated = tokio::spawn(track(
        Api::<AppBundle>::all(client.clone()),
        watcher::Config::default(),
        n,
        t0,
        format!("kubundle N={n}: Ready on the new image"),
        |b: &AppBundle| is_ready_on(b, "nginx:1.28"),
    ));
    let patch = serde_json::json!({"spec": {"image": "nginx:1.28"}});
    stream::iter(0..n)
        .map(|i| {
            let (client, patch) = (client.clone(), patch.clone());
            let ns = names[i % names.len()].clone();
            async move {
                Api::<AppBundle>::namespaced(client, &ns)
                    .patch(
                        &format!("app-{i}"),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<()>()
        .await;
    result.image_update_ready_s = updated.await.unwrap();
    result.operator_peak_rss_after_update_mib = operator.peak_rss_mib();
    operator.stop().await;
    delete_namespaces(client, &names).await;
}

fn print_table(results: &[Result]) {
    println!();
    println!(
        "{:>6} | {:>10} {:>10} {:>6} | {:>10} {:>10} {:>6} | {:>8} {:>7} | {:>6} {:>6} | {:>8} {:>8}",
        "N",
        "floor chl",
        "kb chl",
        "ratio",
        "floor avl",
        "kb ready",
        "ratio",
        "RSS MiB",
        "CPU s",
        "steady",
        "writes",
        "restart",
        "update"
    );
    for r in results {
        println!(
            "{:>6} | {:>9.1}s {:>9.1}s {:>6.2} | {:>9.1}s {:>9.1}s {:>6.2} | {:>8.1} {:>7.1} | {:>6} {:>6} | {:>7.1}s {:>7.1}s",
            r.n,
            r.floor_children_s,
            r.kubundle_children_s,
            r.ratio_children,
            r.floor_available_s,
            r.kubundle_ready_s,
            r.ratio_ready,
            r.operator_peak_rss_mib,
            r.operator_cpu_s,
            r.steady_writes_operator,
            r.steady_writes_apiserver,
            r.restart_reconciled_s,
            r.image_update_ready_s
        );
    }
    for r in results {
        println!(
            "N={}: floor with the CR Ready {:.1} s, kubundle Ready ÷ it {:.2}; control-plane CPU \
             floor with the CR {:.1} s, kubundle {:.1} s; image update floor with the CR {:.1} s",
            r.n,
            r.floor_cr_ready_s,
            r.ratio_ready_cr,
            r.floor_cr_control_plane_cpu_s
                .get("total")
                .copied()
                .unwrap_or(0.0),
            r.kubundle_control_plane_cpu_s
                .get("total")
                .copied()
                .unwrap_or(0.0),
            r.floor_cr_image_update_s
        );
        println!(
            "N={}: requests per AppBundle (API server) {:?}; kubundle writes per AppBundle {:?}",
            r.n, r.requests_per_bundle, r.operator_writes_per_bundle
        );
        let (f, k) = (
            &r.floor_cluster_requests_per_bundle,
            &r.kubundle_cluster_requests_per_bundle,
        );
        let extra: Vec<String> = f
            .keys()
            .chain(k.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|key| {
                let d = k.get(key).unwrap_or(&0.0) - f.get(key).unwrap_or(&0.0);
                (d.abs() >= 0.1).then(|| format!("{key} {d:+.2}"))
            })
            .collect();
        println!(
            "N={}: all requests per AppBundle, floor {:.1}, kubundle {:.1}; kubundle - floor: {}",
            r.n,
            f.values().sum::<f64>(),
            k.values().sum::<f64>(),
            extra.join(", ")
        );
    }
}

/// The results of each size, in size order.
fn by_size(results: &[Result]) -> Vec<(usize, Vec<&Result>)> {
    let mut sizes: Vec<usize> = results.iter().map(|r| r.n).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .into_iter()
        .map(|n| (n, results.iter().filter(|r| r.n == n).collect()))
        .collect()
}

/// "min–max" of a figure over rounds (one value when they agree at this precision).
fn range(rs: &[&Result], decimals: usize, value: impl Fn(&Result) -> f64) -> String {
    let values: Vec<f64> = rs.iter().map(|r| value(r)).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (a, b) = (format!("{min:.decimals$}"), format!("{max:.decimals$}"));
    if a == b { a } else { format!("{a}–{b}") }
}

fn sum(map: &BTreeMap<String, f64>) -> f64 {
    map.values().sum()
}

fn own_writes(r: &Result) -> f64 {
    ["APPLY", "PATCH", "POST", "PUT", "DELETE"]
        .iter()
        .map(|v| r.operator_requests_per_bundle.get(*v).unwrap_or(&0.0))
        .sum()
}

/// The generated part of BENCHMARKS.md: every column, min–max over the rounds.
fn markdown(results: &[Result]) -> String {
    let sizes = by_size(results);
    let runs: Vec<String> = sizes
        .iter()
        .map(|(n, rs)| format!("N = {n}: {} run(s)", rs.len()))
        .collect();
    let mut out = format!(
        "Generated by `tests/bench/run.sh` from `tests/bench/results/results.json` ({}); where \
         a size ran more than once, each cell is the range over its runs.\n\n",
        runs.join(", ")
    );
    out.push_str(
        "| N | floor: children / all Available | kubundle: children / all Available / all Ready | Ready ÷ floor Available | control-plane CPU, floor / kubundle | operator CPU |\n\
         |---|---|---|---|---|---|\n",
    );
    for (n, rs) in &sizes {
        out.push_str(&format!(
            "| {n} | {} s / {} s | {} s / {} s / {} s | {} | {} s / {} s | {} s |\n",
            range(rs, 1, |r| r.floor_children_s),
            range(rs, 1, |r| r.floor_available_s),
            range(rs, 1, |r| r.kubundle_children_s),
            range(rs, 1, |r| r.kubundle_available_s),
            range(rs, 1, |r| r.kubundle_ready_s),
            range(rs, 2, |r| r.ratio_ready),
            range(rs, 1, |r| r
                .floor_control_plane_cpu_s
                .get("total")
                .copied()
                .unwrap_or(0.0)),
            range(rs, 1, |r| r
                .kubundle_control_plane_cpu_s
                .get("total")
                .copied()
                .unwrap_or(0.0)),
            range(rs, 1, |r| r.operator_cpu_s),
        ));
    }
    out.push_str(
        "\nAgainst the floor that includes the custom resource (AppBundles created, children applied, \
         one status written per AppBundle; no operator):\n\n\
         | N | floor with the CR: all Ready | kubundle Ready ÷ it | control-plane CPU, floor with the CR / kubundle (÷) | API requests per AppBundle, floor with the CR / kubundle | image update: floor with the CR / kubundle (÷) |\n\
         |---|---|---|---|---|---|\n",
    );
    let cp = |m: &BTreeMap<String, f64>| m.get("total").copied().unwrap_or(0.0);
    for (n, rs) in &sizes {
        let rs: Vec<&Result> = rs
            .iter()
            .copied()
            .filter(|r| r.floor_cr_ready_s > 0.0)
            .collect();
        if rs.is_empty() {
            continue;
        }
        let update = if rs.iter().all(|r| r.floor_cr_image_update_s > 0.0) {
            format!(
                "{} s / {} s ({})",
                range(&rs, 1, |r| r.floor_cr_image_update_s),
                range(&rs, 1, |r| r.image_update_ready_s),
                range(&rs, 2, |r| r.image_update_ready_s
                    / r.floor_cr_image_update_s),
            )
        } else {
            "not measured (--convergence-only)".into()
        };
        out.push_str(&format!(
            "| {n} | {} s | {} | {} s / {} s ({}) | {} / {} | {update} |\n",
            range(&rs, 1, |r| r.floor_cr_ready_s),
            range(&rs, 2, |r| r.ratio_ready_cr),
            range(&rs, 1, |r| cp(&r.floor_cr_control_plane_cpu_s)),
            range(&rs, 1, |r| cp(&r.kubundle_control_plane_cpu_s)),
            range(&rs, 2, |r| cp(&r.kubundle_control_plane_cpu_s)
                / cp(&r.floor_cr_control_plane_cpu_s)),
            range(&rs, 1, |r| sum(&r.floor_cr_cluster_requests_per_bundle)),
            range(&rs, 1, |r| sum(&r.kubundle_cluster_requests_per_bundle)),
        ));
    }
    out.push_str(
        "\n| N | API requests per AppBundle (all clients), floor / kubundle | kubundle's own requests per AppBundle (writes) | kubundle's own, by verb |\n\
         |---|---|---|---|\n",
    );
    for (n, rs) in &sizes {
        let verbs: Vec<String> = kubundle::metrics::VERBS
            .iter()
            .filter(|v| {
                rs.iter()
                    .any(|r| r.operator_requests_per_bundle.contains_key(**v))
            })
            .map(|v| {
                format!(
                    "{v} {}",
                    range(rs, 2, |r| r
                        .operator_requests_per_bundle
                        .get(*v)
                        .copied()
                        .unwrap_or(0.0))
                )
            })
            .collect();
        out.push_str(&format!(
            "| {n} | {} / {} | {} ({}) | {} |\n",
            range(rs, 1, |r| sum(&r.floor_cluster_requests_per_bundle)),
            range(rs, 1, |r| sum(&r.kubundle_cluster_requests_per_bundle)),
            range(rs, 2, |r| sum(&r.operator_requests_per_bundle)),
            range(rs, 2, own_writes),
            verbs.join(", "),
        ));
    }
    out.push_str(
        "\n| N | peak RSS: creating / restart + image update | RSS at steady state | writes in the steady window (own / API server) | restart: all reconciled / writes | image update: all Ready on the new image |\n\
         |---|---|---|---|---|---|\n",
    );
    for (n, rs) in &sizes {
        out.push_str(&format!(
            "| {n} | {} / {} MiB | {} MiB | {} / {} in {} s | {} s / {} | {} s |\n",
            range(rs, 1, |r| r.operator_peak_rss_mib),
            range(rs, 1, |r| r.operator_peak_rss_after_update_mib),
            range(rs, 1, |r| r.operator_steady_rss_mib),
            range(rs, 0, |r| r.steady_writes_operator),
            range(rs, 0, |r| r.steady_writes_apiserver),
            rs[0].steady_seconds,
            range(rs, 1, |r| r.restart_reconciled_s),
            range(rs, 0, |r| r.restart_writes),
            range(rs, 1, |r| r.image_update_ready_s),
        ));
    }
    out.push_str("\nRequests per AppBundle, kubundle minus floor, by resource and verb (all clients; differences of at least 0.1):\n\n");
    for (n, rs) in &sizes {
        let keys: std::collections::BTreeSet<&String> = rs
            .iter()
            .flat_map(|r| {
                r.floor_cluster_requests_per_bundle
                    .keys()
                    .chain(r.kubundle_cluster_requests_per_bundle.keys())
            })
            .collect();
        let diffs: Vec<String> = keys
            .into_iter()
            .filter_map(|key| {
                let d = |r: &Result| {
                    r.kubundle_cluster_requests_per_bundle
                        .get(key)
                        .unwrap_or(&0.0)
                        - r.floor_cluster_requests_per_bundle.get(key).unwrap_or(&0.0)
                };
                rs.iter()
                    .any(|r| d(r).abs() >= 0.1)
                    .then(|| format!("{key} {}", range(rs, 2, d)))
            })
            .collect();
        out.push_str(&format!("- N = {n}: {}\n", diffs.join(", ")));
    }
    out.push_str("\nRequests per AppBundle, kubundle minus the floor with the CR (differences of at least 0.1):\n\n");
    for (n, rs) in &sizes {
        let rs: Vec<&Result> = rs
            .iter()
            .copied()
            .filter(|r| r.floor_cr_ready_s > 0.0)
            .collect();
        if rs.is_empty() {
            continue;
        }
        let keys: std::collections::BTreeSet<&String> = rs
            .iter()
            .flat_map(|r| {
                r.floor_cr_cluster_requests_per_bundle
                    .keys()
                    .chain(r.kubundle_cluster_requests_per_bundle.keys())
            })
            .collect();
        let diffs: Vec<String> = keys
            .into_iter()
            .filter_map(|key| {
                let d = |r: &Result| {
                    r.kubundle_cluster_requests_per_bundle
                        .get(key)
                        .unwrap_or(&0.0)
                        - r.floor_cr_cluster_requests_per_bundle
                            .get(key)
                            .unwrap_or(&0.0)
                };
                rs.iter()
                    .any(|r| d(r).abs() >= 0.1)
                    .then(|| format!("{key} {}", range(&rs, 2, d)))
            })
            .collect();
        out.push_str(&format!("- N = {n}: {}\n", diffs.join(", ")));
    }
    out
}

/// Rewrites the generated tables in `args.markdown` (between its markers), if it has them.
fn write_markdown(results: &[Result], args: &Args) {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let Ok(text) = std::fs::read_to_string(&args.markdown) else {
        return;
    };
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        log(format!(
            "{} has no {BEGIN} ... {END} markers; not rewritten",
            args.markdown.display()
        ));
        return;
    };
    let updated = format!("{}{BEGIN}\n{}{}", &text[..a], markdown(results), &text[b..]);
    std::fs::write(&args.markdown, updated).unwrap();
    log(format!("rewrote the tables in {}", args.markdown.display()));
}

/// A plotted series: its label, colour, and value for one result.
type Line = (&'static str, plotters::style::RGBColor, fn(&Result) -> f64);

fn plot(results: &[Result], path: &Path) {
    use plotters::prelude::*;
    // One point per size: the mean over the rounds.
    let mean = |rs: &[&Result], f: fn(&Result) -> f64| {
        rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64
    };
    let merged: Vec<Result> = by_size(results)
        .into_iter()
        .map(|(n, rs)| Result {
            n,
            floor_available_s: mean(&rs, |r| r.floor_available_s),
            kubundle_ready_s: mean(&rs, |r| r.kubundle_ready_s),
            image_update_ready_s: mean(&rs, |r| r.image_update_ready_s),
            restart_reconciled_s: mean(&rs, |r| r.restart_reconciled_s),
            operator_peak_rss_mib: mean(&rs, |r| r.operator_peak_rss_mib),
            operator_peak_rss_after_update_mib: mean(&rs, |r| r.operator_peak_rss_after_update_mib),
            ..Result::default()
        })
        .collect();
    let results = &merged[..];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 450)).into_drawing_area();
        root.fill(&WHITE).unwrap();
        let (left, right) = root.split_horizontally(560);
        let max_n = results.iter().map(|r| r.n).max().unwrap_or(100) as f64;
        let min_n = results.iter().map(|r| r.n).min().unwrap_or(100) as f64;
        let x_range = (min_n * 0.8)..(max_n * 1.25);
        // Ticks at the measured sizes only, as whole numbers.
        let sizes: Vec<f64> = results.iter().map(|r| r.n as f64).collect();
        let whole = |v: &f64| format!("{v:.0}");
        let max_t = results
            .iter()
            .flat_map(|r| {
                [
                    r.floor_available_s,
                    r.kubundle_ready_s,
                    r.image_update_ready_s,
                ]
            })
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(&left)
            .caption("Time to converge", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(
                x_range.clone().log_scale().with_key_points(sizes.clone()),
                0.0..max_t * 1.1,
            )
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("AppBundles (N)")
            .y_desc("seconds")
            .x_label_formatter(&whole)
            .y_label_formatter(&whole)
            .draw()
            .unwrap();
        let lines: [Line; 4] = [
            ("floor: Deployments Available", BLACK, |r| {
                r.floor_available_s
            }),
            ("kubundle: all Ready", BLUE, |r| r.kubundle_ready_s),
            ("kubundle: image update Ready", GREEN, |r| {
                r.image_update_ready_s
            }),
            ("kubundle: restart reconciled", RED, |r| {
                r.restart_reconciled_s
            }),
        ];
        for (label, color, value) in lines {
            let points: Vec<(f64, f64)> = results.iter().map(|r| (r.n as f64, value(r))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .unwrap()
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .unwrap();
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .unwrap();

        let max_rss = results
            .iter()
            .map(|r| {
                r.operator_peak_rss_mib
                    .max(r.operator_peak_rss_after_update_mib)
            })
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(&right)
            .caption("kubundle peak memory (RSS)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(
                x_range.log_scale().with_key_points(sizes),
                0.0..(max_rss * 1.2).max(70.0),
            )
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("AppBundles (N)")
            .y_desc("MiB")
            .x_label_formatter(&whole)
            .y_label_formatter(&whole)
            .draw()
            .unwrap();
        let lines: [Line; 2] = [
            ("creating N AppBundles", BLUE, |r| r.operator_peak_rss_mib),
            ("restarted, then image update", GREEN, |r| {
                r.operator_peak_rss_after_update_mib
            }),
        ];
        for (label, color, value) in lines {
            let points: Vec<(f64, f64)> = results.iter().map(|r| (r.n as f64, value(r))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .unwrap()
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .unwrap();
        }
        chart
            .draw_series(LineSeries::new(
                vec![(min_n * 0.8, 64.0), (max_n * 1.25, 64.0)],
                RED.stroke_width(1),
            ))
            .unwrap()
            .label("target: 64 MiB")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .unwrap();
        root.present().unwrap();
    }
    let mut options = resvg::usvg::Options::default();
    // plotters asks for the generic "sans-serif", which usvg maps to Arial unless told otherwise.
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    fonts.set_sans_serif_family("DejaVu Sans");
    options.font_family = "DejaVu Sans".into();
    let tree = resvg::usvg::Tree::from_str(&svg, &options).unwrap();
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap.save_png(path).unwrap();
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).unwrap();
    if args.plot_only {
        let text = std::fs::read_to_string(args.out.join("results.json")).unwrap();
        let results: Vec<Result> = serde_json::from_str(&text).unwrap();
        print_table(&results);
        write_markdown(&results, &args);
        plot(&results, &args.out.join("bench.png"));
        return;
    }
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG: run with the local cluster's env");
    let mut results = Vec::new();
    let rounds = if args.latency_only { 0 } else { args.repeats };
    for round in 0..rounds {
        for &n in &args.sizes {
            log(format!(
                "=== round {}/{}, N = {n}: floor (direct server-side apply of {} children, concurrency {})",
                round + 1,
                args.repeats,
                2 * n,
                args.concurrency
            ));
            let floor = floor(&client, n, &args).await;
            let mut r = Result {
                n,
                round,
                floor_children_s: floor.children,
                floor_available_s: floor.available,
                floor_control_plane_cpu_s: floor.cpu,
                floor_cluster_requests_per_bundle: floor.requests,
                ..Result::default()
            };
            log(format!(
                "=== round {}/{}, N = {n}: floor with the custom resource (AppBundles created, \
                 children applied, one status each)",
                round + 1,
                args.repeats
            ));
            floor_cr(&client, n, &args, &mut r).await;
            log(format!(
                "=== round {}/{}, N = {n}: kubundle (--concurrency {})",
                round + 1,
                args.repeats,
                args.concurrency
            ));
            kubundle(&client, n, &args, &mut r).await;
            r.ratio_children = r.kubundle_children_s / r.floor_children_s;
            r.ratio_ready = r.kubundle_ready_s / r.floor_available_s;
            r.ratio_ready_cr = r.kubundle_ready_s / r.floor_cr_ready_s;
            results.push(r);
            print_table(&results);
            std::fs::write(
                args.out.join("results.json"),
                serde_json::to_string_pretty(&results).unwrap(),
            )
            .unwrap();
            write_markdown(&results, &args);
        }
    }
    if args.latency_tries > 0 {
        let l = latency::measure(&client, &args, args.latency_tries, args.latency_burst).await;
        std::fs::write(
            args.out.join("latency.json"),
            serde_json::to_string_pretty(&l).unwrap(),
        )
        .unwrap();
        println!(
            "latency (p50 / p99, seconds): idle: AppBundle Ready {:.3} / {:.3}, Deployment \
             Available {:.3} / {:.3}; during a burst of {}: AppBundle Ready {:.3} / {:.3}, \
             Deployment Available {:.3} / {:.3} ({} tries)",
            l.idle.appbundle_ready.p50,
            l.idle.appbundle_ready.p99,
            l.idle.deployment_available.p50,
            l.idle.deployment_available.p99,
            l.burst,
            l.busy.appbundle_ready.p50,
            l.busy.appbundle_ready.p99,
            l.busy.deployment_available.p50,
            l.busy.deployment_available.p99,
            l.busy.appbundle_ready.seconds.len()
        );
    }
    if results.is_empty() {
        return;
    }
    let png = args.out.join("bench.png");
    plot(&results, &png);
    log(format!(
        "wrote {} and {}",
        args.out.join("results.json").display(),
        png.display()
    ));
}
