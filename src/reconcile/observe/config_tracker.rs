//! The ConfigMaps and Secrets the pods use: whether they exist (a missing one is reported in the
//! status before the pods fail on it), and, for AppBundles with `spec.rolloutOnConfigChange`, the
//! digest of their contents that rolls the pods when they change (render/config.rs).
//!
//! ConfigMaps (and Secrets, when kubundle may read them) are watched as metadata only: kubundle
//! keeps each one's resourceVersion, not its contents. A change of one that an AppBundle uses
//! triggers that AppBundle's reconcile. The contents are read (one GET) only for AppBundles that
//! follow them, and only when the resourceVersion differs from the one last hashed: a steady
//! cluster reads nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::cached_bundle::CachedBundle;
use super::listing::Listing;
use crate::render::config::{ConfigKind, ConfigRef, content_hash, digest};

/// (kind, namespace, name) of a ConfigMap or Secret.
type Key = (ConfigKind, String, String);

/// What kubundle knows of the configuration objects.
#[derive(Default)]
pub struct ConfigTracker {
    /// Secrets are watched and read (the chart granted it): otherwise they are neither reported
    /// missing nor followed.
    secrets: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each object's resourceVersion, as its watch last saw it.
    versions: HashMap<Key, String>,
    /// During a (re-)list: what it has returned so far, per kind.
    listing: HashMap<ConfigKind, Listing<Key, String>>,
    /// The kinds whose watch has listed once.
    synced: BTreeSet<ConfigKind>,
    /// The content hash of an object at a resourceVersion, once read.
    hashes: HashMap<Key, (String, String)>,
    /// Which AppBundles (by name, in the object's namespace) use each object.
    users: HashMap<Key, BTreeSet<String>>,
    /// What each AppBundle (namespace, name) used at its last reconcile.
    uses: HashMap<(String, String), Vec<Key>>,
    /// Per object, its last burst of changes: (the first change of the burst, the last one).
    changes: HashMap<Key, (Instant, Instant)>,
}

/// A change of the configuration rolls the pods once no object they use has changed for this
/// long: a burst of edits (a `kubectl apply` of several ConfigMaps, a script editing keys one by
/// one) rolls them once, with the last contents.
pub const CONFIG_SETTLE: Duration = Duration::from_secs(5);

/// ... but a stream of changes that never pauses rolls them at the latest this long after its
/// first change.
pub const CONFIG_SETTLE_MAX: Duration = Duration::from_secs(30);

impl State {
    fn changed(&mut self, key: &Key, now: Instant) {
        let burst = match self.changes.get(key) {
            // (A burst that reached the cap has rolled: a change after it starts the next one.)
            Some((first, last))
                if now.saturating_duration_since(*last) < CONFIG_SETTLE
                    && now.saturating_duration_since(*first) < CONFIG_SETTLE_MAX =>
            {
                *first
            }
            _ => now,
        };
        self.changes.insert(key.clone(), (burst, now));
        if self.changes.len() > 4096 {
            self.changes
                .retain(|_, (first, _)| now.saturating_duration_since(*first) < CONFIG_SETTLE_MAX);
        }
    }

    /// How long until the changes of `key` have settled, if they have not.
    fn settling(&self, key: &Key, now: Instant) -> Option<Duration> {
        let (first, last) = self.changes.get(key)?;
        let quiet = CONFIG_SETTLE.saturating_sub(now.saturating_duration_since(*last));
        let cap = CONFIG_SETTLE_MAX.saturating_sub(now.saturating_duration_since(*first));
        let wait = quiet.min(cap);
        (!wait.is_zero()).then_some(wait)
    }
}

/// What a reconcile learns about the configuration its pods use.
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    /// Objects used without `optional: true` that do not exist.
    pub missing: Vec<ConfigRef>,
    /// The digest to put on the pod template (with `spec.rolloutOnConfigChange`).
    pub digest: Option<String>,
    /// Secrets the pods use that kubundle may not read, so does not follow (with
    /// `spec.rolloutOnConfigChange`): their changes roll nothing.
    pub unfollowed: Vec<ConfigRef>,
    /// With `spec.rolloutOnConfigChange`: an object the pods use changed less than
    /// [`CONFIG_SETTLE`] ago; the digest is new only once it settled (in this long).
    pub settling: Option<Duration>,
}

impl ConfigTracker {
    pub fn new(secrets: bool) -> Self {
        ConfigTracker {
            secrets,
            state: Mutex::default(),
        }
    }

    /// Whether Secrets are followed.
    pub fn follows_secrets(&self) -> bool {
        self.secrets
    }

