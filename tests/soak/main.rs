//! The chaos soak: AppBundles of every kind of spec receive a steady stream of random valid
//! changes (every section of the spec, deletions and re-creations in each propagation mode, orphan
//! deletes with re-adoption, ConfigMap changes) while faults of every class are injected from a
//! seeded schedule (faults.rs), beside the hostile AppBundles of support/hostile.rs. When both
//! stop, the invariant checker (check.rs) proves from the API server's own state that nothing was
//! lost or left behind, that every status is true (each hostile AppBundle still Stalled with the
//! API server's words), that
//! no one else's object was written, that the operator then writes nothing for a quiet minute,
//! and, from the API server's audit log, that no two replicas ever wrote as leader in the same
//! second.
//!
//! The test command runs the short form (5 minutes, 100 AppBundles, at least 20 faults); the long
//! form is `tests/soak.sh` (an hour, 1,000 AppBundles). Settings, from the environment:
//!   KUBUNDLE_SOAK_SECONDS  how long changes and faults go on (default 300)
//!   KUBUNDLE_SOAK_BUNDLES  how many AppBundles (default 100)
//!   KUBUNDLE_SOAK_FAULTS   at least this many faults, even past the duration (default 20)
//!   KUBUNDLE_SOAK_RATE     changes per second (default 2)
//!   KUBUNDLE_SOAK_CLASSES  the fault classes, comma-separated (default all: kill, freeze,
//!                          apiserver, etcd, latency, bandwidth, reset, blackhole, storm); with
//!                          latency,bandwidth,reset only (faults that leave the Lease alone;
//!                          restarts and black holes make the leader exit) one process leads
//!                          the whole run, which shows its memory over time
//!   KUBUNDLE_SOAK_SEED     FAULTS:CHANGES, the seeds to replay (default: a fixed seed for the
//!                          fault schedule and a random one, printed, for the changes)
//! It needs the cluster to itself (it restarts the API server and etcd): the test command runs it
//! on a cluster of its own, after the fault suite (tests/chaos.sh).

#[path = "../support/mod.rs"]
mod support;

mod check;
mod faults;
mod model;
mod replicas;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use kubundle::api::AppBundle;
use kubundle::render::ChildKind;

use check::{Foreign, TAKEN};
use faults::{Fault, Targets};
use model::{CONFIG, Model, Rng};
use replicas::Replicas;
use support::*;

/// About how long one fault lasts, on average over the classes (faults.rs), in seconds.
const FAULT_SECONDS: u64 = 14;

/// The fault schedule's default seed (the changes' seed is random unless given).
const FIXED_SEED: u64 = 20_261_206;

struct Settings {
    seconds: u64,
    bundles: usize,
    faults: usize,
    rate: f64,
    classes: Vec<Fault>,
    fault_seed: u64,
    change_seed: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let num = |k: &str, d: u64| var(k).map(|v| v.parse().expect(k)).unwrap_or(d);
        let (fault_seed, change_seed) = match var("KUBUNDLE_SOAK_SEED") {
            Some(s) => match s.split_once(':') {
                Some((f, c)) => (f.parse().expect("seed"), c.parse().expect("seed")),
                None => (s.parse().expect("seed"), random_seed()),
            },
            None => (FIXED_SEED, random_seed()),
        };
        Settings {
            seconds: num("KUBUNDLE_SOAK_SECONDS", 300),
            bundles: num("KUBUNDLE_SOAK_BUNDLES", 100) as usize,
            faults: num("KUBUNDLE_SOAK_FAULTS", 20) as usize,
            rate: var("KUBUNDLE_SOAK_RATE")
                .map(|v| v.parse().expect("rate"))
                .unwrap_or(2.0),
            classes: var("KUBUNDLE_SOAK_CLASSES")
                .map(|v| Fault::parse_list(&v).expect("KUBUNDLE_SOAK_CLASSES"))
                .unwrap_or_else(|| Fault::ALL.to_vec()),
            fault_seed,
            change_seed,
        }
    }
}

