//! The latency a person sees: one AppBundle applied until it is Ready, against one Deployment
//! applied directly until it is Available: on an idle cluster one after the other, and during a
//! burst of N new AppBundles both at once (so that both meet the same moment of the burst), a
//! try starting every second while the burst lasts.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kubundle::api::AppBundle;
use kubundle::render;
use serde::Serialize;

use crate::{Args, Operator, bundle, create_namespaces, delete_namespaces, is_ready_on, log};

/// Seconds per try, in order, and their percentiles.
#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct Series {
    pub seconds: Vec<f64>,
    pub p50: f64,
    pub p99: f64,
}

impl Series {
    fn of(seconds: Vec<f64>) -> Series {
        let mut sorted = seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |p: f64| {
            if sorted.is_empty() {
                0.0
            } else {
                sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
            }
        };
        Series {
            p50: at(0.5),
            p99: at(0.99),
            seconds,
        }
    }
}

/// One setting's tries: the AppBundle's apply → Ready, the Deployment's apply → Available.
#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct Tries {
    pub appbundle_ready: Series,
    pub deployment_available: Series,
}

#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct Latency {
    pub idle: Tries,
    /// During a burst of `burst` new AppBundles (tries started every second until the burst was
    /// all Ready, or `tries` of them).
    pub busy: Tries,
    pub burst: usize,
}

/// Waits for the first object of `api` named `name` for which `done` holds; the watch starts
/// before `act` runs. Returns the seconds from `act`'s start.
async fn time_until<K, F, A>(api: Api<K>, name: &str, done: F, act: A) -> f64
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
    F: Fn(&K) -> bool,
    A: std::future::Future<Output = ()>,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    // The watch is open once its initial (empty) list is in: the first poll lists.
    let first = tokio::time::timeout(Duration::from_millis(200), stream.try_next()).await;
    if let Ok(Ok(Some(o))) = &first
        && done(o)
    {
        return 0.0;
    }
    let t0 = Instant::now();
    act.await;
    while let Some(o) = stream.try_next().await.unwrap() {
        if done(&o) {
            return t0.elapsed().as_secs_f64();
        }
    }
    panic!("watch ended");
}

/// One try of each, the AppBundle first; `i` names them.
/// One try: AppBundle `one-I` created until Ready, and Deployment `direct-I` applied until
/// Available; one after the other, or (`together`) both at once.
async fn one_try(client: &Client, ns: &str, i: usize, together: bool) -> (f64, f64) {
    let name = format!("one-{i}");
    let bundles: Api<AppBundle> = Api::namespaced(client.clone(), ns);
    let b = bundle(&name, ns, "nginx:1.27");
    let ready = time_until(
        bundles.clone(),
        &name,
        |b: &AppBundle| is_ready_on(b, "nginx:1.27"),
        async {
            bundles.create(&PostParams::default(), &b).await.unwrap();
        },
    );
    let direct = format!("direct-{i}");
    let mut d = bundle(&direct, ns, "nginx:1.27");
    d.metadata.uid = Some(format!("00000000-0000-4000-9000-{i:012}"));
    let mut deployment = render::deployment(&d).unwrap();
    deployment.metadata.owner_references = None;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let available = time_until(
        deployments.clone(),
        &direct,
        |d: &Deployment| {
            let s = d.status.clone().unwrap_or_default();
            s.observed_generation == d.metadata.generation && s.available_replicas == Some(1)
        },
        async {
            deployments
                .patch(
                    &direct,
                    &PatchParams::apply("bench-latency").force(),
                    &Patch::Apply(&deployment),
                )
                .await
                .unwrap();
        },
    );
    if together {
        tokio::join!(ready, available)
    } else {
        let ready = ready.await;
        (ready, available.await)
    }
}

/// How often a try starts during the burst.
const BUSY_CADENCE: Duration = Duration::from_secs(1);

/// `tries` tries on an idle cluster, then tries during a burst of `burst` new AppBundles.
pub async fn measure(client: &Client, args: &Args, tries: usize, burst: usize) -> Latency {
    let ns = format!("latency-{}", std::process::id());
    create_namespaces(client, std::slice::from_ref(&ns)).await;
    let operator = Operator::start(&args.operator, args.concurrency, &args.out).await;
    let (mut ready, mut available) = (Vec::new(), Vec::new());
    for i in 0..tries {
        let (r, a) = one_try(client, &ns, i, false).await;
        ready.push(r);
        available.push(a);
    }
    let idle = Tries {
        appbundle_ready: Series::of(ready),
        deployment_available: Series::of(available),
    };
    log(format!(
        "latency, idle: AppBundle Ready p50 {:.3} s p99 {:.3} s; Deployment Available p50 {:.3} s \
         p99 {:.3} s ({tries} tries each)",
        idle.appbundle_ready.p50,
        idle.appbundle_ready.p99,
        idle.deployment_available.p50,
        idle.deployment_available.p99
    ));

    // The burst, in its own namespaces.
    let names = crate::namespaces("burst", burst, args.namespaces);
    create_namespaces(client, &names).await;
    let creating = {
        let (client, names, concurrency) = (client.clone(), names.clone(), args.concurrency);
        tokio::spawn(async move {
            stream::iter(0..burst)
                .map(|i| {
                    let client = client.clone();
                    let ns = names[i % names.len()].clone();
                    async move {
                        Api::<AppBundle>::namespaced(client, &ns)
                            .create(
                                &PostParams::default(),
                                &bundle(&format!("app-{i}"), &ns, "nginx:1.27"),
                            )
                            .await
                            .unwrap();
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<()>()
                .await
        })
    };
    let all_ready = tokio::spawn(crate::track(
        Api::<AppBundle>::all(client.clone()),
        watcher::Config::default(),
        burst,
        Instant::now(),
        format!("latency: the burst of {burst} Ready"),
        |b: &AppBundle| {
            b.metadata
                .namespace
                .as_deref()
                .is_some_and(|ns| ns.starts_with("burst-"))
                && is_ready_on(b, "nginx:1.27")
        },
    ));
    // One try waits for the burst's queue: they start every second (each one's AppBundle and
    // Deployment at once, so that both meet the same moment of the burst) while it lasts.
    let mut running = Vec::new();
    let mut i = tries;
    while !all_ready.is_finished() && running.len() < tries {
        let client = client.clone();
        let ns = ns.clone();
        running.push(tokio::spawn(
            async move { one_try(&client, &ns, i, true).await },
        ));
        i += 1;
        tokio::time::sleep(BUSY_CADENCE).await;
    }
    let (mut ready, mut available) = (Vec::new(), Vec::new());
    for try_ in running {
        let (r, a) = try_.await.unwrap();
        ready.push(r);
        available.push(a);
    }
    creating.await.unwrap();
    let _ = all_ready.await;
    let busy = Tries {
        appbundle_ready: Series::of(ready),
        deployment_available: Series::of(available),
    };
    log(format!(
        "latency, during a burst of {burst}: AppBundle Ready p50 {:.3} s p99 {:.3} s; Deployment \
         Available p50 {:.3} s p99 {:.3} s ({} tries each)",
        busy.appbundle_ready.p50,
        busy.appbundle_ready.p99,
        busy.deployment_available.p50,
        busy.deployment_available.p99,
        busy.appbundle_ready.seconds.len()
    ));
    operator.stop().await;
    let mut all = names;
    all.push(ns);
    delete_namespaces(client, &all).await;
    Latency { idle, busy, burst }
}