    /// Records one watch event of a ConfigMap or Secret.
    pub fn observe<K>(&self, kind: ConfigKind, event: &watcher::Event<PartialObjectMeta<K>>)
    where
        K: kube::Resource,
    {
        let key =
            |o: &PartialObjectMeta<K>| (kind, o.namespace().unwrap_or_default(), o.name_any());
        let version = |o: &PartialObjectMeta<K>| o.resource_version().unwrap_or_default();
        let mut state = self.state.lock().unwrap();
        match event {
            watcher::Event::Apply(o) => {
                let k = key(o);
                if state.versions.insert(k.clone(), version(o)).as_ref() != Some(&version(o)) {
                    state.changed(&k, Instant::now());
                }
            }
            watcher::Event::Delete(o) => {
                state.versions.remove(&key(o));
                state.hashes.remove(&key(o));
                state.changed(&key(o), Instant::now());
            }
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {
                let listing = state
                    .listing
                    .entry(kind)
                    .or_default()
                    .follow(event, |o| (key(o), version(o)));
                let Some(listed) = listing else {
                    return;
                };
                state.versions.retain(|k, _| k.0 != kind);
                state
                    .hashes
                    .retain(|k, _| k.0 != kind || listed.contains_key(k));
                state.versions.extend(listed);
                state.synced.insert(kind);
            }
        }
    }

    /// The AppBundles to reconcile for a change of this object: those that use it.
    pub fn users_of(&self, kind: ConfigKind, ns: &str, name: &str) -> Vec<ObjectRef<CachedBundle>> {
        let state = self.state.lock().unwrap();
        state
            .users
            .get(&(kind, ns.to_string(), name.to_string()))
            .into_iter()
            .flatten()
            .map(|bundle| ObjectRef::new(bundle).within(ns))
            .collect()
    }

    /// Records which objects AppBundle `ns/name` uses now (its watch events then trigger it).
    fn register(&self, ns: &str, name: &str, refs: &[ConfigRef]) {
        let keys: Vec<Key> = refs
            .iter()
            .map(|r| (r.kind, ns.to_string(), r.name.clone()))
            .collect();
        let mut state = self.state.lock().unwrap();
        let bundle = (ns.to_string(), name.to_string());
        if state.uses.get(&bundle) == Some(&keys) {
            return;
        }
        for old in state.uses.remove(&bundle).unwrap_or_default() {
            if let Some(users) = state.users.get_mut(&old) {
                users.remove(name);
                if users.is_empty() {
                    state.users.remove(&old);
                }
            }
        }
        for key in &keys {
            state
                .users
                .entry(key.clone())
                .or_default()
                .insert(name.to_string());
        }
        if !keys.is_empty() {
            state.uses.insert(bundle, keys);
        }
    }

    /// Forgets an AppBundle that is going away.
    pub fn forget(&self, ns: &str, name: &str) {
        self.register(ns, name, &[]);
    }

    /// What the pods of AppBundle `ns/name` use, as far as kubundle can tell: the missing objects,
    /// and with `follow` the digest of the contents (reading each object whose resourceVersion
    /// changed since it was last hashed).
    pub async fn resolve(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
        refs: &[ConfigRef],
        follow: bool,
    ) -> Result<Resolved, kube::Error> {
        self.register(ns, name, refs);
        let mut resolved = Resolved::default();
        let (refs, unfollowed): (Vec<&ConfigRef>, Vec<&ConfigRef>) = refs
            .iter()
            .partition(|r| r.kind == ConfigKind::ConfigMap || self.secrets);
        if follow {
            resolved.unfollowed = unfollowed.into_iter().cloned().collect();
        }
        // Per object: Some(Some(version)) exists, Some(None) does not, None not known yet.
        let known: Vec<Option<Option<String>>> = {
            let state = self.state.lock().unwrap();
            refs.iter()
                .map(|r| {
                    let key = (r.kind, ns.to_string(), r.name.clone());
                    state
                        .synced
                        .contains(&r.kind)
                        .then(|| state.versions.get(&key).cloned())
                })
                .collect()
        };
        let mut hashes: Vec<Option<String>> = Vec::with_capacity(refs.len());
        for (r, known) in refs.iter().zip(known) {
            let key = (r.kind, ns.to_string(), r.name.clone());
            let hash = match known {
                Some(None) => None,
                Some(Some(version)) if !follow => Some(version),
                Some(Some(version)) => match self.hash_at(&key, &version) {
                    Some(hash) => Some(hash),
                    None => self.read(client, &key).await?,
                },
                // Not listed yet (kubundle just started): read it.
                None => self.read(client, &key).await?,
            };
            if hash.is_none() && !r.optional {
                resolved.missing.push((*r).clone());
            }
            hashes.push(hash);
        }
        if follow {
            let now = Instant::now();
            let state = self.state.lock().unwrap();
            resolved.settling = refs
                .iter()
                .filter_map(|r| state.settling(&(r.kind, ns.to_string(), r.name.clone()), now))
                .max();
            drop(state);
            let objects: Vec<(&ConfigRef, Option<&str>)> = refs
                .iter()
                .copied()
                .zip(hashes.iter().map(Option::as_deref))
                .collect();
            resolved.digest = Some(digest(&objects));
        }
        Ok(resolved)
    }

    fn hash_at(&self, key: &Key, version: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        state
            .hashes
            .get(key)
            .filter(|(v, _)| v == version)
            .map(|(_, h)| h.clone())
    }

