//! `kubectl kubundle status NAME`: the AppBundle, its children and its pods as a tree, each with
//! its state and, when it is not ready, the reason and the message of whoever knows (kubundle for
//! the AppBundle, the Deployment controller, the kubelet or the scheduler for a pod, the Gateway
//! for a route).
//!
//! Reads: the AppBundle, each child its spec asks for (one GET each), its pods (one LIST).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use super::PluginError;
use crate::api::{AppBundle, READY, STALLED, TRUE, find_condition};
use crate::render::{ChildKind, children, selector_string};
use crate::status::desired_replicas;
use crate::status::pods::pod_problem;

/// One object of the tree.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub kind: String,
    pub name: String,
    /// Ready (or, for objects without readiness, in the state it should be in).
    pub ready: bool,
    /// Its state in a few words (counts, addresses, the phase of a pod).
    pub state: String,
    /// Why it is not ready: a reason (CamelCase, as in conditions)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// ... and whoever knows' words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

impl Node {
    fn new(kind: &str, name: &str, ready: bool, state: String) -> Self {
        Node {
            kind: kind.into(),
            name: name.into(),
            ready,
            state,
            reason: None,
            message: None,
            children: Vec::new(),
        }
    }

    fn because(mut self, reason: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        self.reason = Some(reason.into());
        self.message = (!message.is_empty()).then_some(message);
        self
    }
}

/// The whole tree: the AppBundle and its namespace.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tree {
    pub namespace: String,
    pub app_bundle: Node,
}

/// Reads the AppBundle `name` and everything under it.
pub async fn gather(client: &Client, ns: &str, name: &str) -> Result<Tree, PluginError> {
    let bundle = Api::<AppBundle>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| PluginError::not_found(name, ns))?;
    let uid = bundle.metadata.uid.clone().unwrap_or_default();
    let mut root = bundle_node(&bundle);
    let expected = children(&bundle, None)
        .map_err(|e| PluginError::User(format!("the AppBundle cannot be rendered: {e}")))?;
    // What RBAC does not let the user read is said where it would be, and the rest shown.
    let pods = match Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector_string(name)))
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            root.children.push(
                Node::new("Pod", "*", false, "not listed".into()).because("Forbidden", s.message),
            );
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    for rendered in expected {
        let kind = rendered.kind;
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &kind.api_resource());
        let live = match api.get_opt(name).await {
            Ok(live) => live,
            // (an HTTPRoute where the Gateway API is not installed)
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                root.children.push(
                    Node::new(kind.name(), name, false, "not read".into())
                        .because("Forbidden", s.message),
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(live) = live else {
            root.children.push(
                Node::new(kind.name(), name, false, "missing".into()).because(
                    "NotFound",
                    "it does not exist (yet): the AppBundle's status says why",
                ),
            );
            continue;
        };
        let controlled = crate::render::controlled_by(&live.metadata, &uid);
        let mut node = child_node(kind, &bundle, live, &pods);
        if !controlled {
            node.ready = false;
            node.reason = Some("NotControlled".into());
            node.message = Some(format!(
                "this {} is not the AppBundle's: kubundle leaves it alone (see the AppBundle's Stalled condition)",
                kind.name()
            ));
            node.children.clear();
        }
        root.children.push(node);
    }
    if let Some(state) = bundle.status.as_ref().and_then(|s| s.rollout.as_ref()) {
        root.children
            .push(canary_node(client, ns, &bundle, state).await);
    }
    Ok(Tree {
        namespace: ns.to_string(),
        app_bundle: root,
    })
}

