//! What every step of one reconcile knows ([`Run`]) and returns ([`Step`]), and how a step that
//! cannot go on reports the AppBundle as blocked.

use std::ops::ControlFlow;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use crate::api::AppBundle;
use crate::error::Result;
use crate::reconcile::context::Context;
use crate::reconcile::observe::cached_bundle::CachedBundle;
use crate::reconcile::report::write_status;
use crate::status::{self, Blocker, Observed};

/// The result of a step: go on with it, or end the reconcile with this action.
pub type Step<T> = Result<ControlFlow<Action, T>>;

/// What every step of one reconcile knows: the controller's context, the AppBundle's namespace
/// and reference (for Events), the API its status is written through, and the moment the
/// reconcile began (for the conditions' transition times and the rollout's progress).
pub struct Run<'a> {
    pub ctx: &'a Context,
    pub ns: String,
    pub reference: ObjectReference,
    pub status_api: Api<CachedBundle>,
    pub now: Time,
}

impl<'a> Run<'a> {
    pub fn new(ctx: &'a Context, obj: &CachedBundle) -> Self {
        let ns = obj.namespace().unwrap_or_default();
        Run {
            ctx,
            reference: obj.object_ref(&()),
            // Status writes answer with the object, read as the cache reads it: even an AppBundle
            // whose spec this version cannot read gets its status written.
            status_api: Api::namespaced(ctx.client.clone(), &ns),
            ns,
            now: Time(k8s_openapi::jiff::Timestamp::now()),
        }
    }

    /// Reports an AppBundle that cannot get as far as its children (its spec cannot be read or
    /// rendered); only a new spec can change that.
    pub async fn blocked<T>(&self, bundle: &AppBundle, blocker: Blocker) -> Step<T> {
        let status = status::compute(
            bundle,
            &Observed::default(),
            Some(&blocker),
            &self.ctx.settings.cluster_domain,
            &self.now,
        );
        let held_back = write_status(
            &self.ctx.reporter(),
            &self.status_api,
            bundle,
            &status,
            &self.reference,
            "",
        )
        .await?;
        Ok(ControlFlow::Break(match held_back {
            Some(wait) => Action::requeue(wait),
            None => Action::await_change(),
        }))
    }
}

/// kubundle has not written this AppBundle's status yet (it is the CRD's default,
/// observedGeneration 0): its children, if any exist, were made in this very rollout.
pub fn never_reported(bundle: &AppBundle) -> bool {
    bundle
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0)
        == 0
}