fn random_seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    Rng::new(t.as_nanos() as u64 ^ u64::from(std::process::id())).next() % 1_000_000_000
}

/// A change waiting to reach its Deployment: when it was made, and how near a fault.
type Pending = Arc<Mutex<HashMap<(String, String, u64), (Instant, Near)>>>;

/// How near a fault a change was made: during one, or how long after the last one ended.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Near {
    During,
    Within10s,
    Within30s,
    Later,
}

impl Near {
    const ALL: [Near; 4] = [Near::During, Near::Within10s, Near::Within30s, Near::Later];

    fn label(self) -> &'static str {
        match self {
            Near::During => "during a fault",
            Near::Within10s => "0-10 s after one",
            Near::Within30s => "10-30 s after one",
            Near::Later => "30 s or more after one",
        }
    }
}

/// Where the fault schedule is: whether a fault is on, and when the last one ended.
#[derive(Default)]
struct FaultClock {
    on: AtomicBool,
    /// Milliseconds since the soak began when the last fault ended (0: none yet).
    ended_ms: AtomicU64,
}

impl FaultClock {
    fn near(&self, began: Instant) -> Near {
        if self.on.load(Ordering::Relaxed) {
            return Near::During;
        }
        let ended = self.ended_ms.load(Ordering::Relaxed);
        if ended == 0 {
            return Near::Later;
        }
        match (began.elapsed().as_millis() as u64).saturating_sub(ended) {
            0..10_000 => Near::Within10s,
            10_000..30_000 => Near::Within30s,
            _ => Near::Later,
        }
    }
}

/// What the soak measured.
#[derive(Default)]
struct Tally {
    changes: AtomicU64,
    change_errors: AtomicU64,
    recreated: AtomicU64,
    orphaned: AtomicU64,
    config_changes: AtomicU64,
    /// Apply latency (change -> Deployment updated), by how near a fault the change was.
    latency: Mutex<BTreeMap<Near, Vec<Duration>>>,
}

