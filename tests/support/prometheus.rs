//! The local cluster's Prometheus (deploy/local/monitoring.sh) and the part the Prometheus Operator
//! plays in a real cluster: [`Prometheus::follow`] turns the ServiceMonitors and PrometheusRules
//! of a namespace, as the API server has them, into Prometheus's scrape configuration and rule
//! files, and reloads it. Only the fields the chart uses are translated; any other field of a
//! ServiceMonitor endpoint fails the test, so that a chart change cannot go unscraped unnoticed.

use std::path::PathBuf;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::*;

pub struct Prometheus {
    pub url: String,
    dir: PathBuf,
}

/// The local Prometheus: its address from `PROMETHEUS_URL` (`cluster.sh env`), its configuration
/// beside the cluster's kubeconfig.
pub fn local() -> Prometheus {
    let url = std::env::var("PROMETHEUS_URL").unwrap_or_else(|_| {
        panic!(
            "PROMETHEUS_URL is not set: the local Prometheus runs with the real node; \
             eval \"$(deploy/local/cluster.sh env)\" on a cluster that has one"
        )
    });
    let dir = kubeconfig_path().parent().unwrap().join("prometheus");
    assert!(
        dir.join("prometheus.yml").exists(),
        "no Prometheus configuration in {}",
        dir.display()
    );
    Prometheus { url, dir }
}

fn monitoring(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A Kubernetes label name as Prometheus's service discovery spells it in a meta label.
fn meta_label(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// One scrape job per endpoint of a ServiceMonitor, the way the Prometheus Operator writes them:
/// EndpointSlice discovery in the selected namespaces, kept when the Service's labels match the
/// selector and the port's name is the endpoint's.
pub fn scrape_jobs(monitor: &Value, kubeconfig: &str) -> Vec<Value> {
    let ns = monitor["metadata"]["namespace"].as_str().unwrap();
    let name = monitor["metadata"]["name"].as_str().unwrap();
    let spec = &monitor["spec"];
    let known = ["selector", "endpoints", "namespaceSelector"];
    for key in spec.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "ServiceMonitor {ns}/{name}: spec.{key} is not translated"
        );
    }
    assert!(
        spec["selector"].get("matchExpressions").is_none(),
        "ServiceMonitor {ns}/{name}: matchExpressions are not translated"
    );
    let namespaces: Vec<String> = match spec.get("namespaceSelector") {
        Some(sel) if sel["any"] == json!(true) => vec![],
        Some(sel) if sel.get("matchNames").is_some() => {
            serde_json::from_value(sel["matchNames"].clone()).unwrap()
        }
        _ => vec![ns.to_string()],
    };
    let mut keep: Vec<Value> = spec["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            json!({
                "action": "keep",
                "source_labels": [format!("__meta_kubernetes_service_label_{}", meta_label(k)),
                                  format!("__meta_kubernetes_service_labelpresent_{}", meta_label(k))],
                "regex": format!("({});true", v.as_str().unwrap()),
            })
        })
        .collect();
    let mut sd = json!({"role": "endpointslice", "kubeconfig_file": kubeconfig});
    if !namespaces.is_empty() {
        sd["namespaces"] = json!({"names": namespaces});
    }
    let endpoints = spec["endpoints"].as_array().unwrap();
    endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            for key in ep.as_object().unwrap().keys() {
                assert!(
                    ["port", "path", "interval", "scheme"].contains(&key.as_str()),
                    "ServiceMonitor {ns}/{name}: endpoints[{i}].{key} is not translated"
                );
            }
            let port = ep["port"].as_str().expect("endpoints[].port (a port name)");
            let mut relabel = std::mem::take(&mut keep);
            keep = relabel.clone();
            relabel.extend([
                json!({"action": "keep", "source_labels": ["__meta_kubernetes_endpointslice_port_name"], "regex": port}),
                json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
                json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"}),
                json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
                json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"}),
                json!({"target_label": "endpoint", "replacement": port}),
            ]);
            let mut job = json!({
                "job_name": format!("serviceMonitor/{ns}/{name}/{i}"),
                "kubernetes_sd_configs": [sd.clone()],
                "relabel_configs": relabel,
                "metrics_path": ep.get("path").cloned().unwrap_or(json!("/metrics")),
                "scheme": ep.get("scheme").cloned().unwrap_or(json!("http")),
            });
            if let Some(interval) = ep.get("interval") {
                job["scrape_interval"] = interval.clone();
            }
            job
        })
        .collect()
}