/// The canary (status.rollout): its phase, step and weights, its Deployment and pods (when they
/// can be read), and each check's last verdict.
async fn canary_node(
    client: &Client,
    ns: &str,
    bundle: &AppBundle,
    r: &crate::api::rollout::RolloutStatus,
) -> Node {
    use crate::api::rollout::{Phase, Verdict};
    use crate::render::canary::{canary_name, canary_selector_labels};
    let name = canary_name(&bundle.name_any());
    let steps = bundle
        .spec
        .rollout
        .as_ref()
        .and_then(|x| x.canary.as_ref())
        .map_or(0, |c| c.steps.len());
    let gateway = r
        .gateway_weight
        .map_or("not reported".to_string(), |w| format!("{w}%"));
    let state = format!(
        "{:?}, step {} of {steps}, weight {}% (the Gateway: {gateway}), {} pods, revision {} beside stable {}",
        r.phase,
        r.step_index + 1,
        r.weight,
        r.canary_replicas,
        r.canary_revision,
        r.stable_revision
    );
    let ok = matches!(r.phase, Phase::Promoted | Phase::Reverted);
    let mut node = Node::new("Canary", &name, ok, state);
    if !ok {
        node = node.because(
            r.reason.clone().unwrap_or_else(|| format!("{:?}", r.phase)),
            r.message.clone(),
        );
    }
    if let Ok(Some(d)) = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(&name)
        .await
    {
        let selector = canary_selector_labels(&bundle.name_any())
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut dn = deployment_node(&d, desired);
        dn.children = pod_nodes(&pods);
        node.children.push(dn);
    }
    for c in &r.checks {
        let value = c.value.clone().unwrap_or_else(|| "-".into());
        let limit = c
            .limit
            .as_deref()
            .map(|l| format!(" (limit {l})"))
            .unwrap_or_default();
        let check = Node::new(
            "Check",
            &c.name,
            c.verdict == Verdict::Pass,
            format!("{:?}: {value}{limit}", c.verdict),
        );
        node.children.push(match (&c.message, c.verdict) {
            (Some(m), v) if v != Verdict::Pass => check.because(format!("{v:?}"), m.clone()),
            _ => check,
        });
    }
    node
}

fn bundle_node(bundle: &AppBundle) -> Node {
    let status = bundle.status.clone().unwrap_or_default();
    let current = status.observed_generation == bundle.metadata.generation;
    let ready_cond = find_condition(&status.conditions, READY);
    let stalled = find_condition(&status.conditions, STALLED).filter(|c| c.status == TRUE);
    let ready = current && ready_cond.is_some_and(|c| c.status == TRUE);
    let mut state = vec![format!(
        "{} pods ready",
        status.replica_summary.as_deref().unwrap_or("0/?")
    )];
    state.push(format!("image {}", bundle.spec.image));
    if let Some(n) = status.revision {
        state.push(format!("revision {n}"));
    }
    let node = Node::new("AppBundle", &bundle.name_any(), ready, state.join(", "));
    match (stalled, ready_cond) {
        _ if ready => node,
        (Some(s), _) => node.because(format!("Stalled/{}", s.reason), s.message.clone()),
        (None, Some(c)) if current => node.because(c.reason.clone(), c.message.clone()),
        _ => node.because(
            "NotObserved",
            "kubundle has not reconciled the newest spec yet",
        ),
    }
}

fn typed<T: serde::de::DeserializeOwned>(obj: DynamicObject) -> Option<T> {
    serde_json::to_value(obj)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
}

fn child_node(kind: ChildKind, bundle: &AppBundle, live: DynamicObject, pods: &[Pod]) -> Node {
    let name = live.name_any();
    let unreadable = || Node::new(kind.name(), &name, false, "unreadable".into());
    match kind {
        ChildKind::Deployment => typed::<Deployment>(live).map_or_else(unreadable, |d| {
            let mut node = deployment_node(&d, desired_replicas(bundle, Some(&d)));
            node.children = pod_nodes(pods);
            node
        }),
        ChildKind::Service => typed::<Service>(live).map_or_else(unreadable, |s| service_node(&s)),
        ChildKind::HorizontalPodAutoscaler => {
            typed::<HorizontalPodAutoscaler>(live).map_or_else(unreadable, |h| hpa_node(&h))
        }
        ChildKind::PodDisruptionBudget => {
            typed::<PodDisruptionBudget>(live).map_or_else(unreadable, |p| pdb_node(&p))
        }
        ChildKind::Ingress => typed::<Ingress>(live).map_or_else(unreadable, |i| ingress_node(&i)),
        ChildKind::HttpRoute => route_node(&live),
    }
}