fn percentile(values: &mut [Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    Some(values[i])
}

fn apply_params() -> PatchParams {
    PatchParams::apply("kubundle-soak").force()
}

#[tokio::test]
async fn chaos_soak() {
    let s = Settings::from_env();
    let keys: Vec<&str> = s.classes.iter().map(|f| f.key()).collect();
    let mut replay = format!("KUBUNDLE_SOAK_SEED={}:{}", s.fault_seed, s.change_seed);
    if s.classes.len() < Fault::ALL.len() {
        replay = format!("KUBUNDLE_SOAK_CLASSES={} {replay}", keys.join(","));
    }
    eprintln!(
        "soak: {} s, {} AppBundles, >= {} faults of {}, {} changes/s; seeds: faults {} (fixed \
         unless given), changes {}; replay with {replay}",
        s.seconds,
        s.bundles,
        s.faults,
        keys.join(","),
        s.rate,
        s.fault_seed,
        s.change_seed
    );
    let client = client().await;
    let lease_ns = create_namespace(&client, "soak-lease").await;
    // Hostile AppBundles beside the good ones: each must come to rest Stalled (with the API
    // server's words) and stay so through every fault, and none may hold up a good one.
    let hostile_ns = create_namespace(&client, "soak-hostile").await;
    let mut namespaces = Vec::new();
    for _ in 0..4 {
        namespaces.push(create_namespace(&client, "soak").await);
    }

    // Objects that are not kubundle's: a ConfigMap and a Deployment beside the AppBundles, and a
    // Service whose name an AppBundle wants.
    let mut foreign = Vec::new();
    for ns in &namespaces {
        apply_yaml(
            ns,
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {CONFIG}}}\ndata: {{MODE: a}}\n"
            ),
        );
        apply_yaml(
            ns,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: foreign}\ndata: {owner: someone-else}\n",
        );
        apply_yaml(
            ns,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: foreign}\nspec:\n  replicas: 1\n  \
             selector: {matchLabels: {app: foreign}}\n  template:\n    metadata: {labels: {app: foreign}}\n    \
             spec: {containers: [{name: c, image: nginx}]}\n",
        );
    }
    let first = &namespaces[0];
    apply_yaml(
        first,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {TAKEN}}}\nspec: {{ports: [{{port: 80}}]}}\n"
        ),
    );
    for ns in &namespaces {
        let kinds: &[(ChildKind, &str)] = if ns == first {
            &[
                (ChildKind::Deployment, "foreign"),
                (ChildKind::Service, TAKEN),
            ]
        } else {
            &[(ChildKind::Deployment, "foreign")]
        };
        for (kind, name) in kinds {
            let o = kubundle::reconcile::children::api(&client, ns, *kind)
                .get(name)
                .await
                .unwrap();
            foreign.push(Foreign {
                kind: *kind,
                ns: ns.clone(),
                name: name.to_string(),
                resource_version: o.resource_version().unwrap(),
            });
        }
    }

    let proxy = support::toxiproxy::Toxiproxy::start("kube-apiserver").await;
    let since = SystemTime::now();
    let began = Instant::now();
    let replicas = Replicas::start(&client, &lease_ns, &["soak-a", "soak-b"], &proxy).await;
    let supervisor = replicas.supervise(began);

    // The AppBundles, each with its model.
    let mut rng = Rng::new(s.change_seed);
    let mut models: BTreeMap<(String, String), Model> = BTreeMap::new();
    for i in 0..s.bundles {
        let ns = namespaces[i % namespaces.len()].clone();
        models.insert((ns, format!("b{i}")), Model::random(&mut rng));
    }
    for ((ns, name), m) in &models {
        Api::<AppBundle>::namespaced(client.clone(), ns)
            .patch(name, &apply_params(), &Patch::Apply(m.manifest(name)))
            .await
            .unwrap_or_else(|e| panic!("cannot create {ns}/{name}: {e}\n{}", m.manifest(name)));
    }
    apply_yaml(
        first,
        &format!(
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {TAKEN}}}\nspec: {{image: nginx, ports: [{{containerPort: 80}}]}}\n"
        ),
    );
    let hostile: Vec<String> = support::hostile::CASES
        .iter()
        .enumerate()
        .map(|(i, (extra, _))| bundle_yaml(&format!("h{i}"), extra))
        .collect();
    apply_yaml(&hostile_ns, &hostile.join("---\n"));
    let violations = || async {
        let mut v = check::violations(&client, &namespaces, &foreign).await;
        v.extend(check::hostile(&client, &hostile_ns).await);
        v
    };
    let converged = eventually(
        Duration::from_secs(300),
        "every AppBundle Ready (and every hostile one Stalled) at the start",
        || async {
            let v = violations().await;
            if v.is_empty() {
                Ok(began.elapsed())
            } else {
                Err(format!("{} violations, first: {}", v.len(), v[0]))
            }
        },
    )
    .await;
    eprintln!(
        "soak: {} AppBundles Ready, and {} hostile ones Stalled beside them, {converged:?} after \
         the start",
        s.bundles,
        hostile.len()
    );

    // Every change's latency: from the change to its Deployment holding its number.
    let pending: Pending = Arc::default();
    let tally = Arc::new(Tally::default());
    let watched: HashSet<String> = namespaces.iter().cloned().collect();
    let latency_watch = {
        let (pending, tally, client) = (pending.clone(), tally.clone(), client.clone());
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels("app.kubernetes.io/managed-by=kubundle");
            let mut stream = watcher(Api::<Deployment>::all(client), cfg)
                .default_backoff()
                .touched_objects()
                .boxed();
            while let Some(event) = stream.next().await {
                let Ok(d) = event else { continue };
                let ns = d.namespace().unwrap_or_default();
                if !watched.contains(&ns) {
                    continue;
                }
                let change = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(|p| p.containers.first())
                    .and_then(|c| c.env.as_ref())
                    .and_then(|env| env.iter().find(|e| e.name == "SOAK_CHANGE"))
                    .and_then(|e| e.value.as_deref())
                    .and_then(|v| v.parse::<u64>().ok());
                let Some(change) = change else { continue };
                let key = (ns, d.name_any(), change);
                if let Some((at, near)) = pending.lock().unwrap().remove(&key) {
                    let mut l = tally.latency.lock().unwrap();
                    l.entry(near).or_default().push(at.elapsed());
                }
            }
        })
    };

    // The change stream.
    let stop = Arc::new(AtomicBool::new(false));
    let burst = Arc::new(AtomicBool::new(false));
    let faulty = Arc::new(FaultClock::default());
    let models = Arc::new(tokio::sync::Mutex::new(models));
    let busy: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    let changes = {
        let (client, stop, burst, faulty) =
            (client.clone(), stop.clone(), burst.clone(), faulty.clone());
        let (models, busy, pending, tally) =
            (models.clone(), busy.clone(), pending.clone(), tally.clone());
        let namespaces = namespaces.clone();
        let rate = s.rate;
        tokio::spawn(async move {
            let mut rng = rng;
            let mut number = 0u64;
            let mut tasks = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let pause = if burst.load(Ordering::Relaxed) {
                    0.1
                } else {
                    1.0 / rate
                };
                tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                number += 1;
                let keys: Vec<(String, String)> = models.lock().await.keys().cloned().collect();
                let key = rng.pick(&keys);
                if busy.lock().unwrap().contains(&key) {
                    continue;
                }
                let (ns, name) = key.clone();
                let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
                let roll = rng.below(100);
                if roll < 11 {
                    // Deleted (background, foreground, or orphaning its children) and made again.
                    let policy = match roll {
                        0..=3 => PropagationPolicy::Background,
                        4..=6 => PropagationPolicy::Foreground,
                        _ => PropagationPolicy::Orphan,
                    };
                    busy.lock().unwrap().insert(key.clone());
                    let manifest = {
                        let mut m = models.lock().await;
                        let m = m.get_mut(&key).unwrap();
                        m.change = number;
                        m.manifest(&name)
                    };
                    let (busy, tally, pending, faulty) =
                        (busy.clone(), tally.clone(), pending.clone(), faulty.clone());
                    tasks.push(tokio::spawn(async move {
                        recreate(&api, &name, policy, manifest, &tally).await;
                        pending
                            .lock()
                            .unwrap()
                            .insert((ns, name, number), (Instant::now(), faulty.near(began)));
                        busy.lock().unwrap().remove(&key);
                    }));
                    continue;
                }
                if roll < 13 {
                    let cm: Api<ConfigMap> =
                        Api::namespaced(client.clone(), &rng.pick(&namespaces));
                    let patch = serde_json::json!({"data": {"MODE": format!("m{number}")}});
                    if cm
                        .patch(CONFIG, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .is_ok()
                    {
                        tally.config_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let mut all = models.lock().await;
                let m = all.get_mut(&key).unwrap();
                let mut next = m.clone();
                next.mutate(&mut rng, number);
                match api
                    .patch(&name, &apply_params(), &Patch::Apply(next.manifest(&name)))
                    .await
                {
                    Ok(_) => {
                        *m = next;
                        tally.changes.fetch_add(1, Ordering::Relaxed);
                        pending
                            .lock()
                            .unwrap()
                            .insert((ns, name, number), (Instant::now(), faulty.near(began)));
                    }
                    Err(kube::Error::Api(e)) if e.code == 422 => {
                        panic!(
                            "the soak made an invalid change to {ns}/{name}: {}\n{}",
                            e.message,
                            next.manifest(&name)
                        )
                    }
                    Err(_) => {
                        tally.change_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    // The fault schedule.
    let mut fault_rng = Rng::new(s.fault_seed);
    let mut round = Vec::new();
    let mut injected: Vec<(Fault, Duration, Duration, String)> = Vec::new();
    let targets = Targets {
        replicas: &replicas,
        proxy: &proxy,
        burst: burst.clone(),
    };
    // The pause between faults: 2-4 s in the short form; in a longer one, spread so that the
    // faults asked for fill the duration (a fault lasts about 14 s), with quiet stretches whose
    // latency is reported apart.
    let per_fault = s.seconds / s.faults.max(1) as u64;
    let gap = if per_fault <= 15 {
        3
    } else {
        (2 * per_fault.saturating_sub(FAULT_SECONDS))
            .saturating_sub(2)
            .max(3)
    };
    let schedule_start = Instant::now();
    while injected.len() < s.faults || schedule_start.elapsed() < Duration::from_secs(s.seconds) {
        tokio::time::sleep(Duration::from_secs(2 + fault_rng.below(gap))).await;
        let fault = faults::next_fault(&mut fault_rng, &s.classes, &mut round);
        let at = began.elapsed();
        faulty.on.store(true, Ordering::Relaxed);
        let note = faults::inject(fault, &targets).await;
        faulty
            .ended_ms
            .store(began.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
        faulty.on.store(false, Ordering::Relaxed);
        eprintln!("soak: fault {} at {at:?}: {note}", fault.name());
        injected.push((fault, at, began.elapsed() - at, note));
    }
    let last_fault_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    changes.await.unwrap();

    // Convergence, then the invariants.
    let mut last;
    let converged_after = loop {
        last = violations().await;
        if last.is_empty() {
            break Some(last_fault_end.elapsed());
        }
        if last_fault_end.elapsed() > Duration::from_secs(300) {
            break None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let report = |tally: &Tally| {
        let mut l = tally.latency.lock().unwrap();
        let mut latency = Vec::new();
        for near in Near::ALL {
            let v = l.entry(near).or_default();
            latency.push(format!(
                "{} p50 {:?} p99 {:?} (n={})",
                near.label(),
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.len()
            ));
        }
        let mut outside: Vec<Duration> = Near::ALL[1..]
            .iter()
            .flat_map(|n| l[n].iter().copied())
            .collect();
        format!(
            "changes applied {} (refused by a fault {}), deleted and re-created {} (orphaning {}), \
             ConfigMap changes {}; apply latency {}; outside faults p50 {:?} p99 {:?} (n={}); \
             changes never seen applied {}",
            tally.changes.load(Ordering::Relaxed),
            tally.change_errors.load(Ordering::Relaxed),
            tally.recreated.load(Ordering::Relaxed),
            tally.orphaned.load(Ordering::Relaxed),
            tally.config_changes.load(Ordering::Relaxed),
            latency.join(", "),
            percentile(&mut outside, 0.5),
            percentile(&mut outside, 0.99),
            outside.len(),
            pending.lock().unwrap().len(),
        )
    };
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    for (f, ..) in &injected {
        *by_class.entry(f.name()).or_default() += 1;
    }
    eprintln!("soak: {} faults: {by_class:?}", injected.len());
    eprintln!("soak: {}", report(&tally));
    eprintln!("soak: replica starts {:?}", replicas.starts().await);
    let Some(converged_after) = converged_after else {
        // The memory figures of a failed run count too.
        for line in replicas::rss_report(&replicas.rss.lock().unwrap()) {
            eprintln!("soak: {line}");
        }
        panic!(
            "not converged 300 s after the last fault ({replay}); {} violations:\n{}",
            last.len(),
            last.join("\n")
        );
    };
    eprintln!("soak: converged {converged_after:?} after the last fault ended");

    // A quiet minute: no write at all (the Lease's renewals aside).
    let quiet_from = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let quiet_writes: Vec<audit::Write> = audit::writes_since(quiet_from)
        .into_iter()
        .filter(|w| w.resource != "leases")
        .collect();
    let since_quiet = |t: SystemTime| {
        t.duration_since(quiet_from)
            .map(|d| format!("{:.3} s", d.as_secs_f64()))
            .unwrap_or_else(|_| "before".into())
    };
    let mut quiet = Vec::new();
    for w in &quiet_writes {
        quiet.push(format!(
            "{} {} {} ({} into the quiet minute)",
            w.who,
            w.verb,
            w.what,
            since_quiet(w.at)
        ));
        // An AppBundle's status written: what it says now, and when it was made, to tell
        // a late report from a needless one.
        if w.resource == "appbundles"
            && let Some((ns, name)) = w
                .what
                .split_whitespace()
                .last()
                .and_then(|n| n.split_once('/'))
            && let Ok(b) = Api::<AppBundle>::namespaced(client.clone(), ns)
                .get(name)
                .await
        {
            let made = b
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| since_quiet(SystemTime::from(t.0)))
                .unwrap_or_default();
            quiet.push(format!(
                "  made {made} into it; status now {}",
                serde_json::to_string(&b.status).unwrap_or_default()
            ));
        }
    }
    // The checks below are of every write since the start: the log must still hold it.
    let writes = audit::writes_since(since);
    assert!(
        audit::reach_back_to(&writes, since, Duration::from_secs(30)),
        "the API server's audit log no longer reaches back to the soak's start ({replay}): \
         a log rotated away would leave the split-brain check seeing only part of the run"
    );
    let split = audit::split_brain_seconds(&writes);
    eprintln!(
        "soak: audited writes {} ({} by the replicas outside Leases)",
        writes.len(),
        writes.iter().filter(|w| w.resource != "leases").count(),
    );
    for line in replicas::rss_report(&replicas.rss.lock().unwrap()) {
        eprintln!("soak: {line}");
    }
    assert!(
        quiet.is_empty(),
        "writes in the quiet minute after convergence ({replay}):\n{}",
        quiet.join("\n")
    );
    assert!(
        split.is_empty(),
        "two replicas wrote as leader in the same second ({replay}):\n{}",
        split.join("\n")
    );
    let classes: HashSet<Fault> = injected.iter().map(|(f, ..)| *f).collect();
    assert_eq!(
        classes.len(),
        s.classes.len(),
        "not every class of fault chosen was injected"
    );
    assert!(injected.len() >= s.faults);
    let storms: Vec<&String> = injected
        .iter()
        .filter(|(f, ..)| *f == Fault::Storm)
        .map(|(.., n)| n)
        .collect();
    assert!(
        !s.classes.contains(&Fault::Storm)
            || !storms.iter().all(|n| n.contains(": 0 requests rejected")),
        "no storm made the API server reject anything: {storms:?}"
    );

    replicas.stop().await;
    supervisor.abort();
    latency_watch.abort();
    for ns in namespaces.iter().chain([&lease_ns, &hostile_ns]) {
        delete_namespace(&client, ns).await;
    }
}

/// Deletes AppBundle `name` with `policy`, waits until it is gone, and creates it again.
async fn recreate(
    api: &Api<AppBundle>,
    name: &str,
    policy: PropagationPolicy,
    manifest: serde_json::Value,
    tally: &Tally,
) {
    let orphan = matches!(policy, PropagationPolicy::Orphan);
    let params = DeleteParams {
        propagation_policy: Some(policy),
        ..DeleteParams::default()
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        match api.delete(name, &params).await {
            Ok(_) | Err(kube::Error::Api(_)) => break,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    while start.elapsed() < Duration::from_secs(180) {
        if let Ok(None) = api.get_opt(name).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    loop {
        match api
            .patch(name, &apply_params(), &Patch::Apply(&manifest))
            .await
        {
            Ok(_) => break,
            Err(e) if start.elapsed() > Duration::from_secs(300) => {
                panic!("cannot re-create {name} in 300 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    tally.recreated.fetch_add(1, Ordering::Relaxed);
    if orphan {
        tally.orphaned.fetch_add(1, Ordering::Relaxed);
    }
}
