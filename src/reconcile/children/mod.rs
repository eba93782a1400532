//! The children of an AppBundle as a set, whatever their kind: read each, decide whether kubundle
//! may write it, apply the ones that differ from their rendering, delete the ones the spec no
//! longer asks for.
//!
//! Reading comes first for every child, and nothing is written unless every child may be: an
//! object of a child's name that kubundle must not touch blocks the whole AppBundle (no pods
//! without their Service, no Service without its pods). Then the children that need it are
//! applied concurrently, each to completion: one child's refusal never cancels another's
//! request halfway.

mod apply;
mod child;
pub mod drift;
pub mod handover;
mod prune;
mod refusal;
pub mod routing;
mod settled;

pub use apply::Writing;
pub use child::{Change, Child, Found, RENDERED_HASH, api, cached, read, rendering_hash};
pub use prune::{Stale, is_stale_child, prune};
pub use refusal::{is_definite_refusal, is_namespace_terminating, refusal_may_lift};
pub use settled::Settled;