fn deployment_node(d: &Deployment, desired: i32) -> Node {
    let name = d.name_any();
    let s = d.status.clone().unwrap_or_default();
    let (total, updated) = (s.replicas.unwrap_or(0), s.updated_replicas.unwrap_or(0));
    let (ready, available) = (
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    );
    let mut state = format!("{ready}/{desired} ready, {updated} updated, {available} available");
    if total > updated {
        state.push_str(&format!(", {} old", total - updated));
    }
    let observed = s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let done = observed && crate::status::all_pods_current(&s, desired);
    let node = Node::new("Deployment", &name, done, state);
    if done {
        return node;
    }
    let conditions = s.conditions.unwrap_or_default();
    let failing = conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == TRUE)
        .or_else(|| {
            conditions
                .iter()
                .find(|c| c.type_ == "Progressing" && c.status != TRUE)
        });
    match failing {
        Some(c) => node.because(
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        ),
        None if !observed => node.because(
            "NotObserved",
            "the Deployment controller has not seen the newest spec yet",
        ),
        None => node.because("RollingOut", ""),
    }
}

fn pod_nodes(pods: &[Pod]) -> Vec<Node> {
    let mut nodes: Vec<Node> = pods.iter().map(pod_node).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

fn pod_node(p: &Pod) -> Node {
    let name = p.name_any();
    let status = p.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
    let ready = condition("Ready").is_some_and(|c| c.status == TRUE);
    // Containers that should be ready: the main ones and the sidecars (init containers that
    // restart always); init containers proper run to their end.
    let sidecars: Vec<&str> = p
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let running: Vec<_> = status
        .container_statuses
        .iter()
        .flatten()
        .chain(
            status
                .init_container_statuses
                .iter()
                .flatten()
                .filter(|c| sidecars.contains(&c.name.as_str())),
        )
        .collect();
    let all = p.spec.as_ref().map_or(0, |s| s.containers.len()) + sidecars.len();
    let restarts: i32 = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    let mut state = format!(
        "{}, {}/{all} containers ready, {restarts} restarts",
        status.phase.as_deref().unwrap_or("Unknown"),
        running.iter().filter(|c| c.ready).count(),
    );
    if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        state.push_str(&format!(", on {node}"));
    }
    if p.metadata.deletion_timestamp.is_some() {
        return Node::new("Pod", &name, false, state)
            .because("Terminating", "the pod is shutting down");
    }
    let node = Node::new("Pod", &name, ready, state);
    if ready {
        return node;
    }
    if let Some(problem) = pod_problem(p, &name) {
        return node.because(problem.reason, problem.message);
    }
    let why = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .into_iter()
        .filter_map(condition)
        .find(|c| c.status != TRUE);
    match why {
        Some(c) => node.because(
            c.reason
                .clone()
                .unwrap_or_else(|| format!("{}False", c.type_)),
            c.message.clone().unwrap_or_default(),
        ),
        None => node.because("NotReady", ""),
    }
}

fn service_node(s: &Service) -> Node {
    let spec = s.spec.clone().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    n.to_string()
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                    s.clone()
                }
                None => p.port.to_string(),
            };
            format!(
                "{}→{target}/{}",
                p.port,
                p.protocol.as_deref().unwrap_or("TCP")
            )
        })
        .collect();
    let external = crate::status::external_addresses(s);
    let shown_type = if ip == "None" { "Headless" } else { &type_ };
    let mut state = shown_type.to_string();
    if ip != "None" && !ip.is_empty() {
        state.push_str(&format!(" {ip}"));
    }
    if !ports.is_empty() {
        state.push_str(&format!(", ports {}", ports.join(" ")));
    }
    if !external.is_empty() {
        state.push_str(&format!(", external {}", external.join(" ")));
    }
    let waiting = type_ == "LoadBalancer" && external.is_empty();
    let node = Node::new("Service", &s.name_any(), !waiting, state);
    if waiting {
        node.because(
            "WaitingForLoadBalancer",
            "the load balancer has no external address yet",
        )
    } else {
        node
    }
}

fn hpa_node(h: &HorizontalPodAutoscaler) -> Node {
    let spec = h.spec.clone().unwrap_or_default();
    let status = h.status.clone().unwrap_or_default();
    let state = format!(
        "{} current, {} desired (min {}, max {})",
        status.current_replicas.unwrap_or(0),
        status.desired_replicas,
        spec.min_replicas.unwrap_or(1),
        spec.max_replicas
    );
    let failing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "ScalingActive" || c.type_ == "AbleToScale") && c.status == "False")
        .cloned();
    let node = Node::new(
        "HorizontalPodAutoscaler",
        &h.name_any(),
        failing.is_none(),
        state,
    );
    match failing {
        Some(c) => node.because(c.reason.unwrap_or_default(), c.message.unwrap_or_default()),
        None => node,
    }
}

