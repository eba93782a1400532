//! Helpers of the tests on the real node (tests/real_node.rs, tests/real_metrics.rs): the operator
//! installed in-cluster from the OCI chart, namespaces whose pods run on the real node, the images
//! deploy/local/images.sh pushed.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};
use kubundle::api::AppBundle;

use super::*;

pub const OPERATOR_NS: &str = "kubundle-real";
pub const RELEASE: &str = "kubundle-real";
pub const NODE: &str = "kubundle-node";

pub fn image_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the images in the local registry; run tests/run.sh, \
             or `eval \"$(deploy/local/images.sh)\"` on a cluster with its real node"
        )
    })
}

pub fn cluster_sh(args: &[&str]) -> Command {
    let mut cmd = Command::new(repo_root().join("deploy/local/cluster.sh"));
    cmd.args(args);
    cmd
}

/// A namespace whose pods run on the real node (and whose LoadBalancer Services get an address).
pub async fn real_namespace(client: &Client, prefix: &str) -> String {
    let ns = create_namespace(client, prefix).await;
    run_ok(cluster_sh(&["real-namespace", &ns]));
    ns
}

/// How long AppBundles may stay not Ready before the chart's alert fires, in the tests (the
/// chart's default is 15m).
pub const ALERT_FOR: &str = "20s";

/// Installs the operator once per test process: `helm install` from the OCI chart, in a
/// namespace that enforces the restricted Pod Security Standard, with its ServiceMonitor and
/// PrometheusRule (the Prometheus Operator's CRDs validate them); returns how long it took until
/// both replicas were Ready (`--wait`).
pub fn operator_installed() -> Duration {
    static INSTALLED: OnceLock<Duration> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        run_ok(cluster_sh(&["real-namespace", OPERATOR_NS]));
        run_ok(kubectl(&[
            "label",
            "namespace",
            OPERATOR_NS,
            "--overwrite",
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ]));
        let start = Instant::now();
        let repository = format!(
            "image.repository={}",
            image_env("KUBUNDLE_IMAGE_REPOSITORY")
        );
        let tag = format!("image.tag={}", image_env("KUBUNDLE_IMAGE_TAG"));
        let chart = image_env("KUBUNDLE_CHART");
        run_ok(Command::new("helm").args([
            "upgrade",
            "--install",
            RELEASE,
            &chart,
            "--plain-http",
            "-n",
            OPERATOR_NS,
            "--set",
            &repository,
            "--set",
            &tag,
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "serviceMonitor.interval=5s",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            &format!("prometheusRule.for={ALERT_FOR}"),
            "--wait",
            "--timeout=3m",
        ]));
        let took = start.elapsed();
        eprintln!("helm install from {chart} -> both replicas Ready: {took:?}");
        took
    })
}

pub async fn operator_pods(client: &Client) -> Vec<Pod> {
    release_pods(client, OPERATOR_NS, "kubundle-real").await
}

/// The pods of the Helm release `release` in `ns` that are not being deleted.
pub async fn release_pods(client: &Client, ns: &str, release: &str) -> Vec<Pod> {
    let params = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub async fn lease_holder(client: &Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), OPERATOR_NS)
        .get_opt(RELEASE)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

pub async fn service_url(client: &Client, ns: &str, name: &str, external: bool) -> String {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port;
    let ip = if external {
        svc.status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.into_iter().next())
            .and_then(|i| i.ip)
            .unwrap_or_else(|| panic!("{ns}/{name} has no external address"))
    } else {
        svc.spec.unwrap().cluster_ip.unwrap()
    };
    format!("http://{ip}:{port}")
}

pub fn bundles(client: &Client, ns: &str) -> Api<AppBundle> {
    Api::namespaced(client.clone(), ns)
}

pub fn bundle(name: &str, image: &str, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {name}}}\nspec:\n  image: {image}\n  ports: [{{containerPort: {port}}}]\n{extra}"
    )
}
