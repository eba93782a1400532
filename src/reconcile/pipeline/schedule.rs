//! The schedule step: when to look at the AppBundle again without a watch event.

use std::time::Duration;

use kube::runtime::controller::Action;

use crate::status::Blocker;
use crate::status::pods::{self, Progress};

/// How soon to look again while an object kubundle does not watch blocks the AppBundle (a name
/// conflict with an object that is not kubundle's, a child still terminating).
const BLOCKED_RECHECK: Duration = Duration::from_secs(5);
/// How soon to try a write again that was forbidden or denied by an admission policy.
const REFUSED_RECHECK: Duration = Duration::from_secs(60);

/// When the blocker or the rollout asks for another look (None: only on a watch event).
pub(super) fn after_blocker_or_progress(
    blocker: Option<&Blocker>,
    progress: &Progress,
) -> Option<Duration> {
    match blocker {
        // Objects kubundle does not watch (a foreign object, a refusal that may depend on quota
        // or RBAC): look again soon. kubundle's own children's changes arrive through the watches.
        Some(Blocker::NameConflict { .. } | Blocker::Terminating { .. }) => Some(BLOCKED_RECHECK),
        // Forbidden, or denied by an admission policy: those may change without the AppBundle.
        Some(Blocker::WriteRefused { retry: true, .. }) => Some(REFUSED_RECHECK),
        // The object itself was refused: only a new spec can help, and it triggers a reconcile.
        Some(_) => None,
        // A rollout in progress: look at its pods once it stops making progress, and again while
        // it stays stuck (a crash loop or a pull back-off does not change the Deployment).
        None => match progress {
            Progress::Moving(since) => {
                Some(pods::STUCK_AFTER.saturating_sub(*since) + Duration::from_millis(500))
            }
            Progress::Stuck => Some(pods::RECHECK),
            Progress::Nothing => None,
        },
    }
}

/// The soonest of the looks asked for, or a wait for the next watch event.
pub(super) fn next_look(asked: &[Option<Duration>]) -> Action {
    match asked.iter().flatten().min() {
        Some(after) => Action::requeue(*after),
        None => Action::await_change(),
    }
}
