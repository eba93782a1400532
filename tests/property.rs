//! Property tests of the whole write path against the real API server.
//!
//! AppBundle specs are generated the way people (and tools) write them, valid and hostile alike:
//! names, ports, quantities as strings and numbers, duplicate keys, empty values, bad enums,
//! missing volumes. Each one is sent to the API server as a server-side dry-run create of the
//! AppBundle; when the CRD admits it, kubundle renders its children and sends them as server-side
//! dry-run applies. The properties:
//!
//! 1. every spec the CRD admits either applies, or is refused with a message that kubundle
//!    classifies as a definite refusal (so it is reported Stalled with the server's words, not
//!    retried silently);
//! 2. what applies is up to date by kubundle's own comparison with what the server stores (so
//!    it is not re-applied on every reconcile);
//! 3. rendering never panics (`render_never_panics`, which needs no cluster; set
//!    `KUBUNDLE_RENDER_CASES=1000000` and run `cargo test --release --test property
//!    render_never_panics` for a million cases).
//!
//! Every section of the spec is generated, the ones added after the first release included
//! (sidecars, init containers, autoscaling, disruption budget, HTTPRoute and Ingress, envFrom,
//! config-following, history, canaries), and every child the spec asks for is sent (with a
//! canary, those of a canary under way too): the test fails when some kind of child is rendered
//! too rarely to be tested.
//!
//! Case counts: `KUBUNDLE_PROPERTY_CASES` (default 6,000) and `KUBUNDLE_RENDER_CASES` (default
//! 20,000).

mod support;

use std::sync::Mutex;

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use kubundle::api::{AppBundle, AppBundleSpec};
use kubundle::reconcile::children::drift::covers;
use kubundle::reconcile::children::is_definite_refusal;
use kubundle::render::ChildKind;
use kubundle::render::canary::CanaryChildren;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use support::*;

fn cases(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An optional field: absent about a third of the time.
fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 2 => s.prop_map(Some)].boxed()
}

/// An optional section: present one time in four.
fn sometimes<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![3 => Just(None), 1 => s.prop_map(Some)].boxed()
}

/// A rarely present optional field (one time in thirteen).
fn rare<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![12 => Just(None), 1 => s.prop_map(Some)].boxed()
}

/// Sets `key` of the JSON object `obj` to `value` when there is one.
fn put<T: serde::Serialize>(obj: &mut Value, key: &str, value: Option<T>) {
    if let Some(v) = value {
        obj[key] = json!(v);
    }
}

fn quantity() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => Just(json!("100m")),
        3 => Just(json!("0.5")),
        3 => Just(json!(0.5)),
        3 => Just(json!(2)),
        3 => Just(json!(1e9)),
        3 => Just(json!("1e9")),
        3 => Just(json!("1000m")),
        3 => Just(json!("1024Mi")),
        3 => Just(json!("1Gi")),
        3 => Just(json!("64Mi")),
        1 => Just(json!("lots")),
        1 => Just(json!("-1")),
        1 => Just(json!("")),
        3 => Just(json!("1.5Gi")),
        1 => Just(json!(0)),
    ]
    .boxed()
}

fn name_like() -> BoxedStrategy<String> {
    prop_oneof![
        10 => "[a-z][a-z0-9]{0,8}",
        10 => "[a-z]{1,3}",
        2 => Just("http".to_string()),
        1 => Just("Bad_Name".to_string()),
        1 => Just("".to_string()),
        1 => Just("-x".to_string()),
        1 => Just("x".repeat(70)),
    ]
    .boxed()
}

fn port() -> BoxedStrategy<Value> {
    (
        prop_oneof![
            20 => "[a-z]{1,6}".prop_map(Some),
            1 => Just(None),
            1 => Just(Some("9x".to_string())),
            1 => Just(Some("a".repeat(16)))
        ],
        prop_oneof![1 => 1..100i32, 1 => 79..82i32, 1 => Just(0), 1 => Just(65536), 20 => 1000..65535i32],
        rare(prop_oneof![10 => 1..100i32, 1 => Just(0), 5 => Just(80)]),
        rare(prop_oneof![
            Just("TCP"),
            Just("UDP"),
            Just("SCTP"),
            Just("HTTP")
        ]),
        rare(prop_oneof![30000..30010i32, Just(80), Just(0)]),
        rare(prop_oneof![
            3 => Just("http"),
            3 => Just("kubernetes.io/h2c"),
            1 => Just("not a protocol!")
        ]),
    )
        .prop_map(|(name, cp, sp, proto, np, app)| {
            let mut p = json!({"containerPort": cp});
            if let Some(v) = name {
                p["name"] = json!(v);
            }
            if let Some(v) = sp {
                p["servicePort"] = json!(v);
            }
            if let Some(v) = proto {
                p["protocol"] = json!(v);
            }
            if let Some(v) = np {
                p["nodePort"] = json!(v);
            }
            if let Some(v) = app {
                p["appProtocol"] = json!(v);
            }
            p
        })
        .boxed()
}