fn pdb_node(p: &PodDisruptionBudget) -> Node {
    let s = p.status.clone().unwrap_or_default();
    Node::new(
        "PodDisruptionBudget",
        &p.name_any(),
        true,
        format!(
            "{} disruptions allowed, {} pods healthy ({} needed)",
            s.disruptions_allowed, s.current_healthy, s.desired_healthy
        ),
    )
}

fn ingress_node(i: &Ingress) -> Node {
    let addresses = crate::status::route::ingress_addresses(i);
    let ready = !addresses.is_empty();
    let node = Node::new(
        "Ingress",
        &i.name_any(),
        ready,
        if ready {
            format!("address {}", addresses.join(" "))
        } else {
            "no address".into()
        },
    );
    if ready {
        node
    } else {
        node.because(
            "WaitingForIngressAddress",
            "the ingress controller has not given it an address yet",
        )
    }
}

fn route_node(r: &DynamicObject) -> Node {
    let parents = r
        .data
        .pointer("/status/parents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let accepted = parents.iter().find_map(|p| {
        p.get("conditions")?
            .as_array()?
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Accepted"))
            .cloned()
    });
    let field = |c: &Value, k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match accepted {
        Some(c) if field(&c, "status") == TRUE => Node::new(
            "HTTPRoute",
            &r.name_any(),
            true,
            "accepted by its Gateway".into(),
        ),
        Some(c) => Node::new("HTTPRoute", &r.name_any(), false, "not accepted".into())
            .because(field(&c, "reason"), field(&c, "message")),
        None => Node::new("HTTPRoute", &r.name_any(), false, "not accepted yet".into())
            .because("WaitingForRoute", "no Gateway has accepted the route yet"),
    }
}

/// The tree as text: one line per object, its reason and message on the line below.
pub fn render(tree: &Tree) -> String {
    let mut out = String::new();
    let root = &tree.app_bundle;
    out.push_str(&format!(
        "{} {}/{}  {}  {}\n",
        root.kind,
        tree.namespace,
        root.name,
        mark(root),
        root.state
    ));
    why(&mut out, root, "  ");
    lines(&mut out, &root.children, "");
    out
}

fn mark(node: &Node) -> &'static str {
    if node.ready { "Ready" } else { "NotReady" }
}

fn why(out: &mut String, node: &Node, indent: &str) {
    if let Some(reason) = &node.reason {
        match &node.message {
            Some(message) => out.push_str(&format!("{indent}{reason}: {message}\n")),
            None => out.push_str(&format!("{indent}{reason}\n")),
        }
    }
}

fn lines(out: &mut String, nodes: &[Node], prefix: &str) {
    for (i, node) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let (branch, rest) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        out.push_str(&format!(
            "{prefix}{branch}{} {}  {}  {}\n",
            node.kind,
            node.name,
            mark(node),
            node.state
        ));
        let below = format!("{prefix}{rest}");
        let indent = if node.children.is_empty() {
            format!("{below}  ")
        } else {
            format!("{below}│ ")
        };
        why(out, node, &indent);
        lines(out, &node.children, &below);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_puts_each_reason_under_its_object() {
        let pod = Node::new(
            "Pod",
            "web-1",
            false,
            "Pending, 0/1 containers ready, 0 restarts".into(),
        )
        .because("Unschedulable", "0/3 nodes are available");
        let mut deployment =
            Node::new("Deployment", "web", false, "0/1 ready".into()).because("RollingOut", "");
        deployment.children = vec![pod];
        let mut root = Node::new("AppBundle", "web", false, "0/1 pods ready".into())
            .because("Unschedulable", "pod web-1 cannot be scheduled");
        root.children = vec![
            deployment,
            Node::new("Service", "web", true, "ClusterIP 10.0.0.1".into()),
        ];
        let text = render(&Tree {
            namespace: "shop".into(),
            app_bundle: root,
        });
        assert_eq!(
            text,
            "AppBundle shop/web  NotReady  0/1 pods ready\n\
             \x20 Unschedulable: pod web-1 cannot be scheduled\n\
             ├─ Deployment web  NotReady  0/1 ready\n\
             │  │ RollingOut\n\
             │  └─ Pod web-1  NotReady  Pending, 0/1 containers ready, 0 restarts\n\
             │       Unschedulable: 0/3 nodes are available\n\
             └─ Service web  Ready  ClusterIP 10.0.0.1\n"
        );
    }
}
