//! End-to-end checks of the local control plane itself (deploy/local/cluster.sh): the components are
//! real and wired together, so everything the operator's tests claim stands on a working cluster.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use support::*;

/// `kubectl create deployment web --image=nginx --replicas=3` reaches 3/3 available pods on kwok
/// nodes (controller manager, scheduler and kwok at work); deleting the Deployment garbage-collects
/// its ReplicaSet and Pods (the garbage collector at work).
#[tokio::test]
async fn deployment_becomes_available_and_is_garbage_collected() {
    let client = client().await;
    let ns = create_namespace(&client, "cluster-deploy").await;
    run_ok(kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=3",
        "-n",
        &ns,
    ]));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually(
        Duration::from_secs(90),
        "deployment web to have 3 available replicas",
        || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let status = d.status.unwrap_or_default();
            match status.available_replicas {
                Some(3) => Ok(()),
                other => Err(format!("availableReplicas={other:?}")),
            }
        },
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let by_app = ListParams::default().labels("app=web");
    let pod_list = pods.list(&by_app).await.unwrap();
    assert_eq!(pod_list.items.len(), 3, "expected exactly 3 pods");
    for pod in &pod_list.items {
        let spec = pod.spec.as_ref().unwrap();
        let status = pod.status.as_ref().unwrap();
        let node = spec.node_name.as_deref().unwrap_or_default();
        assert!(
            node.starts_with("kwok-node-"),
            "pod scheduled on {node:?}, not a kwok node"
        );
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "pod {:?} is not Ready", pod.metadata.name);
        assert!(status.pod_ip.is_some(), "pod has no IP");
    }
    assert_eq!(replica_sets.list(&by_app).await.unwrap().items.len(), 1);

    run_ok(kubectl(&[
        "delete",
        "deployment",
        "web",
        "-n",
        &ns,
        "--wait=false",
    ]));
    eventually(
        Duration::from_secs(60),
        "the ReplicaSet and Pods to be garbage-collected",
        || async {
            let rs = replica_sets
                .list(&by_app)
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            let p = pods
                .list(&by_app)
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if rs == 0 && p == 0 {
                Ok(())
            } else {
                Err(format!("{rs} ReplicaSets, {p} Pods left"))
            }
        },
    )
    .await;
    delete_namespace(&client, &ns).await;
}

/// RBAC is enforced: a ServiceAccount without any RoleBinding authenticates with its token (from
/// the TokenRequest API, signed with the cluster's service-account key) and is refused.
#[tokio::test]
async fn serviceaccount_without_bindings_is_forbidden() {
    let client = client().await;
    let ns = create_namespace(&client, "cluster-rbac").await;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let token = run_ok(kubectl(&[
        "create",
        "token",
        "nobody",
        "-n",
        &ns,
        "--duration=10m",
    ]));

    let mut kubeconfig = Kubeconfig::read_from(kubeconfig_path()).unwrap();
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(AuthInfo {
            token: Some(token.trim().to_string().into()),
            ..AuthInfo::default()
        });
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let as_sa = Client::try_from(config).unwrap();

    let err = Api::<Pod>::namespaced(as_sa, &ns)
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without bindings must not list pods");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "expected Forbidden, got {status:?}");
            assert_eq!(status.reason, "Forbidden");
            assert!(
                status
                    .message
                    .contains(&format!("system:serviceaccount:{ns}:nobody")),
                "the refusal should name the authenticated ServiceAccount: {}",
                status.message
            );
        }
        other => panic!("expected a 403 from the API server, got {other}"),
    }
    // The same request with the admin identity succeeds: the refusal is RBAC, not a broken call.
    Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    delete_namespace(&client, &ns).await;
}

/// kubectl and helm from the PATH that `cluster.sh env` prints are the pinned versions, and the
/// API server reports the pinned Kubernetes version (the version ldflags took effect).
#[test]
fn kubectl_and_helm_from_path_report_the_pinned_versions() {
    let k8s = pinned_version("KUBERNETES_VERSION");
    let helm = pinned_version("HELM_VERSION");
    let out = run_ok(kubectl(&["version", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clientVersion"]["gitVersion"], k8s.as_str(), "{v}");
    assert_eq!(v["serverVersion"]["gitVersion"], k8s.as_str(), "{v}");
    let out = run_ok(Command::new("helm").args(["version", "--short"]));
    assert!(
        out.trim().starts_with(&helm),
        "helm version {out:?}, expected {helm}"
    );
}

/// Enough Ready kwok nodes for at least 10,000 pods in total (the benchmarks need them); the real
/// node (deploy/local/node.sh), when there is one, is Ready and takes only pods that ask for it.
#[tokio::test]
async fn kwok_nodes_are_ready_with_room_for_10000_pods() {
    let client = client().await;
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    let (real, kwok): (Vec<&Node>, Vec<&Node>) = nodes.items.iter().partition(|n| {
        n.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("kubundle.dev/real-node"))
    });
    assert!(real.len() <= 1, "one real node at most");
    for node in &real {
        let status = node.status.clone().unwrap_or_default();
        assert!(
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "the real node is not Ready"
        );
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            taints
                .iter()
                .any(|t| t.key == "kubundle.dev/real-node" && t.effect == "NoSchedule"),
            "the real node must be tainted: {taints:?}"
        );
    }
    let mut pods = 0i64;
    for node in kwok {
        let name = node.metadata.name.clone().unwrap_or_default();
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get("kwok.x-k8s.io/node").map(String::as_str),
            Some("fake"),
            "{name}"
        );
        let status = node.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "node {name} is not Ready");
        let allocatable: BTreeMap<_, _> = status.allocatable.unwrap_or_default();
        pods += allocatable["pods"].0.parse::<i64>().unwrap();
    }
    assert!(pods >= 10_000, "the nodes hold only {pods} pods");
}