fn env_var() -> BoxedStrategy<Value> {
    (
        prop_oneof![
            5 => "[A-C]",
            20 => "[A-Z_][A-Z0-9_]{0,6}",
            1 => Just("1BAD".to_string()),
            1 => Just("".to_string()),
            1 => Just("with space".to_string())
        ],
        opt(prop_oneof![
            Just("".to_string()),
            "[a-z0-9]{0,5}",
            Just("1000m".to_string())
        ]),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(name, value, from_field)| {
            let mut e = json!({"name": name});
            if let Some(v) = value {
                e["value"] = json!(v);
            }
            if from_field {
                e["valueFrom"] = json!({"fieldRef": {"fieldPath": "metadata.name"}});
            }
            e
        })
        .boxed()
}

fn resources() -> BoxedStrategy<Value> {
    (
        opt(quantity()),
        opt(quantity()),
        opt(quantity()),
        opt(quantity()),
    )
        .prop_map(|(rc, rm, lc, lm)| {
            let mut requests = json!({});
            let mut limits = json!({});
            if let Some(v) = rc {
                requests["cpu"] = v;
            }
            if let Some(v) = rm {
                requests["memory"] = v;
            }
            if let Some(v) = lc {
                limits["cpu"] = v;
            }
            if let Some(v) = lm {
                limits["memory"] = v;
            }
            json!({"requests": requests, "limits": limits})
        })
        .boxed()
}

fn probe() -> BoxedStrategy<Value> {
    (
        prop_oneof![
            Just(json!(80)),
            Just(json!("http")),
            Just(json!(0)),
            Just(json!("NOPE"))
        ],
        prop_oneof![Just("/"), Just("/healthz"), Just("")],
        opt(-1..5i32),
        prop::bool::ANY,
    )
        .prop_map(|(port, path, period, tcp)| {
            let mut p = if tcp {
                json!({"tcpSocket": {"port": port}})
            } else {
                json!({"httpGet": {"port": port, "path": path}})
            };
            if let Some(v) = period {
                p["periodSeconds"] = json!(v);
            }
            p
        })
        .boxed()
}

fn pod_template() -> BoxedStrategy<Value> {
    (
        opt(prop::collection::btree_map(
            prop_oneof![
                "[a-z]{1,4}",
                Just("bad key!".to_string()),
                Just("team".to_string())
            ],
            prop_oneof!["[a-z]{0,4}", Just("bad value!".to_string())],
            0..3,
        )),
        opt(name_like()),
        opt(prop::collection::vec((name_like(), opt(quantity())), 0..3)),
        opt(prop::collection::vec(
            (
                name_like(),
                prop_oneof![5 => Just("/data"), 5 => Just("/d"), 1 => Just("relative"), 1 => Just("")],
                prop::bool::weighted(0.2),
            ),
            0..3,
        )),
        opt(-5..60i64),
        opt(prop::collection::vec(
            prop_oneof!["[a-b]", Just("".to_string())],
            0..3,
        )),
    )
        .prop_map(|(labels, sa, volumes, mounts, grace, pull)| {
            let mut t = json!({});
            if let Some(v) = labels {
                t["labels"] = json!(v);
            }
            if let Some(v) = sa {
                t["serviceAccountName"] = json!(v);
            }
            if let Some(v) = volumes {
                t["volumes"] = v
                    .into_iter()
                    .map(|(name, size)| match size {
                        Some(q) => json!({"name": name, "emptyDir": {"sizeLimit": q}}),
                        None => json!({"name": name, "emptyDir": {}}),
                    })
                    .collect();
            }
            if let Some(v) = mounts {
                t["volumeMounts"] = v
                    .into_iter()
                    .map(
                        |(name, path, ro)| json!({"name": name, "mountPath": path, "readOnly": ro}),
                    )
                    .collect();
            }
            if let Some(v) = grace {
                t["terminationGracePeriodSeconds"] = json!(v);
            }
            if let Some(v) = pull {
                t["imagePullSecrets"] = v.into_iter().map(|n| json!({"name": n})).collect();
            }
            t
        })
        .boxed()
}