impl Prometheus {
    /// Scrapes what the ServiceMonitors of `ns` select and evaluates the rules of its
    /// PrometheusRules (as they are now), replacing whatever it was configured with.
    pub async fn follow(&self, client: &Client, ns: &str) {
        let kubeconfig = kubeconfig_path()
            .parent()
            .unwrap()
            .join("kubeconfigs/prometheus.kubeconfig");
        let mut jobs = vec![];
        for m in monitoring(client, ns, "ServiceMonitor")
            .list(&Default::default())
            .await
            .unwrap()
        {
            jobs.extend(scrape_jobs(
                &serde_json::to_value(&m).unwrap(),
                kubeconfig.to_str().unwrap(),
            ));
        }
        let rules = self.dir.join("rules");
        for old in std::fs::read_dir(&rules).unwrap() {
            std::fs::remove_file(old.unwrap().path()).unwrap();
        }
        for r in monitoring(client, ns, "PrometheusRule")
            .list(&Default::default())
            .await
            .unwrap()
        {
            // A PrometheusRule's spec is a Prometheus rule file (JSON is YAML).
            let file = rules.join(format!("{ns}-{}.yaml", r.metadata.name.as_deref().unwrap()));
            std::fs::write(file, serde_json::to_string(&r.data["spec"]).unwrap()).unwrap();
        }
        // What is always scraped (the Gateway's metrics), as monitoring.sh wrote it.
        let always: Vec<Value> = std::fs::read_to_string(self.dir.join("always.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        jobs.splice(0..0, always);
        let config = json!({
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "rule_files": [format!("{}/*.yaml", rules.display())],
            "scrape_configs": jobs,
        });
        std::fs::write(
            self.dir.join("prometheus.yml"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        let (status, body) = http_request("POST", &format!("{}/-/reload", self.url), "")
            .await
            .unwrap_or_else(|e| panic!("reloading Prometheus: {e}"));
        assert_eq!(
            status, 200,
            "Prometheus refused its new configuration: {body}"
        );
    }

    async fn api(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.url);
        let (status, body) = http_get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(status, 200, "GET {url}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{url}: {body}");
        v["data"].clone()
    }

    /// The active targets: scrape pool, labels, health ("up", "down", "unknown"), last error.
    pub async fn targets(&self) -> Vec<Value> {
        self.api("/api/v1/targets?state=active").await["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The alerts pending or firing: labels, annotations, state, value.
    pub async fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts").await["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// An instant query's result vector.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        self.api(&query_path(expr)).await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// An instant query's whole answer (`status`, `data`), as the Prometheus HTTP API gives it.
    pub async fn query_answer(&self, expr: &str) -> Value {
        let url = format!("{}{}", self.url, query_path(expr));
        let (_, body) = http_get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
    }

    /// Waits until `check` finds what it wants in the targets.
    pub async fn wait_targets<F>(&self, timeout: Duration, what: &str, check: F) -> Vec<Value>
    where
        F: Fn(&[Value]) -> Result<(), String>,
    {
        eventually(timeout, what, || async {
            let t = self.targets().await;
            check(&t).map(|()| t.clone())
        })
        .await
    }
}

/// The path of an instant query of `expr`.
fn query_path(expr: &str) -> String {
    let q: String = expr
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/api/v1/query?query={q}")
}
