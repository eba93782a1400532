//! `kubectl kubundle rollback NAME [--to-revision N] [--force] [--dry-run]`: one recorded revision
//! written back into the AppBundle.
//!
//! A rollback is a write of the AppBundle's spec, like an edit: kubundle rolls it out and records
//! it as the newest revision once it is Ready. Where a GitOps tool manages the AppBundle, git is
//! the truth and the tool puts its spec back at its next sync: the rollback is refused with what
//! to do instead, unless `--force` (a rollback until then, in an emergency).

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use super::show_history::{bundle, recorded};
use super::{FIELD_MANAGER, PluginError, to_json};
use crate::api::AppBundle;
use crate::history::{Revision, recorded_spec, revision_name, rollback_spec};

/// The GitOps tool that manages `obj`, if one does: by the labels, annotations and field
/// managers Flux and Argo CD leave.
pub fn gitops_manager(obj: &DynamicObject) -> Option<&'static str> {
    let labels = obj.labels();
    let annotations = obj.annotations();
    let managers: Vec<&str> = obj
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    let has_label = |prefix: &str| labels.keys().any(|k| k.starts_with(prefix));
    if has_label("kustomize.toolkit.fluxcd.io/")
        || has_label("helm.toolkit.fluxcd.io/")
        || managers
            .iter()
            .any(|m| *m == "kustomize-controller" || *m == "helm-controller")
    {
        return Some("Flux");
    }
    if annotations.contains_key("argocd.argoproj.io/tracking-id")
        || labels.contains_key("argocd.argoproj.io/instance")
        || managers.contains(&"argocd-controller")
    {
        return Some("Argo CD");
    }
    None
}

/// What `rollback -o json` says.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RolledBack<'a> {
    name: &'a str,
    namespace: &'a str,
    to_revision: i64,
    image: &'a str,
    /// Nothing was written: the spec already is that revision's, or --dry-run.
    written: bool,
    /// The replicas the rollback writes (none: the autoscaler's, or the Deployment keeps its
    /// count).
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gitops: Option<&'static str>,
}

/// What a rollback does to the number of pods, in words.
fn replicas_note(spec: &Value, running: Option<i64>) -> String {
    let now = running.map_or(String::new(), |n| format!(" (now {n})"));
    if spec.get("autoscaling").is_some_and(|a| !a.is_null()) {
        format!("pods set by the autoscaler{now}")
    } else if let Some(n) = spec.get("replicas").and_then(Value::as_i64) {
        format!("replicas {n}{now}")
    } else {
        format!("replicas not set: the Deployment keeps the pods it runs{now}")
    }
}

/// The revision to roll back to: `to`, or like `kubectl rollout undo` the one before the one that
/// runs.
fn target_revision<'a>(
    revs: &'a [Revision],
    typed: &AppBundle,
    to: Option<i64>,
) -> Result<&'a Revision, PluginError> {
    let name = typed.name_any();
    let current_number = typed.status.as_ref().and_then(|s| s.revision);
    Ok(match to {
        Some(n) => revs.iter().find(|r| r.number == n).ok_or_else(|| {
            PluginError::User(format!(
                "appbundle/{name} has no revision {n} (kubectl kubundle history {name} lists them)"
            ))
        })?,
        None => {
            // Like `kubectl rollout undo`: back to the revision before the one that runs, or,
            // while a spec that is not recorded yet rolls out (stuck, say), to the one that ran.
            let rolling_out = current_number.is_some_and(|n| {
                revs.iter()
                    .find(|r| r.number == n)
                    .is_some_and(|r| r.spec != recorded_spec(&typed.spec))
            });
            let below = match current_number {
                Some(n) if rolling_out => n + 1,
                Some(n) => n,
                None => i64::MAX,
            };
            revs.iter()
                .rev()
                .find(|r| r.number < below)
                .ok_or_else(|| {
                    PluginError::User(format!(
                        "appbundle/{name} has no revision before {} to roll back to",
                        current_number.map_or("its first".to_string(), |n| format!("revision {n}"))
                    ))
                })?
        }
    })
}