/// A sidecar or init container (sidecars: `init` false).
fn container(init: bool) -> BoxedStrategy<Value> {
    (
        name_like(),
        prop_oneof![
            10 => "[a-z]{1,8}:[0-9]\\.[0-9]".boxed(),
            1 => Just("".to_string()).boxed()
        ],
        opt(prop::collection::vec("[a-z-]{0,6}", 0..3)),
        rare(prop::collection::vec(port(), 0..2)),
        rare(probe()),
        rare(resources()),
        rare(prop_oneof![
            8 => Just(None),
            1 => Just(Some("Always")),
            1 => Just(Some("OnFailure"))
        ]),
    )
        .prop_map(move |(name, image, args, ports, probe, res, restart)| {
            let mut c = json!({"name": name, "image": image});
            put(&mut c, "args", args);
            if let Some(v) = ports {
                // A container's ports, in the Container's own form.
                c["ports"] = v
                    .into_iter()
                    .map(|p| {
                        let mut out = json!({"containerPort": p["containerPort"]});
                        if let Some(n) = p.get("name") {
                            out["name"] = n.clone();
                        }
                        out
                    })
                    .collect();
            }
            if let Some(v) = probe {
                c[if init {
                    "livenessProbe"
                } else {
                    "startupProbe"
                }] = v;
            }
            put(&mut c, "resources", res);
            if let Some(Some(v)) = restart {
                c["restartPolicy"] = json!(v);
            }
            c
        })
        .boxed()
}

fn containers(init: bool) -> BoxedStrategy<Value> {
    prop_oneof![
        10 => prop::collection::vec(container(init), 0..3),
        1 => container(init).prop_map(|c| vec![c.clone(), c]),
    ]
    .prop_map(Value::from)
    .boxed()
}

fn autoscaling() -> BoxedStrategy<Value> {
    (
        opt(prop_oneof![10 => 1..4i32, 1 => Just(0), 1 => Just(-1)]),
        prop_oneof![10 => 1..6i32, 1 => Just(0), 1 => Just(1001)],
        opt(prop_oneof![10 => 10..95i32, 1 => Just(0), 1 => Just(101)]),
        rare(prop_oneof![10 => 10..95i32, 1 => Just(0)]),
    )
        .prop_map(|(min, max, cpu, memory)| {
            let mut a = json!({"maxReplicas": max});
            put(&mut a, "minReplicas", min);
            put(&mut a, "targetCPUUtilizationPercentage", cpu);
            put(&mut a, "targetMemoryUtilizationPercentage", memory);
            a
        })
        .boxed()
}

fn count_or_percent() -> BoxedStrategy<Value> {
    prop_oneof![
        10 => (0..4i32).prop_map(|n| json!(n)),
        10 => Just(json!("50%")),
        1 => Just(json!("0%")),
        1 => Just(json!("100%")),
        1 => Just(json!("101%")),
        1 => Just(json!("half")),
        1 => Just(json!(-1)),
    ]
    .boxed()
}

fn disruption_budget() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => count_or_percent().prop_map(|v| (None, Some(v))),
        3 => count_or_percent().prop_map(|v| (Some(v), None)),
        1 => (count_or_percent(), count_or_percent()).prop_map(|(a, b)| (Some(a), Some(b))),
        1 => Just((None, None)),
    ]
    .prop_map(|(min, max)| {
        let mut b = json!({});
        put(&mut b, "minAvailable", min);
        put(&mut b, "maxUnavailable", max);
        b
    })
    .boxed()
}

