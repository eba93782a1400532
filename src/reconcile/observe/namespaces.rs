//! Whether an AppBundle's namespace is being deleted. When it is, the namespace controller deletes
//! everything in it, the ConfigMaps the pods use among them, before or after the AppBundles: a
//! ConfigMap gone missing then is no news to report, and nothing may be created there any more.
//! kubundle reads the namespace (one GET, remembered for a few seconds per namespace) only when a
//! ConfigMap or Secret the pods need went missing, so a steady cluster costs nothing. A namespace
//! kubundle may not read (RBAC) counts as not being deleted: the missing object is reported.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use tracing::debug;

/// How long a namespace's answer is reused: a namespace being deleted stays so, and one that is
/// not costs one read per this long however many of its AppBundles ask.
const REMEMBER: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Namespaces(Mutex<HashMap<String, (Instant, bool)>>);

impl Namespaces {
    /// Whether namespace `ns` is being deleted (or is gone).
    pub async fn terminating(&self, client: &Client, ns: &str) -> bool {
        let now = Instant::now();
        if let Some((at, terminating)) = self.0.lock().unwrap().get(ns)
            && now.saturating_duration_since(*at) < REMEMBER
        {
            return *terminating;
        }
        let terminating = match Api::<Namespace>::all(client.clone())
            .get_metadata_opt(ns)
            .await
        {
            Ok(Some(n)) => n.metadata.deletion_timestamp.is_some(),
            Ok(None) => true,
            Err(e) => {
                debug!(namespace = ns, error = %e, "cannot read the namespace; taken as not being deleted");
                false
            }
        };
        let mut memo = self.0.lock().unwrap();
        if memo.len() > 1024 {
            memo.retain(|_, (at, _)| now.saturating_duration_since(*at) < REMEMBER);
        }
        memo.insert(ns.to_string(), (now, terminating));
        terminating
    }
}