    /// Reads one object and hashes its contents (`None`: it does not exist).
    async fn read(&self, client: &Client, key: &Key) -> Result<Option<String>, kube::Error> {
        let (kind, ns, name) = key;
        let read = match kind {
            ConfigKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await?
                .map(|c| {
                    let data: Vec<(&str, &[u8])> = c
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.as_bytes()))
                        .collect();
                    let binary: Vec<(&str, &[u8])> = c
                        .binary_data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
                        .collect();
                    (c.resource_version(), content_hash(&[&data, &binary]))
                }),
            ConfigKind::Secret => Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await?
                .map(|s| {
                    // (stringData is write-only: the API server merges it into data)
                    let data: Vec<(&str, &[u8])> = s
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
                        .collect();
                    (s.resource_version(), content_hash(&[&data]))
                }),
        };
        let Some((version, hash)) = read else {
            return Ok(None);
        };
        let mut state = self.state.lock().unwrap();
        if let Some(version) = version {
            state.hashes.insert(key.clone(), (version, hash.clone()));
        }
        Ok(Some(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_changes_settles_after_a_quiet_spell_or_the_cap() {
        let mut state = State::default();
        let key = (ConfigKind::ConfigMap, "ns".to_string(), "app".to_string());
        let t0 = Instant::now();
        assert_eq!(state.settling(&key, t0), None, "never changed");
        // Ten edits in 2.4 s: settled 5 s after the last one.
        for i in 0..10 {
            state.changed(&key, t0 + Duration::from_millis(i * 266));
        }
        let last = t0 + Duration::from_millis(9 * 266);
        assert_eq!(
            state.settling(&key, last + Duration::from_secs(1)),
            Some(Duration::from_secs(4))
        );
        assert_eq!(state.settling(&key, last + CONFIG_SETTLE), None);
        // Edits every 4 s without end: settled 30 s after the first one of the stream.
        let mut state = State::default();
        let mut t = t0;
        while t < t0 + Duration::from_secs(40) {
            state.changed(&key, t);
            t += Duration::from_secs(4);
        }
        assert!(state.settling(&key, t0 + Duration::from_secs(29)).is_some());
        let mut state = State::default();
        for s in (0..30).step_by(4) {
            state.changed(&key, t0 + Duration::from_secs(s));
        }
        assert_eq!(state.settling(&key, t0 + Duration::from_secs(30)), None);
        // The next change starts a new burst: at most one rollout per 30 s.
        state.changed(&key, t0 + Duration::from_secs(32));
        assert!(state.settling(&key, t0 + Duration::from_secs(33)).is_some());
    }

    fn meta(name: &str, version: &str) -> PartialObjectMeta<ConfigMap> {
        let mut m = PartialObjectMeta::<ConfigMap>::default();
        m.metadata.name = Some(name.into());
        m.metadata.namespace = Some("ns".into());
        m.metadata.resource_version = Some(version.into());
        m
    }

    fn cm_ref(name: &str) -> ConfigRef {
        ConfigRef {
            kind: ConfigKind::ConfigMap,
            name: name.into(),
            optional: false,
            field: "spec.env[0]".into(),
        }
    }

    #[test]
    fn users_follow_each_reconcile_and_go_with_the_bundle() {
        let t = ConfigTracker::new(false);
        t.register("ns", "web", &[cm_ref("a"), cm_ref("b")]);
        t.register("ns", "api", &[cm_ref("a")]);
        let names = |name: &str| -> Vec<String> {
            t.users_of(ConfigKind::ConfigMap, "ns", name)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names("a"), ["api", "web"]);
        t.register("ns", "web", &[cm_ref("b")]);
        assert_eq!(names("a"), ["api"]);
        assert_eq!(names("b"), ["web"]);
        t.forget("ns", "web");
        assert!(names("b").is_empty());
        let state = t.state.lock().unwrap();
        assert!(
            !state
                .uses
                .contains_key(&("ns".to_string(), "web".to_string()))
        );
    }

    #[test]
    fn a_relist_replaces_what_was_known() {
        let t = ConfigTracker::new(false);
        t.observe(
            ConfigKind::ConfigMap,
            &watcher::Event::Apply(meta("old", "1")),
        );
        t.observe::<ConfigMap>(ConfigKind::ConfigMap, &watcher::Event::Init);
        t.observe(
            ConfigKind::ConfigMap,
            &watcher::Event::InitApply(meta("new", "5")),
        );
        assert!(t.state.lock().unwrap().synced.is_empty());
        t.observe::<ConfigMap>(ConfigKind::ConfigMap, &watcher::Event::InitDone);
        let state = t.state.lock().unwrap();
        let key = |n: &str| (ConfigKind::ConfigMap, "ns".to_string(), n.to_string());
        assert_eq!(
            state.versions.get(&key("new")).map(String::as_str),
            Some("5")
        );
        assert!(!state.versions.contains_key(&key("old")));
        assert!(state.synced.contains(&ConfigKind::ConfigMap));
    }
}
