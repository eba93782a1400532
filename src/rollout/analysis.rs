//! The canary's checks, pure: what each check's answer means. The controller makes the calls (a
//! Prometheus instant query, a webhook's POST, the canary's pods from the cache) and hands the
//! answers here; each becomes a [`CheckStatus`] with a value, a limit and a verdict.
//!
//! No data is not failure: an empty result, NaN, or a check that could not run gives `NoData` or
//! `Error`, which hold the step (see [`super::decide`]).

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::POD_HEALTH;
use crate::api::rollout::{CheckStatus, PrometheusCheck, Verdict, WebhookCheck};
use crate::status::pods::diagnose;

/// The pod-health check (always on) of the canary's pods: a container that cannot start, crash
/// loops or runs out of memory fails it, and so does any restart; a pod no node can take holds it
/// (that is the cluster's capacity, not the version's fault).
pub fn pod_health(pods: &[Pod]) -> CheckStatus {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = live.iter().filter(|p| is_ready(p)).count();
    let value = Some(format!("{ready} of {} ready", live.len()));
    let limit = Some("no crash, no restart".to_string());
    let restarts: i32 = live
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    // diagnose leaves out the pods being deleted itself.
    let (verdict, message) = match diagnose(pods) {
        Some(p) if p.reason == "Unschedulable" => (Verdict::NoData, Some(p.message)),
        Some(p) => (Verdict::Fail, Some(format!("{}: {}", p.reason, p.message))),
        None if restarts > 0 => (
            Verdict::Fail,
            Some(format!(
                "{restarts} container restarts in the canary's pods"
            )),
        ),
        None => (Verdict::Pass, None),
    };
    CheckStatus {
        name: POD_HEALTH.into(),
        verdict,
        value,
        limit,
        message,
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The names a query may use: `{{canary}}` and `{{stable}}` (the Services' names) and
/// `{{namespace}}`.
pub fn query_for(check: &PrometheusCheck, canary: &str, stable: &str, namespace: &str) -> String {
    check
        .query
        .replace("{{canary}}", canary)
        .replace("{{stable}}", stable)
        .replace("{{namespace}}", namespace)
}

/// The bounds in words: `>= 0.9`, `<= 0.05`, `0.1 to 0.5`.
pub fn bounds(min: Option<f64>, max: Option<f64>) -> Option<String> {
    match (min, max) {
        (Some(lo), Some(hi)) => Some(format!("{lo} to {hi}")),
        (Some(lo), None) => Some(format!(">= {lo}")),
        (None, Some(hi)) => Some(format!("<= {hi}")),
        (None, None) => None,
    }
}

/// The verdict of a Prometheus instant query's answer (`/api/v1/query`): the one number of a
/// scalar or of a vector of one series, within the bounds. `answer`: the body as JSON, or why
/// there is none (unreachable, a timeout, not JSON).
pub fn prometheus_verdict(check: &PrometheusCheck, answer: Result<&Value, String>) -> CheckStatus {
    let status = |verdict, value: Option<String>, message: Option<String>| CheckStatus {
        name: check.name.clone(),
        verdict,
        value,
        limit: bounds(check.min, check.max),
        message,
    };
    let body = match answer {
        Ok(body) => body,
        Err(why) => return status(Verdict::Error, None, Some(why)),
    };
    if body["status"] != "success" {
        let why = body["error"]
            .as_str()
            .unwrap_or("the answer is not a success");
        let kind = body["errorType"].as_str().unwrap_or("error");
        return status(
            Verdict::Error,
            None,
            Some(format!("Prometheus: {kind}: {why}")),
        );
    }
    let data = &body["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => Some(&data["result"]),
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            None | Some([]) => {
                return status(
                    Verdict::NoData,
                    None,
                    Some("the query gives no series".into()),
                );
            }
            Some([one]) => Some(&one["value"]),
            Some(many) => {
                return status(
                    Verdict::Error,
                    None,
                    Some(format!(
                        "the query gives {} series; it must give one number (sum or aggregate it)",
                        many.len()
                    )),
                );
            }
        },
        other => {
            return status(
                Verdict::Error,
                None,
                Some(format!(
                    "the query gives a {}; it must give one number",
                    other.unwrap_or("result of no type")
                )),
            );
        }
    };
    // A sample is [time, "value"]; the value is a string ("NaN", "+Inf" included).
    let Some(text) = sample.and_then(|s| s.get(1)).and_then(Value::as_str) else {
        return status(
            Verdict::Error,
            None,
            Some("the answer holds no sample".into()),
        );
    };
    let value: f64 = match text.parse() {
        Ok(v) => v,
        Err(_) => {
            return status(
                Verdict::Error,
                Some(text.into()),
                Some("not a number".into()),
            );
        }
    };
    if value.is_nan() {
        return status(
            Verdict::NoData,
            Some("NaN".into()),
            Some("no value yet (no requests to divide by?)".into()),
        );
    }
    let within = check.min.is_none_or(|lo| value >= lo) && check.max.is_none_or(|hi| value <= hi);
    status(
        if within { Verdict::Pass } else { Verdict::Fail },
        Some(text.to_string()),
        None,
    )
}

/// The verdict of a webhook's answer: an HTTP status (2xx passes), or why there is none.
pub fn webhook_verdict(check: &WebhookCheck, answer: Result<u16, String>) -> CheckStatus {
    let (verdict, value, message) = match answer {
        Ok(code) if (200..300).contains(&code) => (Verdict::Pass, Some(code.to_string()), None),
        Ok(code) => (
            Verdict::Fail,
            Some(code.to_string()),
            Some(format!("{} answered {code}", check.url)),
        ),
        Err(why) => (Verdict::Error, None, Some(why)),
    };
    CheckStatus {
        name: check.name.clone(),
        verdict,
        value,
        limit: Some("2xx".into()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error_rate(min: Option<f64>, max: Option<f64>) -> PrometheusCheck {
        PrometheusCheck {
            name: "error-rate".into(),
            address: "http://prometheus:9090".into(),
            query: r#"sum(rate(traefik_service_requests_total{service=~"{{namespace}}-{{canary}}-.*",code=~"5.."}[1m]))"#.into(),
            min,
            max,
        }
    }

    fn vector(values: &[&str]) -> Value {
        json!({"status": "success", "data": {"resultType": "vector", "result":
            values.iter().map(|v| json!({"metric": {}, "value": [1.7e9, v]})).collect::<Vec<_>>()}})
    }

    #[test]
    fn one_number_within_the_bounds_passes_and_outside_fails() {
        let c = error_rate(None, Some(0.05));
        let ok = prometheus_verdict(&c, Ok(&vector(&["0.01"])));
        assert_eq!(
            (ok.verdict, ok.value.as_deref(), ok.limit.as_deref()),
            (Verdict::Pass, Some("0.01"), Some("<= 0.05"))
        );
        assert_eq!(
            prometheus_verdict(&c, Ok(&vector(&["0.2"]))).verdict,
            Verdict::Fail
        );
        let c = error_rate(Some(0.9), None);
        assert_eq!(
            prometheus_verdict(&c, Ok(&vector(&["0.95"]))).verdict,
            Verdict::Pass
        );
        assert_eq!(
            prometheus_verdict(&c, Ok(&vector(&["+Inf"]))).verdict,
            Verdict::Pass
        );
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "0.5"]}});
        assert_eq!(prometheus_verdict(&c, Ok(&scalar)).verdict, Verdict::Fail);
        assert_eq!(
            error_rate(Some(0.1), Some(0.5))
                .min
                .and(bounds(Some(0.1), Some(0.5)))
                .as_deref(),
            Some("0.1 to 0.5")
        );
    }

    #[test]
    fn no_series_and_nan_are_no_data_and_several_series_or_errors_are_errors() {
        let c = error_rate(None, Some(0.05));
        assert_eq!(
            prometheus_verdict(&c, Ok(&vector(&[]))).verdict,
            Verdict::NoData
        );
        assert_eq!(
            prometheus_verdict(&c, Ok(&vector(&["NaN"]))).verdict,
            Verdict::NoData
        );
        let many = prometheus_verdict(&c, Ok(&vector(&["1", "2"])));
        assert_eq!(many.verdict, Verdict::Error);
        assert!(many.message.unwrap().contains("2 series"));
        let bad =
            json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"});
        let bad = prometheus_verdict(&c, Ok(&bad));
        assert_eq!(
            (bad.verdict, bad.message.as_deref()),
            (
                Verdict::Error,
                Some("Prometheus: bad_data: parse error at char 5")
            )
        );
        assert_eq!(
            prometheus_verdict(&c, Err("connection refused".into())).verdict,
            Verdict::Error
        );
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert_eq!(prometheus_verdict(&c, Ok(&matrix)).verdict, Verdict::Error);
    }

    #[test]
    fn queries_name_the_canary_the_stable_service_and_the_namespace() {
        let q = query_for(&error_rate(None, Some(0.05)), "web-canary", "web", "shop");
        assert_eq!(
            q,
            r#"sum(rate(traefik_service_requests_total{service=~"shop-web-canary-.*",code=~"5.."}[1m]))"#
        );
    }

    #[test]
    fn webhooks_pass_on_2xx() {
        let w = WebhookCheck {
            name: "smoke".into(),
            url: "http://smoke/run".into(),
            timeout_seconds: None,
        };
        assert_eq!(webhook_verdict(&w, Ok(204)).verdict, Verdict::Pass);
        assert_eq!(webhook_verdict(&w, Ok(503)).verdict, Verdict::Fail);
        assert_eq!(
            webhook_verdict(&w, Err("timed out after 10s".into())).verdict,
            Verdict::Error
        );
    }

    fn pod(ready: bool, restarts: i32, waiting: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-canary-1", "creationTimestamp": "2026-12-04T10:00:00Z",
                         "labels": {"pod-template-hash": "abc"}},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{
                    "name": "web", "image": "web:2", "imageID": "", "ready": ready,
                    "restartCount": restarts,
                    "state": match waiting {
                        Some(r) => json!({"waiting": {"reason": r, "message": "back-off 10s restarting failed container"}}),
                        None => json!({"running": {"startedAt": "2026-12-04T10:00:01Z"}}),
                    },
                    "lastState": if restarts > 0 { json!({"terminated": {"exitCode": 1, "reason": "Error"}}) } else { json!({}) },
                }],
            },
        }))
        .unwrap()
    }

    #[test]
    fn pod_health_fails_on_crash_loops_and_restarts() {
        let ok = pod_health(&[pod(true, 0, None), pod(true, 0, None)]);
        assert_eq!(
            (ok.verdict, ok.value.as_deref()),
            (Verdict::Pass, Some("2 of 2 ready"))
        );
        let crash = pod_health(&[pod(false, 3, Some("CrashLoopBackOff"))]);
        assert_eq!(crash.verdict, Verdict::Fail);
        assert!(crash.message.unwrap().starts_with("CrashLoopBackOff"));
        let restarted = pod_health(&[pod(true, 1, None)]);
        assert_eq!(restarted.verdict, Verdict::Fail);
        assert_eq!(
            restarted.message.as_deref(),
            Some("1 container restarts in the canary's pods")
        );
    }
}
