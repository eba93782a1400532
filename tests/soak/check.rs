//! The invariants the soak proves once changes and faults have stopped, each from the API
//! server's own state (never from the operator's):
//! - every AppBundle's status is for its current generation, Ready, not Stalled, and true: the
//!   Deployment it reports on has finished its rollout, and with autoscaling, the autoscaler has
//!   been seen by its controller and the status says what it says;
//! - every child the AppBundle's spec renders exists and holds the rendering, by the same
//!   comparison drift detection uses, with exactly one controller owner: that AppBundle;
//! - no other object of kubundle's exists (no duplicate, nothing stale, no orphan left);
//! - objects kubundle does not own were not written (their resourceVersion is unchanged), and the
//!   AppBundle that would need one of them says so instead.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use kubundle::api::AppBundle;
use kubundle::reconcile::children::{api, drift::covers};
use kubundle::render::{ChildKind, labels};

/// An object created outside kubundle, and its resourceVersion then.
#[derive(Clone, Debug)]
pub struct Foreign {
    pub kind: ChildKind,
    pub ns: String,
    pub name: String,
    pub resource_version: String,
}

/// The AppBundle whose Service name is taken by a foreign Service.
pub const TAKEN: &str = "taken";

/// Every invariant broken now, described (empty: all hold).
pub async fn violations(
    client: &Client,
    namespaces: &[String],
    foreign: &[Foreign],
) -> Vec<String> {
    let mut out = Vec::new();
    for ns in namespaces {
        if let Err(e) = namespace(client, ns, &mut out).await {
            out.push(format!("{ns}: cannot read: {e}"));
        }
    }
    for f in foreign {
        match api(client, &f.ns, f.kind).get_opt(&f.name).await {
            Ok(Some(o)) if o.resource_version().as_deref() == Some(&f.resource_version) => {}
            Ok(Some(o)) => out.push(format!(
                "foreign {} {}/{} was written: resourceVersion {} -> {:?}",
                f.kind.name(),
                f.ns,
                f.name,
                f.resource_version,
                o.resource_version()
            )),
            Ok(None) => out.push(format!(
                "foreign {} {}/{} was deleted",
                f.kind.name(),
                f.ns,
                f.name
            )),
            Err(e) => out.push(format!(
                "foreign {} {}/{}: {e}",
                f.kind.name(),
                f.ns,
                f.name
            )),
        }
    }
    out
}

async fn namespace(client: &Client, ns: &str, out: &mut Vec<String>) -> Result<(), kube::Error> {
    let bundles = Api::<AppBundle>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    // (kind, name) -> owner uid, for every child a spec renders.
    let mut expected = std::collections::BTreeMap::new();
    for b in &bundles {
        let name = b.name_any();
        let uid = b.uid().unwrap_or_default();
        let at = format!("{ns}/{name}");
        let status = b.status.clone().unwrap_or_default();
        let condition = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
        if name == TAKEN {
            match condition("Ready") {
                Some(c) if c.status != "True" && c.reason == "NameConflict" => {}
                other => out.push(format!(
                    "{at}: its Service's name is another's, yet Ready is {other:?} (expected False, NameConflict)"
                )),
            }
            continue;
        }
        if status.observed_generation != b.metadata.generation {
            out.push(format!(
                "{at}: status for generation {:?}, spec at {:?}",
                status.observed_generation, b.metadata.generation
            ));
        }
        match condition("Ready") {
            Some(c) if c.status == "True" => {}
            other => out.push(format!("{at}: not Ready: {other:?}")),
        }
        if let Some(c) = condition("Stalled").filter(|c| c.status == "True") {
            out.push(format!("{at}: Stalled: {} {}", c.reason, c.message));
        }
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let live = deployments.get_opt(&name).await?;
        let digest = live
            .as_ref()
            .and_then(|d| kubundle::render::config::digest_of(d).map(str::to_string));
        if let Some(d) = &live {
            let s = d.status.clone().unwrap_or_default();
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let done = s.observed_generation == d.metadata.generation
                && s.updated_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want;
            if !done {
                out.push(format!(
                    "{at}: Ready, but its Deployment has not finished: want {want}, {s:?}"
                ));
            }
        }
        if b.spec.autoscaling.is_some() {
            autoscaler(client, ns, &name, &status, out).await?;
        }
        let rendered = match kubundle::render::children(b, digest.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                out.push(format!("{at}: its spec does not render: {e}"));
                continue;
            }
        };
        for r in rendered {
            let child = r.object.metadata.name.clone().unwrap_or_default();
            expected.insert((r.kind.name(), child.clone()), uid.clone());
            let what = format!("{at}: {} {child}", r.kind.name());
            let Some(live) = api(client, ns, r.kind).get_opt(&child).await? else {
                out.push(format!("{what} is missing"));
                continue;
            };
            let controllers: Vec<_> = live
                .owner_references()
                .iter()
                .filter(|o| o.controller == Some(true))
                .collect();
            if controllers.len() != 1 || controllers[0].uid != uid {
                out.push(format!(
                    "{what}: controllers {controllers:?}, expected the AppBundle {uid}"
                ));
            }
            let live = serde_json::to_value(&live).unwrap();
            let desired = serde_json::to_value(&r.object).unwrap();
            if !covers(&live, &desired) {
                out.push(format!(
                    "{what} differs from the rendering of the spec:\n  rendered: {}\n  live: {}",
                    desired["spec"], live["spec"]
                ));
            }
        }
    }
    // Everything kubundle made must be one of those children.
    for kind in ChildKind::ALL {
        let list = match api(client, ns, kind)
            .list(&ListParams::default().labels(&format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::MANAGER
            )))
            .await
        {
            Ok(l) => l.items,
            Err(kube::Error::Api(s)) if s.code == 404 => continue, // the kind is not served
            Err(e) => return Err(e),
        };
        for o in list {
            check_made(&o, kind, ns, &expected, out);
        }
    }
    Ok(())
}

