//! Leader election on a coordination.k8s.io/v1 Lease, so that several replicas can run and exactly
//! one reconciles.
//!
//! A candidate takes the Lease when nobody holds it, or when the holder has not renewed it for a
//! whole lease duration. Expiry is judged the way client-go does: by how long *this* process has
//! seen the Lease unchanged (its resourceVersion), never by comparing another machine's clock with
//! ours. Every write is a compare-and-swap on the resourceVersion, so two candidates cannot both win.
//! The leader renews every `renew_every`; if it cannot renew within the renew deadline (shorter
//! than the lease duration) it has lost the Lease and must stop reconciling. On shutdown the leader
//! releases the Lease, so that a successor takes over at once instead of after the lease duration.
//!
//! Stopping the reconciles is not enough on its own: a process frozen for longer than the lease
//! duration (SIGSTOP, a VM paused, a node swapping) wakes with its timers all due at once and its
//! watches handing it every event it missed, and its reconciles may write before its renewal finds
//! the Lease taken. So the client itself is fenced ([`Fence`], used by [`crate::client`]): a write
//! leaves this process only within the renew deadline of the last renewal *sent* before it was
//! confirmed, which the other candidates cannot see expire before a whole lease duration.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Lease timing.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader may go on after the last renewal it sent that succeeded: its writes are
    /// fenced after that, and it gives up. Shorter than `lease_duration`, so that the leader has
    /// stopped before another candidate can judge the Lease expired.
    pub renew_deadline: Duration,
    /// How often the leader renews, and how often a candidate retries.
    pub renew_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// Whether this process may write now. Open (always) without leader election; with it, only
/// until the renew deadline of the leader's last confirmed renewal.
#[derive(Clone, Debug)]
pub struct Fence(Option<Arc<Mutex<Option<Instant>>>>);

impl Fence {
    /// No leader election: writes always pass.
    pub fn open() -> Fence {
        Fence(None)
    }

    /// Leader election: no write passes until the Lease is held.
    pub fn closed() -> Fence {
        Fence(Some(Arc::new(Mutex::new(None))))
    }

    /// Whether a write may be sent now.
    pub fn allows_writes(&self) -> bool {
        match &self.0 {
            None => true,
            Some(until) => until.lock().unwrap().is_some_and(|t| Instant::now() < t),
        }
    }

    fn hold_until(&self, until: Instant) {
        if let Some(held) = &self.0 {
            *held.lock().unwrap() = Some(until);
        }
    }

    fn shut(&self) {
        if let Some(held) = &self.0 {
            *held.lock().unwrap() = None;
        }
    }
}

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    metrics: Metrics,
    /// The Lease as last seen: its resourceVersion and when we first saw that version.
    observed: Option<(String, Instant)>,
    /// Opened by each confirmed renewal, until its renew deadline.
    fence: Fence,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    pub fn new(
        api: Api<Lease>,
        name: &str,
        identity: &str,
        timing: Timing,
        metrics: Metrics,
    ) -> Self {
        Elector {
            api,
            name: name.into(),
            identity: identity.into(),
            timing,
            metrics,
            observed: None,
            fence: Fence::closed(),
        }
    }

    /// The fence this elector opens while it holds the Lease (the one the client checks).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(now)),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to hold the Lease (take it, or renew it). Ok(true): we hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        // A confirmed write holds from before it was sent: the others count from after it landed.
        let sent = Instant::now();
        let held = self.hold().await;
        if let Ok(true) = held {
            self.fence.hold_until(sent + self.timing.renew_deadline);
        }
        held
    }

    async fn hold(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, None)),
            };
            self.metrics.write("Lease", "create");
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let since = match &self.observed {
            Some((seen, at)) if *seen == rv => *at,
            _ => {
                self.observed = Some((rv.clone(), Instant::now()));
                Instant::now()
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let ours = holder == self.identity;
        let free = holder.is_empty() || since.elapsed() >= duration;
        if !ours && !free {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        lease.spec = Some(self.spec(transitions, acquired));
        self.metrics.write("Lease", "update");
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observed = updated
                    .metadata
                    .resource_version
                    .map(|rv| (rv, Instant::now()));
                if !ours {
                    info!(lease = %self.name, previous = %holder, "took the leader lease");
                }
                Ok(true)
            }
            // Someone else wrote it first: they hold it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot read or write the leader lease; retrying"),
            }
            tokio::time::sleep(self.timing.renew_every).await;
        }
    }

    /// Renews the Lease until it cannot for a whole lease duration; returns then (leadership lost).
    pub async fn keep(&mut self) {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.timing.renew_every).await;
            let sent = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = sent,
                Ok(false) => {
                    self.fence.shut();
                    warn!(lease = %self.name, "another replica holds the leader lease");
                    return;
                }
                Err(e) => warn!(error = %e, "cannot renew the leader lease"),
            }
            if last_renewal.elapsed() >= self.timing.renew_deadline {
                self.fence.shut();
                warn!(lease = %self.name, "could not renew the leader lease in time");
                return;
            }
        }
    }

    /// Gives the Lease up (on shutdown), so that another replica takes over without waiting.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.metrics.write("Lease", "update");
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released the leader lease"),
            Err(e) => warn!(error = %e, "cannot release the leader lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_passes_writes_until_its_deadline_and_none_once_shut() {
        assert!(Fence::open().allows_writes());
        let fence = Fence::closed();
        assert!(!fence.allows_writes(), "closed until the Lease is held");
        fence.hold_until(Instant::now() + Duration::from_secs(60));
        assert!(fence.allows_writes());
        assert!(fence.clone().allows_writes(), "clones share the deadline");
        fence.hold_until(Instant::now());
        assert!(!fence.allows_writes(), "past the deadline");
        fence.hold_until(Instant::now() + Duration::from_secs(60));
        fence.shut();
        assert!(!fence.allows_writes());
    }
}
