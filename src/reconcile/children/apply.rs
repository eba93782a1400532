//! Writing a child: server-side apply (a create with the precondition that nothing of its name
//! exists), and the server-side dry run that tries a change of several children first.

use kube::Resource;
use kube::api::{Patch, PatchParams};
use tracing::info;

use super::child::{Change, Child, Found};
use super::settled::Settled;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::reconcile::observe::children_cache::{
    ChildCache, MUST_NOT_EXIST, kubundle_owns_replicas,
};
use crate::render::FIELD_MANAGER;

impl Child {
    /// Applies the rendering when `change` says it is needed (server-side apply, field manager
    /// `kubundle`, forced: fields kubundle sets are its own, whoever last edited them; fields it
    /// does not set stay with their owners). Returns what really changed: an apply the API server
    /// found to be a no-op (same resourceVersion) changed nothing, and is remembered in `settled`.
    ///
    /// A child to create is applied with the precondition that no object of its name exists
    /// ([`MUST_NOT_EXIST`]). If one does (an object without kubundle's label, which the cache does
    /// not hold, or one the cache has not seen yet), the child is read and classified again: an
    /// object kubundle must not touch is left as it is, and [`Child::blocker`] then says so.
    pub async fn apply(
        &mut self,
        change: Change,
        ctx: &Writing<'_>,
    ) -> Result<Change, kube::Error> {
        let name = self.desired.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let change = match change {
            Change::None => return Ok(Change::None),
            Change::Created => {
                let mut body = self.desired.clone();
                body.metadata.resource_version = Some(MUST_NOT_EXIST.into());
                ctx.metrics.write(self.kind.name(), "apply");
                match self.api.patch(&name, &params, &Patch::Apply(&body)).await {
                    Ok(created) => {
                        info!(kind = self.kind.name(), child = name, change = ?Change::Created, "applied");
                        ctx.cache.record(self.kind, &created);
                        ctx.settled.forget(&self.settled_key());
                        self.owns_replicas = kubundle_owns_replicas(&created);
                        self.found = Found::Ours(created);
                        return Ok(Change::Created);
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        self.refresh(ctx.owner_uid, ctx.bundle_name).await?;
                        match self.needed(ctx.settled) {
                            // Gone again meanwhile: try again later.
                            Ok(Change::Created) => return Err(kube::Error::Api(s)),
                            Ok(change) => change,
                            Err(Error::Serialize { source, .. }) => {
                                return Err(kube::Error::SerdeError(source));
                            }
                            Err(Error::Api(e)) => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            other => other,
        };
        if change == Change::None {
            return Ok(Change::None);
        }
        let before = self.live().and_then(|l| l.meta().resource_version.clone());
        ctx.metrics.write(self.kind.name(), "apply");
        let applied = self
            .api
            .patch(&name, &params, &Patch::Apply(&self.desired))
            .await?;
        let after = applied.meta().resource_version.clone();
        let key = self.settled_key();
        let change = if change == Change::Updated && before.is_some() && before == after {
            ctx.settled
                .record(key, self.hash.clone(), after.unwrap_or_default());
            Change::None
        } else {
            ctx.settled.forget(&key);
            info!(kind = self.kind.name(), child = name, ?change, "applied");
            change
        };
        ctx.cache.record(self.kind, &applied);
        self.owns_replicas = kubundle_owns_replicas(&applied);
        self.found = Found::Ours(applied);
        Ok(change)
    }
}

impl Child {
    /// Tries the write `change` asks for as a server-side dry run: the API server admits (or
    /// refuses) it as it would the real one, and stores nothing. A create that finds an object of
    /// the child's name reads and classifies it, as [`Child::apply`] does, so that
    /// [`Child::blocker`] says whose it is.
    pub async fn dry_run(&mut self, change: Change, ctx: &Writing<'_>) -> Result<(), kube::Error> {
        let name = self.desired.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        let mut body = self.desired.clone();
        match change {
            Change::None | Change::Deleted => return Ok(()),
            Change::Created => body.metadata.resource_version = Some(MUST_NOT_EXIST.into()),
            Change::Updated | Change::Adopted => {}
        }
        ctx.metrics.write(self.kind.name(), "dry_run");
        match self.api.patch(&name, &params, &Patch::Apply(&body)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && change == Change::Created => {
                self.refresh(ctx.owner_uid, ctx.bundle_name).await?;
                match self.needed(ctx.settled) {
                    Ok(Change::Created) => Err(kube::Error::Api(s)),
                    _ if self.blocker().is_some() => Ok(()),
                    // Made meanwhile by kubundle itself: the next reconcile sees it.
                    _ => Err(kube::Error::Api(s)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// What applying a child needs besides the child.
pub struct Writing<'a> {
    pub metrics: &'a Metrics,
    pub settled: &'a Settled,
    pub cache: &'a ChildCache,
    pub owner_uid: &'a str,
    pub bundle_name: &'a str,
}
