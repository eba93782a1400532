//! kubundle: a Kubernetes operator that turns one `AppBundle` into one Deployment and one Service,
//! keeps them as declared, and reports their state back in the AppBundle's status.
//!
//! - [`api`]: the `AppBundle` custom resource, the public contract.
//! - [`render`]: pure functions from an AppBundle to its children.

pub mod api;
pub mod render;
