//! What every reconcile shares: the controller's settings, the API client, Events and metrics,
//! and the state kept between reconciles (the children's cache, the ConfigMap tracker, backoff,
//! the pacing of status writes).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::Client;
use kube::runtime::reflector::ObjectRef;
use tracing::debug;

use super::analysis;
use super::children::Settled;
use super::children::routing;
use super::observe::cached_bundle::CachedBundle;
use super::observe::children_cache::ChildCache;
use super::observe::config_tracker::ConfigTracker;
use super::observe::{crd_skew, namespaces, relist};
use super::report::{OwnWrites, Reporter, StatusPacer};
use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::render::ChildKind;

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (None: all namespaces).
    pub namespace: Option<String>,
    /// AppBundles reconciled at the same time.
    pub concurrency: u16,
    /// The cluster's DNS domain, for `status.address.url`.
    pub cluster_domain: String,
    /// The cluster serves the Gateway API's HTTPRoute (found at startup, see [`gateway_api_served`]).
    pub gateway_api: bool,
    /// Secrets are followed like ConfigMaps (see [`ConfigTracker`]): kubundle may read them.
    pub follow_secrets: bool,
}

/// Whether the cluster serves gateway.networking.k8s.io/v1 HTTPRoutes. Checked once at startup:
/// HTTPRoutes are watched only where they exist (a watch of a missing resource would fail
/// forever and keep /readyz false), so installing the Gateway API later needs a restart of kubundle.
pub async fn gateway_api_served(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources("gateway.networking.k8s.io/v1")
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "httproutes")),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            debug!("no Gateway API in this cluster");
            Ok(false)
        }
        // Not an answer (the API server restarting, say): the caller asks again.
        Err(e) => Err(e),
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub events: Publisher,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Consecutive failures per AppBundle, for exponential backoff; reset on success.
    pub(super) failures: Mutex<HashMap<ObjectRef<CachedBundle>, u32>>,
    /// Children whose last apply was a no-op (see [`Settled`]).
    pub(super) settled: Settled,
    /// The children, as their watches and kubundle's own writes last saw them (see [`ChildCache`]).
    pub cache: ChildCache,
    /// When each AppBundle's status was last written (progress is written at most every 2 s).
    pub(super) pacer: StatusPacer,
    /// The AppBundle as kubundle's last status write returned it, while the cache is older.
    pub(super) own_writes: OwnWrites,
    /// The ConfigMaps and Secrets the pods use (see [`ConfigTracker`]).
    pub config: ConfigTracker,
    /// Which namespaces are being deleted, asked only when a configuration object went missing.
    pub(super) namespaces: namespaces::Namespaces,
    /// What the AppBundle CRD in the cluster lacks of this kubundle's (see [`crd_skew`]).
    pub crd_skew: crd_skew::CrdSkew,
    /// Asks a child kind's watch to list again when its cache was found behind (see [`relist`]).
    pub relists: relist::Relists,
    /// Old routing children draining while their replacement takes over (see [`routing`]).
    pub(super) handovers: routing::Handovers,
    /// The HTTP client of the canaries' checks (see [`analysis`]).
    pub(super) caller: analysis::Caller,
    /// The specs of stable revisions a canary runs beside, by `namespace/revision name` (a
    /// revision's name is a hash of its spec: what is read once stays true).
    pub(super) stable_specs: Mutex<HashMap<String, crate::api::AppBundleSpec>>,
    /// When the Gateway first reported each canary's route at its generation and weight, by
    /// `namespace/name`: a controller reports before its proxies route so (see [`routing::DRAIN`]).
    pub(super) route_reports: Mutex<HashMap<String, (i64, i32, std::time::Instant)>>,
}

impl Context {
    pub fn new(client: Client, events: Publisher, metrics: Metrics, settings: Settings) -> Self {
        Context {
            client,
            events,
            metrics,
            failures: Mutex::default(),
            settled: Settled::default(),
            cache: ChildCache::default(),
            pacer: StatusPacer::default(),
            own_writes: OwnWrites::default(),
            handovers: routing::Handovers::default(),
            config: ConfigTracker::new(settings.follow_secrets),
            namespaces: namespaces::Namespaces::default(),
            crd_skew: crd_skew::CrdSkew::default(),
            relists: relist::Relists::new(&ChildKind::ALL.map(ChildKind::plural)),
            caller: analysis::Caller::new(),
            stable_specs: Mutex::default(),
            route_reports: Mutex::default(),
            settings,
        }
    }
}

impl Context {
    /// What writing status and Events takes (see [`Reporter`]).
    pub(super) fn reporter(&self) -> Reporter<'_> {
        Reporter {
            events: &self.events,
            metrics: &self.metrics,
            pacer: &self.pacer,
            own_writes: &self.own_writes,
            crd_skew: &self.crd_skew,
        }
    }
}