fn http() -> BoxedStrategy<Value> {
    (
        opt(prop::collection::vec(
            prop_oneof![
                30 => "[a-z]{1,6}\\.test",
                2 => "\\*\\.[a-z]{1,6}\\.test",
                1 => Just("Not A Host".to_string()),
                1 => Just("".to_string())
            ],
            0..3,
        )),
        opt(prop_oneof![
            15 => Just("/"),
            15 => Just("/api"),
            1 => Just("api"),
            1 => Just("")
        ]),
        prop_oneof![
            8 => Just((true, false)),
            5 => Just((false, true)),
            1 => Just((true, true)),
            1 => Just((false, false)),
        ],
        (
            prop_oneof![10 => Just("local".to_string()), 1 => name_like()],
            opt(prop_oneof![Just("gateway-system".to_string()), name_like()]),
            rare(prop_oneof![Just("web"), Just("")]),
        ),
        (
            opt(prop_oneof![10 => Just("traefik"), 3 => Just("gce"), 1 => Just("Bad Class")]),
            rare(name_like()),
        ),
    )
        .prop_map(
            |(hosts, path, (has_gateway, has_ingress), gateway, ingress)| {
                let gateway = has_gateway.then_some(gateway);
                let ingress = has_ingress.then_some(ingress);
                let mut h = json!({});
                put(&mut h, "hostnames", hosts);
                put(&mut h, "path", path);
                if let Some((name, ns, section)) = gateway {
                    let mut g = json!({"name": name});
                    put(&mut g, "namespace", ns);
                    put(&mut g, "sectionName", section);
                    h["gateway"] = g;
                }
                if let Some((class, tls)) = ingress {
                    let mut i = json!({});
                    put(&mut i, "className", class);
                    put(&mut i, "tlsSecretName", tls);
                    h["ingress"] = i;
                }
                h
            },
        )
        .boxed()
}

fn env_from() -> BoxedStrategy<Value> {
    (
        prop::bool::ANY,
        name_like(),
        rare(prop_oneof![Just("APP_"), Just("1bad")]),
        rare(prop::bool::ANY),
    )
        .prop_map(|(config_map, name, prefix, optional)| {
            let mut reference = json!({"name": name});
            put(&mut reference, "optional", optional);
            let mut e = if config_map {
                json!({"configMapRef": reference})
            } else {
                json!({"secretRef": reference})
            };
            put(&mut e, "prefix", prefix);
            e
        })
        .boxed()
}

fn rollout() -> BoxedStrategy<Value> {
    (
        prop_oneof![
            10 => prop::collection::btree_set(1..100i32, 1..4).prop_map(|w| w.into_iter().collect::<Vec<_>>()),
            1 => Just(vec![50, 20]),
            1 => Just(vec![]),
            1 => Just(vec![0, 150]),
        ],
        prop::collection::vec(opt(prop_oneof![20 => 0..120i32, 1 => Just(-1)]), 4),
        opt((
            opt(prop_oneof![10 => 5..120i32, 1 => Just(1)]),
            opt(prop_oneof![10 => 0..4i32, 1 => Just(-1)]),
            opt(prop::collection::vec(
                (
                    prop_oneof![10 => Just("errors".to_string()), 1 => name_like()],
                    prop_oneof![
                        5 => Just("http://prometheus.monitoring:9090"),
                        1 => Just("not a url")
                    ],
                    prop_oneof![5 => Just("sum(rate(x[1m]))"), 1 => Just("")],
                    opt(0.0..1.0f64),
                    opt(0.0..1.0f64),
                ),
                0..2,
            )),
            rare(prop::collection::vec(
                (
                    prop_oneof![10 => Just("gate".to_string()), 1 => name_like()],
                    prop_oneof![5 => Just("http://gate.test/ok"), 1 => Just("")],
                ),
                0..2,
            )),
        )),
    )
        .prop_map(|(weights, pauses, analysis)| {
            let steps: Vec<Value> = weights
                .iter()
                .zip(pauses.iter().cycle())
                .map(|(w, p)| match p {
                    Some(p) => json!({"weight": w, "pauseSeconds": p}),
                    None => json!({"weight": w}),
                })
                .collect();
            let mut canary = json!({"steps": steps});
            if let Some((interval, limit, queries, hooks)) = analysis {
                let mut a = json!({});
                put(&mut a, "intervalSeconds", interval);
                put(&mut a, "failureLimit", limit);
                if let Some(v) = queries {
                    a["prometheus"] = v
                        .into_iter()
                        .map(|(name, address, query, min, max)| {
                            let mut q = json!({"name": name, "address": address, "query": query});
                            put(&mut q, "min", min);
                            put(&mut q, "max", max);
                            q
                        })
                        .collect();
                }
                if let Some(v) = hooks {
                    a["webhooks"] = v
                        .into_iter()
                        .map(|(name, url)| json!({"name": name, "url": url}))
                        .collect();
                }
                canary["analysis"] = a;
            }
            json!({"canary": canary})
        })
        .boxed()
}

