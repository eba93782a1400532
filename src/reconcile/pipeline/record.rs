//! The record step: the rollout history. Children adopted after an orphan delete bring their
//! revisions with them; a spec that became Ready is recorded as the newest revision, once
//! (src/reconcile/revisions.rs writes the ControllerRevisions).

use std::time::Duration;

use tracing::warn;

use super::run::Run;
use super::write::Written;
use crate::api::{AppBundle, AppBundleStatus, READY, TRUE, find_condition};
use crate::reconcile::children::Change;
use crate::reconcile::revisions as history;
use crate::status::{self, Blocker};

/// How soon to try again when the rollout history could not be recorded.
const HISTORY_RETRY: Duration = Duration::from_secs(10);
/// How soon a revision name held by another owner is looked at again.
const BLOCKED_HISTORY_RETRY: Duration = Duration::from_secs(60);

/// Records what is to be recorded into `status` (revision numbers, or a note on Ready); when to
/// try again, if the history could not be recorded.
pub(super) async fn history(
    run: &Run<'_>,
    bundle: &AppBundle,
    blocker: Option<&Blocker>,
    written: &Written,
    status: &mut AppBundleStatus,
) -> Option<Duration> {
    let ctx = run.ctx;
    // Children adopted (the AppBundle was deleted with --cascade=orphan and applied again): its
    // revisions come with them, and the next is numbered after theirs.
    if written
        .changes
        .iter()
        .any(|(_, _, c)| *c == Change::Adopted)
    {
        match history::adopt_orphans(&ctx.client, bundle, &ctx.metrics).await {
            Ok(Some(highest)) if status.revision.unwrap_or(0) < highest => {
                status.revision = Some(highest);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot adopt the orphaned rollout history"),
        }
    }
    // Ready on the newest spec: it is the newest revision (recorded once; revisions.rs).
    let due = blocker.is_none()
        && find_condition(&status.conditions, READY).is_some_and(|c| c.status == TRUE)
        && history::unrecorded(bundle)
        // A CRD older than kubundle cannot store the revision fields (observe/crd_skew.rs).
        && !ctx.crd_skew.blocks_history();
    if !due {
        return None;
    }
    let last = status.revision.unwrap_or(0);
    match history::record(&ctx.client, bundle, last, &ctx.metrics).await {
        Ok((number, revision)) => {
            status.revision = Some(number);
            status.current_revision = Some(revision);
            None
        }
        // A revision of that name that is not this AppBundle's: said in Ready's message (Ready
        // stays: the application is fine), looked at again every minute.
        Err(e) if e.to_string().contains(history::FOREIGN) => {
            warn!(error = %e, "cannot record the rollout history");
            status::note_on_ready(
                status,
                &format!("rollout history is not recorded: {e} (delete or rename it)"),
            );
            Some(BLOCKED_HISTORY_RETRY)
        }
        Err(e) => {
            warn!(error = %e, "cannot record the rollout history; trying again in 10 s");
            Some(HISTORY_RETRY)
        }
    }
}
