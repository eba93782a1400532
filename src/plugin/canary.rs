//! `promote`, `abort` and `retry`: a request to an AppBundle's canary (spec.rollout.canary),
//! written in its request annotation ([`crate::rollout::REQUEST_ANNOTATION`]), never in the spec.
//! So they are allowed under GitOps: the tool syncs the spec and leaves the annotation alone.
//! The request names the canary revision it is meant for (a request made for a canary that a new
//! spec replaced meanwhile is not carried out), and the time (the same request twice is two).
//! kubundle acknowledges it in `status.rollout.acknowledgedRequest`; the command waits for that.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::{FIELD_MANAGER, PluginError};
use crate::api::AppBundle;
use crate::api::rollout::Phase;
use crate::rollout::REQUEST_ANNOTATION;

/// What to ask of the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    Promote,
    PromoteFull,
    Abort,
    Retry,
}

impl Ask {
    fn word(self) -> &'static str {
        match self {
            Ask::Promote => "promote",
            Ask::PromoteFull => "promote-full",
            Ask::Abort => "abort",
            Ask::Retry => "retry",
        }
    }
}

/// How long the command waits for kubundle to acknowledge the request.
const ACK_WAIT: Duration = Duration::from_secs(30);

pub async fn ask(client: &Client, ns: &str, name: &str, ask: Ask) -> Result<String, PluginError> {
    let api: Api<AppBundle> = Api::namespaced(client.clone(), ns);
    let bundle = api
        .get_opt(name)
        .await?
        .ok_or_else(|| PluginError::not_found(name, ns))?;
    if bundle
        .spec
        .rollout
        .as_ref()
        .and_then(|r| r.canary.as_ref())
        .is_none()
    {
        return Err(PluginError::User(format!(
            "AppBundle {ns}/{name} has no spec.rollout.canary: its new versions roll out without a canary"
        )));
    }
    let Some(state) = bundle.status.as_ref().and_then(|s| s.rollout.as_ref()) else {
        return Err(PluginError::User(format!(
            "AppBundle {ns}/{name} has no canary yet: one starts when its pods' spec changes"
        )));
    };
    let fits = match ask {
        Ask::Promote | Ask::PromoteFull => {
            matches!(state.phase, Phase::Progressing | Phase::Paused)
        }
        Ask::Abort => matches!(
            state.phase,
            Phase::Progressing | Phase::Paused | Phase::Promoting
        ),
        Ask::Retry => state.phase == Phase::Aborted,
    };
    if !fits {
        return Err(PluginError::User(format!(
            "the canary of {ns}/{name} (revision {}) is {:?}: nothing to {}",
            state.canary_revision,
            state.phase,
            ask.word()
        )));
    }
    let at = k8s_openapi::jiff::Timestamp::now();
    let request = format!("{} {} {at}", ask.word(), state.canary_revision);
    let patch = serde_json::json!({"metadata": {"annotations": {REQUEST_ANNOTATION: request}}});
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + ACK_WAIT;
    loop {
        let now = api.get(name).await?;
        let r = now.status.as_ref().and_then(|s| s.rollout.as_ref());
        if let Some(r) = r.filter(|r| r.acknowledged_request.as_deref() == Some(request.as_str())) {
            return Ok(format!(
                "appbundle.kubundle.dev/{name}: {} of canary revision {} acknowledged; it is {:?}: {}\n",
                ask.word(),
                state.canary_revision,
                r.phase,
                r.message
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PluginError::User(format!(
                "the request \"{request}\" is written on {ns}/{name}, but kubundle has not acknowledged it within {}s: is kubundle running?",
                ACK_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