/// An AppBundle spec as a person might write it (valid or not).
fn spec() -> BoxedStrategy<Value> {
    let head = (
        prop_oneof![
            30 => "[a-z]{1,8}(/[a-z]{1,6})?:[0-9]\\.[0-9]{1,2}",
            1 => Just(" nginx:1.27".to_string()),
            1 => Just("nginx:1.27 ".to_string()),
            1 => Just("".to_string()),
            1 => Just("UPPER/Case:Tag".to_string()),
            1 => Just("nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_string()),
        ],
        opt(prop_oneof![10 => 0..5i32, 1 => Just(-1), 1 => Just(10001)]),
        prop_oneof![1 => prop::collection::vec(port(), 0..4), 6 => prop::collection::vec(port(), 1..2)],
        opt((
            opt(prop_oneof![
                5 => Just("ClusterIP"),
                5 => Just("NodePort"),
                5 => Just("LoadBalancer"),
                3 => Just("Headless"),
                1 => Just("ExternalName")
            ]),
            rare(prop_oneof![Just("Local"), Just("Cluster"), Just("Nowhere")]),
            rare(prop::collection::vec(
                prop_oneof![5 => Just("10.0.0.0/8"), 1 => Just("not-a-cidr")],
                0..2,
            )),
        )),
    );
    let tail = (
        opt(prop::collection::vec(env_var(), 0..4)),
        opt(resources()),
        opt(probe()),
        opt(pod_template()),
        opt(prop_oneof![
            Just("Always"),
            Just("Never"),
            Just("Sometimes")
        ]),
        opt(prop_oneof![0..3i32, Just(600)]),
        opt(prop::collection::vec(
            prop_oneof!["[a-z]{0,4}", Just("".to_string())],
            0..3,
        )),
    );
    // The sections added after the first release: other children, other containers, canaries.
    let newer = (
        sometimes(containers(false)),
        sometimes(containers(true)),
        sometimes(autoscaling()),
        sometimes(disruption_budget()),
        // A canary needs the HTTPRoute: most canaries come with one.
        sometimes(prop_oneof![
            3 => http().prop_map(|h| (Some(h), None)),
            3 => (http(), rollout()).prop_map(|(mut h, r)| {
                if h.get("gateway").is_none() && h.get("ingress").is_none() {
                    h["gateway"] = json!({"name": "local"});
                }
                (Some(h), Some(r))
            }),
            1 => rollout().prop_map(|r| (None, Some(r))),
        ]),
        sometimes(prop::collection::vec(env_from(), 0..3)),
        rare(prop::bool::ANY),
        rare(prop_oneof![10 => 1..20i32, 1 => Just(0)]),
    );
    (head, tail, newer)
        .prop_map(
            |(
                (image, replicas, ports, service),
                (env, res, probe, pod, pull, deadline, args),
                (sidecars, inits, scaling, budget, exposure, env_from, follow, history),
            )| {
                let (http, rollout) = exposure.unwrap_or_default();
                let mut s = json!({"image": image, "ports": ports});
                if let Some(v) = replicas {
                    s["replicas"] = json!(v);
                }
                if let Some((type_, etp, ranges)) = service {
                    let mut svc = json!({});
                    if let Some(v) = type_ {
                        svc["type"] = json!(v);
                    }
                    if let Some(v) = etp {
                        svc["externalTrafficPolicy"] = json!(v);
                    }
                    if let Some(v) = ranges {
                        svc["loadBalancerSourceRanges"] = json!(v);
                    }
                    s["service"] = svc;
                }
                if let Some(v) = env {
                    s["env"] = json!(v);
                }
                if let Some(v) = res {
                    s["resources"] = v;
                }
                if let Some(v) = probe {
                    s["readinessProbe"] = v;
                }
                if let Some(v) = pod {
                    s["podTemplate"] = v;
                }
                if let Some(v) = pull {
                    s["imagePullPolicy"] = json!(v);
                }
                if let Some(v) = deadline {
                    s["progressDeadlineSeconds"] = json!(v);
                }
                if let Some(v) = args {
                    s["args"] = json!(v);
                }
                for (key, value) in [
                    ("sidecars", sidecars),
                    ("initContainers", inits),
                    ("autoscaling", scaling),
                    ("disruptionBudget", budget),
                    ("http", http),
                    ("envFrom", env_from.map(Value::from)),
                    ("rolloutOnConfigChange", follow.map(Value::from)),
                    ("revisionHistoryLimit", history.map(Value::from)),
                    ("rollout", rollout),
                ] {
                    if let Some(v) = value {
                        s[key] = v;
                    }
                }
                s
            },
        )
        .boxed()
}

/// What happened to one generated spec.
#[derive(Debug, Default)]
struct Tally {
    /// A few of the API server's admission messages, as examples for the log.
    samples: Vec<String>,
    /// A few of the API server's refusals of admitted specs.
    server_samples: Vec<String>,
    refused_at_admission: u32,
    applied: u32,
    /// Children sent as dry-run applies, by kind.
    kinds: std::collections::BTreeMap<&'static str, u32>,
    stalled_with_message: u32,
}

/// Sends one spec through admission, render and dry-run apply; `Err` names a broken property.
async fn check(
    client: &Client,
    ns: &str,
    n: u32,
    spec: &Value,
    tally: &Mutex<Tally>,
) -> Result<(), String> {
    let ar = ApiResource::erase::<AppBundle>(&());
    let bundles: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubundle.dev/v1alpha1",
        "kind": "AppBundle",
        "metadata": {"name": format!("p{n}"), "namespace": ns},
        "spec": spec,
    }))
    .unwrap();
    let admitted = match bundles
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &obj,
        )
        .await
    {
        Ok(admitted) => admitted,
        Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && !s.message.is_empty() => {
            let mut t = tally.lock().unwrap();
            t.refused_at_admission += 1;
            if t.samples.len() < 8 {
                t.samples.push(s.message.clone());
            }
            return Ok(());
        }
        Err(e) => {
            return Err(format!(
                "admission answered neither yes nor a clear no: {e}"
            ));
        }
    };
    // As the operator reads it (dry-run creates hand out a UID; the status is defaulted).
    let mut bundle: AppBundle = serde_json::from_value(serde_json::to_value(&admitted).unwrap())
        .map_err(|e| format!("the CRD admitted a spec kubundle cannot read: {e}"))?;
    if bundle.metadata.uid.is_none() {
        bundle.metadata.uid = Some(format!("00000000-0000-0000-0000-{n:012}"));
    }
    // Every child the spec asks for; with a canary, also the children of one under way.
    let digest = bundle
        .spec
        .rollout_on_config_change
        .then_some("0123456789abcdef");
    let mut children =
        kubundle::render::children(&bundle, digest).map_err(|e| format!("render: {e}"))?;
    if bundle
        .spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.canary.is_some())
    {
        let canary = CanaryChildren {
            stable: Some(&bundle.spec),
            weight: 50,
            replicas: 1,
            frozen: false,
        };
        children.extend(
            kubundle::render::children_with(&bundle, digest, Some(&canary))
                .map_err(|e| format!("render with a canary: {e}"))?
                .into_iter()
                .filter(|c| c.object.metadata.name.as_deref() != bundle.metadata.name.as_deref()),
        );
    }
    let params = PatchParams::apply("kubundle").force().dry_run();
    let mut results = Vec::new();
    for child in &children {
        let ar = child.kind.api_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let mut object = child.object.clone();
        object.metadata.namespace = Some(ns.to_string());
        let name = object.metadata.name.clone().unwrap_or_default();
        let result = api
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .map(|stored| {
                (
                    serde_json::to_value(stored).unwrap(),
                    serde_json::to_value(&object).unwrap(),
                )
            });
        let mut t = tally.lock().unwrap();
        *t.kinds.entry(child.kind.name()).or_default() += 1;
        if name.ends_with("-canary") {
            *t.kinds.entry("canary").or_default() += 1;
        }
        drop(t);
        results.push((format!("{} {name}", child.kind.name()), result));
    }
    let mut refused = false;
    for (kind, result) in results {
        match result {
            Ok((stored, desired)) => {
                if !covers(&stored, &desired) {
                    return Err(format!(
                        "{kind} applies but is never up to date by kubundle's comparison:\nstored {stored}\ndesired {desired}"
                    ));
                }
            }
            Err(e) if is_definite_refusal(&e) => {
                let kube::Error::Api(s) = &e else {
                    unreachable!()
                };
                if s.message.is_empty() {
                    return Err(format!("{kind} refused without a message: {e}"));
                }
                let mut t = tally.lock().unwrap();
                if t.server_samples.len() < 12 {
                    t.server_samples.push(s.message.clone());
                }
                refused = true;
            }
            Err(e) => {
                return Err(format!(
                    "{kind} refused in a way kubundle would retry forever (not a definite refusal): {e}"
                ));
            }
        }
    }
    let mut t = tally.lock().unwrap();
    if refused {
        t.stalled_with_message += 1;
    } else {
        t.applied += 1;
    }
    Ok(())
}

