//! The canary's checks, run (their meaning is pure, in [`crate::rollout::analysis`]): the canary
//! pods' health from one list of its pods, each Prometheus query as an instant query to its
//! HTTP API (`GET {address}/api/v1/query`), each webhook as a POST. They run side by side, each
//! within its timeout; a check that cannot be run gives `Error`, which holds the step.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::api::AppBundle;
use crate::api::rollout::{CanarySpec, CheckStatus, RolloutStatus};
use crate::render::canary::{canary_name, canary_selector_labels};
use crate::rollout::analysis::{pod_health, prometheus_verdict, query_for, webhook_verdict};

/// How long a Prometheus query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A webhook's timeout when its `timeoutSeconds` is not set.
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer's body that is read.
const MAX_BODY: usize = 4 << 20;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The HTTP client of the checks (http and https; the system's CA certificates).
#[derive(Clone)]
pub struct Caller {
    http: HttpClient<Connector, Full<Bytes>>,
}

impl Default for Caller {
    fn default() -> Self {
        Self::new()
    }
}

impl Caller {
    pub fn new() -> Caller {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_native_roots() {
            Ok(b) => b,
            Err(e) => {
                // An image without CA certificates: http checks still work, https ones say why not.
                debug!(error = %e, "no CA certificates: https checks cannot be verified");
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Caller {
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends `request`; the status and the body, or why there is none.
    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), String> {
        let call = async {
            let response = self.http.request(request).await.map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                text
            })?;
            let code = response.status().as_u16();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok((code, body))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())))
    }

    /// An instant query: the answer's body as JSON, or why there is none.
    pub async fn query(&self, address: &str, query: &str) -> Result<Value, String> {
        let url = format!(
            "{}/api/v1/query?query={}",
            address.trim_end_matches('/'),
            percent_encode(query)
        );
        let request = http::Request::get(&url)
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("{url}: {e}"))?;
        let (code, body) = self.send(request, QUERY_TIMEOUT).await?;
        // Prometheus answers errors (400, 422, 503) with a JSON body that says what went wrong.
        serde_json::from_slice(&body).map_err(|_| {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            format!("{address} answered {code}, not with JSON: {text}")
        })
    }

    /// A webhook's POST: its status code, or why there is none.
    pub async fn post(&self, url: &str, body: &Value, timeout: Duration) -> Result<u16, String> {
        let request = http::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("{url}: {e}"))?;
        self.send(request, timeout).await.map(|(code, _)| code)
    }
}

/// `text` as a URL query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Runs the checks of the canary once: the pods' health first, then the queries and webhooks,
/// but those only once the Gateway sends the canary its step's share (`state.stepStartedAt`):
/// before that, what they measure is not this canary's (the canary Service's metrics from a
/// canary before it, no requests yet).
pub async fn run(
    client: &Client,
    caller: &Caller,
    bundle: &AppBundle,
    canary: &CanarySpec,
    state: &RolloutStatus,
) -> Vec<CheckStatus> {
    let routed = state.step_started_at.is_some();
    let ns = bundle.metadata.namespace.clone().unwrap_or_default();
    let name = bundle.metadata.name.clone().unwrap_or_default();
    let canary_service = canary_name(&name);
    let health = async {
        let selector = canary_selector_labels(&name)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        match Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => pod_health(&list.items),
            Err(e) => {
                warn!(error = %e, "cannot list the canary's pods for its health check");
                CheckStatus {
                    name: crate::rollout::POD_HEALTH.into(),
                    verdict: crate::api::rollout::Verdict::Error,
                    value: None,
                    limit: None,
                    message: Some(format!("cannot list the canary's pods: {e}")),
                }
            }
        }
    };
    let analysis = canary
        .analysis
        .clone()
        .filter(|_| routed)
        .unwrap_or_default();
    let queries = futures::future::join_all(analysis.prometheus.iter().flatten().map(|check| {
        let query = query_for(check, &canary_service, &name, &ns);
        async move {
            let answer = caller.query(&check.address, &query).await;
            prometheus_verdict(check, answer.as_ref().map_err(String::clone))
        }
    }));
    let body = json!({
        "namespace": ns,
        "name": name,
        "canaryRevision": state.canary_revision,
        "stableRevision": state.stable_revision,
        "step": state.step_index,
        "weight": state.weight,
    });
    let hooks = futures::future::join_all(analysis.webhooks.iter().flatten().map(|check| {
        let timeout = check.timeout_seconds.map_or(DEFAULT_WEBHOOK_TIMEOUT, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(1))
        });
        let body = &body;
        async move { webhook_verdict(check, caller.post(&check.url, body, timeout).await) }
    }));
    let (health, queries, hooks) = futures::join!(health, queries, hooks);
    std::iter::once(health)
        .chain(queries)
        .chain(hooks)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_as_a_url_value() {
        assert_eq!(
            percent_encode(r#"sum(rate(x{a="b"}[1m])) / 2"#),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29%20%2F%202"
        );
    }
}
