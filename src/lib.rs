//! kubundle: a Kubernetes operator that turns one `AppBundle` into one Deployment and one Service,
//! keeps them as declared, and reports their state back in the AppBundle's status.
//!
//! - [`api`]: the `AppBundle` custom resource, the public contract.
//! - [`render`]: pure functions from an AppBundle to its children.
//! - [`reconcile`]: the controller (watches, the reconcile pipeline, apply and prune, status writes).
//! - [`status`]: pure functions from an AppBundle and what was observed to its status (conditions,
//!   rollout progress, pod diagnosis, route readiness), used by the controller and the plugin.
//! - [`rollout`]: canary releases' state machine, pure (run by the controller's canary step).
//! - [`leader`]: leader election on a Lease, and the fence that keeps a non-leader from writing.
//! - [`history`]: the rolled-out specs recorded as ControllerRevisions.
//! - [`plugin`]: the kubectl plugin (`kubectl kubundle status|history|rollback`).
//! - [`events`]: Kubernetes Events about AppBundles.
//! - [`hash`]: the one stable hash behind every digest and name kubundle writes.
//! - [`client`]: the operator's Kubernetes client (a count of every request, a deadline for each
//!   answer, no write without the leader Lease).
//! - [`metrics`], [`endpoints`]: the Prometheus metrics and the HTTP endpoints (/metrics, /healthz,
//!   /readyz).

pub mod api;
pub mod client;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod hash;
pub mod history;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod startup;
pub mod status;