/// Properties 1 and 2, against the local cluster.
#[test]
fn every_admitted_spec_applies_or_is_refused_with_the_servers_words() {
    let n = cases("KUBUNDLE_PROPERTY_CASES", 6000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, ns) = rt.block_on(async {
        let client = client().await;
        let ns = create_namespace(&client, "property").await;
        (client, ns)
    });
    let tally = Mutex::new(Tally::default());
    let counter = std::sync::atomic::AtomicU32::new(0);
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&spec(), |s| {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(check(&client, &ns, i, &s, &tally))
            .map_err(|e| TestCaseError::fail(format!("{e}\nspec: {s}")))
    });
    let t = tally.into_inner().unwrap();
    eprintln!(
        "{n} generated AppBundles: {} refused at admission, {} applied (and up to date as stored), \
         {} admitted but refused by the API server with a message (reported Stalled)",
        t.refused_at_admission, t.applied, t.stalled_with_message
    );
    eprintln!("  children sent as dry-run applies, by kind: {:?}", t.kinds);
    for sample in &t.samples {
        eprintln!("  refused at admission: {sample}");
    }
    for sample in &t.server_samples {
        eprintln!("  admitted, refused by the API server: {sample}");
    }
    rt.block_on(delete_namespace(&client, &ns));
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        t.applied > n / 40,
        "too few generated specs apply to test much: {t:?}"
    );
    assert!(
        t.refused_at_admission > n / 10,
        "too few hostile specs: {t:?}"
    );
    for kind in ChildKind::ALL
        .map(ChildKind::name)
        .into_iter()
        .chain(["canary"])
    {
        assert!(
            t.kinds.get(kind).copied().unwrap_or(0) > n / 600,
            "too few {kind} children rendered to test them: {:?}",
            t.kinds
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases("KUBUNDLE_RENDER_CASES", 20_000), failure_persistence: None, ..ProptestConfig::default() })]

    /// Property 3: whatever the stored spec, kubundle reads it or says why not, and renders
    /// without panicking.
    #[test]
    fn render_never_panics(s in spec(), name in "[a-z][a-z0-9-]{0,20}", labels in prop::collection::btree_map("[a-z./]{1,8}", "[a-z]{0,4}", 0..3)) {
        if let Ok(spec) = serde_json::from_value::<AppBundleSpec>(s) {
            let mut b = AppBundle::new(&name, spec);
            b.metadata.namespace = Some("ns".into());
            b.metadata.uid = Some("uid".into());
            b.metadata.labels = Some(labels);
            let d = kubundle::render::deployment(&b).unwrap();
            let svc = kubundle::render::service(&b).unwrap();
            prop_assert_eq!(d.meta().name.as_deref(), Some(name.as_str()));
            prop_assert_eq!(svc.meta().name.as_deref(), Some(name.as_str()));
            // The other children: rendered, or refused with a reason (the CRD refuses such a
            // spec at admission: an HTTPRoute without a port).
            if let Ok(all) = kubundle::render::children(&b, Some("digest")) {
                prop_assert!(all.len() >= 2);
                let canary = CanaryChildren { stable: Some(&b.spec), weight: 30, replicas: 1, frozen: false };
                let with = kubundle::render::children_with(&b, None, Some(&canary)).unwrap();
                prop_assert_eq!(with.len(), all.len() + 2);
            }
        }
    }
}