/// With autoscaling, the status is true once the autoscaler's controller has settled on what it
/// says and the AppBundle says the same: the pods it sees and wants, and why it cannot scale.
/// Its controller syncs every 5 s here (cluster.sh) and its first syncs after a create differ
/// (the soak saw a status mirrored 5 s after its AppBundle was made again, past the convergence
/// of the checks before this one): an autoscaler younger than three syncs is not settled yet.
const AUTOSCALER_SETTLES: std::time::Duration = std::time::Duration::from_secs(15);
async fn autoscaler(
    client: &Client,
    ns: &str,
    name: &str,
    status: &kubundle::api::AppBundleStatus,
    out: &mut Vec<String>,
) -> Result<(), kube::Error> {
    let at = format!("{ns}/{name}");
    let Some(hpa) = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    else {
        return Ok(()); // reported as a missing child
    };
    let age = hpa
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| std::time::SystemTime::now().duration_since(t.0.into()).ok())
        .unwrap_or_default();
    if age < AUTOSCALER_SETTLES {
        out.push(format!(
            "{at}: its autoscaler was made {age:?} ago; its controller's first syncs may still \
             change what it says"
        ));
        return Ok(());
    }
    let live = hpa.status.unwrap_or_default();
    let conditions = live.conditions.unwrap_or_default();
    if conditions.is_empty() {
        out.push(format!(
            "{at}: its autoscaler has not been seen by its controller yet"
        ));
        return Ok(());
    }
    // The first condition that says it cannot scale, as kubundle words it.
    let cannot_scale = conditions
        .iter()
        .find(|c| (c.type_ == "ScalingActive" || c.type_ == "AbleToScale") && c.status == "False")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        });
    let told = status.autoscaling.clone().unwrap_or_default();
    if told.current_replicas != live.current_replicas
        || told.desired_replicas != Some(live.desired_replicas)
        || told.message != cannot_scale
    {
        out.push(format!(
            "{at}: status.autoscaling {told:?}, but the autoscaler says current {:?}, desired {}, \
             {cannot_scale:?}",
            live.current_replicas, live.desired_replicas
        ));
    }
    Ok(())
}

fn check_made(
    o: &DynamicObject,
    kind: ChildKind,
    ns: &str,
    expected: &std::collections::BTreeMap<(&'static str, String), String>,
    out: &mut Vec<String>,
) {
    let name = o.name_any();
    match expected.get(&(kind.name(), name.clone())) {
        None => out.push(format!(
            "{ns}: {} {name} is kubundle's but no AppBundle's spec asks for it (owners {:?})",
            kind.name(),
            o.owner_references()
        )),
        Some(uid) => {
            let owners = o.owner_references();
            let controller: Vec<_> = owners
                .iter()
                .filter(|r| r.controller == Some(true))
                .collect();
            if controller.len() != 1 || &controller[0].uid != uid {
                out.push(format!("{ns}: {} {name}: owners {owners:?}", kind.name()));
            }
        }
    }
}

/// What is wrong in namespace `ns` of hostile AppBundles (support::hostile::CASES, named h0, h1,
/// ...): each must be at rest with the API server's words, faults or not (empty: all are).
pub async fn hostile(client: &Client, ns: &str) -> Vec<String> {
    let api: Api<AppBundle> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for (i, (extra, words)) in crate::support::hostile::CASES.iter().enumerate() {
        match api.get_opt(&format!("h{i}")).await {
            Ok(Some(b)) => out.extend(crate::support::hostile::wrong(&b, extra, words)),
            Ok(None) => out.push(format!("{ns}/h{i} is gone")),
            Err(e) => out.push(format!("{ns}/h{i}: cannot read: {e}")),
        }
    }
    out
}