/// The lifecycle of a second, small cluster beside the first (they must not collide): `up` is
/// idempotent, `down` leaves no process and no listening port, `up` after `down` works, and `up`
/// recovers a cluster one of whose components died.
#[test]
fn second_cluster_lifecycle_up_reuse_down_up_recover() {
    let dir = std::env::temp_dir().join(format!("kubundle-cluster-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let script = repo_root().join("deploy/local/cluster.sh");
    let cluster = |arg: &str| {
        let mut cmd = Command::new(&script);
        cmd.arg(arg)
            .env("KUBUNDLE_CLUSTER_DIR", &dir)
            .env("KUBUNDLE_NODES", "1")
            .env("KUBUNDLE_REAL_NODE", "0");
        cmd
    };
    let readyz = |dir: &Path| {
        let kubeconfig = dir.join("kubeconfig");
        run(kubectl(&[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "--raw",
            "/readyz",
        ]))
        .status
        .success()
    };

    run_ok(cluster("up"));
    assert!(readyz(&dir));
    let first = Processes::read(&dir);
    let main_port = std::fs::read_to_string(kubeconfig_path()).unwrap();
    assert!(
        !main_port.contains(&format!(":{}\n", first.ports["APISERVER_PORT"])),
        "the second cluster took the first one's API server port"
    );

    // Idempotent: the running cluster is reused, its processes untouched.
    let out = run(cluster("up"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reused"));
    assert_eq!(Processes::read(&dir).pids, first.pids);

    run_ok(cluster("down"));
    first.assert_gone();
    assert!(!dir.exists(), "down must remove the cluster state");

    run_ok(cluster("up"));
    assert!(readyz(&dir), "up after down must work again");
    let second = Processes::read(&dir);

    // A component dies hard: the next `up` notices, clears what is left and starts anew.
    let etcd = second.pids["etcd"];
    run_ok(Command::new("kill").args(["-9", &etcd.to_string()]));
    run_ok(cluster("up"));
    assert!(readyz(&dir), "up must recover a broken cluster");
    second.assert_gone();
    let third = Processes::read(&dir);

    run_ok(cluster("down"));
    third.assert_gone();
    assert!(!dir.exists());
    let _ = std::fs::remove_file(dir.with_extension("lock"));
}

/// The processes and ports a cluster recorded in its state directory.
struct Processes {
    pids: BTreeMap<String, u32>,
    ports: BTreeMap<String, u16>,
}

impl Processes {
    fn read(dir: &Path) -> Self {
        let mut pids = BTreeMap::new();
        for entry in std::fs::read_dir(dir.join("pids")).unwrap() {
            let entry = entry.unwrap();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let pid = text.split_whitespace().next().unwrap().parse().unwrap();
            pids.insert(entry.file_name().to_string_lossy().into_owned(), pid);
        }
        assert_eq!(pids.len(), 5, "expected 5 component processes: {pids:?}");
        let ports = std::fs::read_to_string(dir.join("ports.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.ends_with("_PORT"))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect();
        Processes { pids, ports }
    }

    /// No recorded process is alive and no recorded port is listening.
    fn assert_gone(&self) {
        for (name, pid) in &self.pids {
            // A process that exited but was not reaped yet (state Z) is gone for our purposes.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            assert!(
                matches!(state, None | Some("Z")),
                "{name} (pid {pid}) is still running: {stat}"
            );
        }
        let listening = listening_ports();
        for (name, port) in &self.ports {
            assert!(
                !listening.contains(port),
                "{name} {port} is still listening"
            );
        }
    }
}

/// TCP ports in LISTEN state, from /proc/net/tcp{,6}.
fn listening_ports() -> Vec<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let port = fields.get(1)?.rsplit(':').next()?;
                    (fields.get(3) == Some(&"0A")).then(|| u16::from_str_radix(port, 16).ok())?
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