pub async fn rollback(
    client: &Client,
    ns: &str,
    name: &str,
    to: Option<i64>,
    force: bool,
    dry_run: bool,
    json: bool,
) -> Result<String, PluginError> {
    let typed = bundle(client, ns, name).await?;
    let revs = recorded(client, ns, &typed).await?;
    let target = target_revision(&revs, &typed, to)?;
    let ar = ApiResource::erase::<AppBundle>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let mut obj = api
        .get_opt(name)
        .await?
        .ok_or_else(|| PluginError::not_found(name, ns))?;
    let gitops = gitops_manager(&obj);
    let same = recorded_spec(&typed.spec) == target.spec;
    let report = |written: bool, note: String, replicas: Option<i64>| {
        if json {
            to_json(&RolledBack {
                name,
                namespace: ns,
                to_revision: target.number,
                image: target.image(),
                written,
                replicas,
                gitops,
            })
        } else {
            note
        }
    };
    if same {
        return Ok(report(
            false,
            format!(
                "appbundle/{name}: skipped rollback (the spec already is revision {}'s, {})\n",
                target.number,
                revision_name(name, &typed.spec)
            ),
            None,
        ));
    }
    if let Some(tool) = gitops
        && !force
    {
        return Err(PluginError::User(format!(
            "appbundle/{name} is managed by {tool}: it would put the spec from git back at its next sync, undoing this rollback. \
             Revert the change in git instead (the spec of revision {} is shown by `kubectl kubundle history {name} --revision {}`), \
             or pass --force to roll back until the next sync",
            target.number, target.number
        )));
    }
    // The pods that run now: a rollback out of autoscaling keeps them (history::rollback_spec).
    let running = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas)
        .map(i64::from);
    let spec = rollback_spec(
        obj.data.get("spec").unwrap_or(&Value::Null),
        target,
        running,
    );
    let replicas = replicas_note(&spec, running);
    let written_replicas = spec.get("replicas").and_then(Value::as_i64);
    obj.data["spec"] = spec;
    if dry_run {
        return Ok(report(
            false,
            format!(
                "appbundle/{name} would be rolled back to revision {} (image {}), {replicas} (dry run)\n",
                target.number,
                target.image()
            ),
            written_replicas,
        ));
    }
    // A replace with the resourceVersion just read: a change made meanwhile is not overwritten.
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.replace(name, &params, &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(PluginError::User(format!(
                "appbundle/{name} changed while rolling back; nothing was written: run the rollback again"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let mut note = format!(
        "appbundle/{name} rolled back to revision {} (image {}), {replicas}\n\
         kubundle rolls it out and records it as the newest revision once it is Ready: \
         kubectl wait --for=condition=Ready appbundle/{name} -n {ns}\n",
        target.number,
        target.image()
    );
    if let Some(tool) = gitops {
        note.push_str(&format!(
            "warning: {tool} manages appbundle/{name} and will put the spec from git back at its next sync: revert the change in git too\n"
        ));
    }
    Ok(report(true, note, written_replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(labels: Value, annotations: Value, managers: &[&str]) -> DynamicObject {
        let fields: Vec<Value> = managers
            .iter()
            .map(|m| serde_json::json!({"manager": m, "operation": "Apply"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubundle.dev/v1alpha1", "kind": "AppBundle",
            "metadata": {"name": "web", "labels": labels, "annotations": annotations,
                         "managedFields": fields},
        }))
        .unwrap()
    }

    #[test]
    fn gitops_tools_are_recognised_by_what_they_leave() {
        let none = serde_json::json!({});
        assert_eq!(
            gitops_manager(&object(
                none.clone(),
                none.clone(),
                &["kubectl-client-side-apply"]
            )),
            None
        );
        assert_eq!(
            gitops_manager(&object(
                serde_json::json!({"kustomize.toolkit.fluxcd.io/name": "apps"}),
                none.clone(),
                &[]
            )),
            Some("Flux")
        );
        assert_eq!(
            gitops_manager(&object(none.clone(), none.clone(), &["helm-controller"])),
            Some("Flux")
        );
        assert_eq!(
            gitops_manager(&object(
                none.clone(),
                serde_json::json!({"argocd.argoproj.io/tracking-id": "shop:kubundle.dev/AppBundle:shop/web"}),
                &[]
            )),
            Some("Argo CD")
        );
        assert_eq!(
            gitops_manager(&object(none.clone(), none, &["argocd-controller"])),
            Some("Argo CD")
        );
    }
}
