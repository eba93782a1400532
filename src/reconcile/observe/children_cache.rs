//! kubundle's cache of its own children: what a reconcile reads instead of asking the API server.
//!
//! Every kind of child is watched (objects labelled `app.kubernetes.io/managed-by=kubundle`), and
//! each watch event updates this cache before it triggers the owner's reconcile, so a reconcile
//! sees at least the state that triggered it. kubundle's own writes go into the cache too, with
//! the object the API server answered: a reconcile that runs before the watch has delivered
//! kubundle's last write still sees that write, and does not write it again. Of two versions of
//! an object, the newer resourceVersion wins (resourceVersions of one resource are comparable
//! integers, Kubernetes KEP-5504, stable since v1.35).
//!
//! What is kept, per child: the whole object as compact JSON, without `metadata.managedFields`
//! and `kubectl.kubernetes.io/last-applied-configuration` (together often larger than the rest),
//! compressed (LZ4) against a dictionary of a typical Deployment and Service
//! (`cache_dictionary.json`), and the one fact kubundle needs from the managed fields: whether
//! its own apply owns a Deployment's `spec.replicas` (for the autoscaler handover). Drift
//! detection compares the rendering with this JSON exactly as it compared it with a fresh GET;
//! readiness parses the status from it. A kubundle Deployment is about 2 KiB of JSON and a
//! Service 1 KiB; compressed, a few hundred bytes each (the dictionary holds their keys, the
//! server's defaults and the usual status wording).
//!
//! What is not in the cache: objects without kubundle's label (a foreign object of a child's
//! name). A child missing from the cache is therefore created with a precondition that it does
//! not exist (see [`MUST_NOT_EXIST`]), never applied blindly.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use tokio::sync::Notify;

use super::listing::Listing;
use super::slim::slim_metadata;
use crate::render::{ChildKind, FIELD_MANAGER};

/// A resourceVersion no stored object has (etcd's first write is revision 2): applied as a
/// precondition, it makes server-side apply create the object if it is absent and refuse (409
/// Conflict) if an object of that name exists. The API server wipes the resourceVersion of an
/// object it creates through apply (k8s.io/apiserver, registry Store.Update), so the created
/// object is exactly the rendering.
pub const MUST_NOT_EXIST: &str = "1";

/// What cached objects are compressed against: a kubundle Deployment and Service as the API
/// server returns them (managed fields left out), so that what most children share with them
/// (keys, defaults, status wording) costs a few bytes each.
const DICTIONARY: &[u8] = include_bytes!("cache_dictionary.json");

/// One cached child.
#[derive(Debug)]
pub struct Cached {
    pub uid: String,
    pub resource_version: String,
    /// kubundle's own apply (field manager `kubundle`) owns `spec.replicas`.
    pub owns_replicas: bool,
    /// The object as compact JSON, without managed fields, compressed against [`DICTIONARY`].
    json: Box<[u8]>,
}

impl Cached {
    /// The cached form of an object of `kind` the API server returned.
    pub fn new(kind: ChildKind, obj: &DynamicObject) -> Cached {
        let owns_replicas = kubundle_owns_replicas(obj);
        let mut slim = obj.clone();
        // The items of a list come without their apiVersion and kind.
        if slim.types.is_none() {
            let ar = kind.api_resource();
            slim.types = Some(kube::api::TypeMeta {
                api_version: ar.api_version,
                kind: ar.kind,
            });
        }
        slim_metadata(&mut slim.metadata);
        Cached {
            uid: obj.uid().unwrap_or_default(),
            resource_version: obj.resource_version().unwrap_or_default(),
            owns_replicas,
            json: lz4_flex::block::compress_prepend_size_with_dict(
                &serde_json::to_vec(&slim).unwrap_or_default(),
                DICTIONARY,
            )
            .into_boxed_slice(),
        }
    }

    /// The object (without managed fields).
    pub fn object(&self) -> DynamicObject {
        let json = lz4_flex::block::decompress_size_prepended_with_dict(&self.json, DICTIONARY)
            .expect("the cache holds what it compressed");
        serde_json::from_slice(&json).expect("the cache holds what it serialized")
    }

    /// Bytes this entry holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.json.len() + self.uid.len() + self.resource_version.len()
    }
}

/// Version `a` is later than `b` (of the same object, or of one of the same name made after it).
/// Versions that do not compare are not later: the latest arrival wins.
fn is_later(a: &str, b: &str) -> bool {
    compare_versions(a, b) == Some(Ordering::Greater)
}

/// Compares two resourceVersions of one resource; None if either is not an integer (then the
/// later arrival is taken as the newer).
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    Some(a.parse::<u64>().ok()?.cmp(&b.parse::<u64>().ok()?))
}

type Key = (String, String);

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

/// The cache of one kind.
#[derive(Default)]
struct KindCache {
    objects: RwLock<HashMap<Key, Arc<Cached>>>,
    /// The objects of a (re-)list in progress.
    listing: Mutex<Listing<Key, Arc<Cached>>>,
    synced: AtomicBool,
}

impl KindCache {
    /// Keeps `new` unless the entry already holds a newer version of the object.
    fn upsert(map: &mut HashMap<Key, Arc<Cached>>, k: Key, new: Arc<Cached>) {
        match map.get(&k) {
            Some(old) if is_later(&old.resource_version, &new.resource_version) => {}
            _ => {
                map.insert(k, new);
            }
        }
    }
}

/// The children caches of every kind kubundle makes.
pub struct ChildCache {
    kinds: HashMap<ChildKind, KindCache>,
    synced: Notify,
    /// Until when reconciles wait for the first lists (set by the first wait).
    sync_deadline: OnceLock<tokio::time::Instant>,
}

impl Default for ChildCache {
    fn default() -> Self {
        ChildCache {
            kinds: ChildKind::ALL
                .into_iter()
                .map(|k| (k, KindCache::default()))
                .collect(),
            synced: Notify::new(),
            sync_deadline: OnceLock::new(),
        }
    }
}

impl ChildCache {
    fn kind(&self, kind: ChildKind) -> &KindCache {
        &self.kinds[&kind]
    }

    /// The cached child `name` of `kind` in `ns`.
    pub fn get(&self, kind: ChildKind, ns: &str, name: &str) -> Option<Arc<Cached>> {
        self.kind(kind)
            .objects
            .read()
            .unwrap()
            .get(&key(ns, name))
            .cloned()
    }

    /// Takes in a watch event of `kind`.
    pub fn observe(&self, kind: ChildKind, event: &watcher::Event<DynamicObject>) {
        let cache = self.kind(kind);
        let k = |o: &DynamicObject| key(&o.namespace().unwrap_or_default(), &o.name_any());
        match event {
            watcher::Event::Apply(obj) => {
                let mut objects = cache.objects.write().unwrap();
                KindCache::upsert(&mut objects, k(obj), Arc::new(Cached::new(kind, obj)));
            }
            watcher::Event::Delete(obj) => {
                let mut objects = cache.objects.write().unwrap();
                // Not an object of the same name made since.
                let deleted = obj.resource_version().unwrap_or_default();
                if objects
                    .get(&k(obj))
                    .is_some_and(|c| !is_later(&c.resource_version, &deleted))
                {
                    objects.remove(&k(obj));
                }
            }
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {
                let listing = cache
                    .listing
                    .lock()
                    .unwrap()
                    .follow(event, |obj| (k(obj), Arc::new(Cached::new(kind, obj))));
                let Some(mut listed) = listing else {
                    return;
                };
                let mut objects = cache.objects.write().unwrap();
                // What the list did not return is gone (or made after the list, and then the
                // watch brings it); of what it returned, kubundle's own newer writes stay.
                for (k, old) in objects.drain() {
                    if listed.contains_key(&k) {
                        KindCache::upsert(&mut listed, k, old);
                    }
                }
                *objects = listed;
                drop(objects);
                cache.synced.store(true, AtomicOrdering::Release);
                self.synced.notify_waiters();
            }
        }
    }

    /// Takes in the object the API server answered to kubundle's own write.
    pub fn record(&self, kind: ChildKind, obj: &DynamicObject) {
        let mut objects = self.kind(kind).objects.write().unwrap();
        let k = key(&obj.namespace().unwrap_or_default(), &obj.name_any());
        KindCache::upsert(&mut objects, k, Arc::new(Cached::new(kind, obj)));
    }

    /// Forgets a child kubundle deleted (the object with that UID only).
    pub fn forget(&self, kind: ChildKind, ns: &str, name: &str, uid: &str) {
        let mut objects = self.kind(kind).objects.write().unwrap();
        if objects.get(&key(ns, name)).is_some_and(|c| c.uid == uid) {
            objects.remove(&key(ns, name));
        }
    }

    /// What the cache holds of AppBundle `ns/name`'s children, for `/debug/cache` (diagnosis: is
    /// kubundle's view behind the API server's?): per kind, the resourceVersion, the generation,
    /// and for a Deployment its spec and status replica counts. Nothing of the pod template.
    pub fn describe(&self, ns: &str, name: &str) -> serde_json::Value {
        let kinds = ChildKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let cached = self.get(kind, ns, name)?;
                let obj = cached.object();
                let mut entry = serde_json::json!({
                    "resourceVersion": cached.resource_version,
                    "generation": obj.metadata.generation,
                });
                if kind == ChildKind::Deployment {
                    entry["specReplicas"] = obj.data["spec"]["replicas"].clone();
                    for field in [
                        "observedGeneration",
                        "replicas",
                        "updatedReplicas",
                        "readyReplicas",
                        "availableReplicas",
                    ] {
                        entry[field] = obj.data["status"][field].clone();
                    }
                }
                Some((kind.name().to_string(), entry))
            })
            .collect::<serde_json::Map<_, _>>();
        serde_json::Value::Object(kinds)
    }

    /// Marks a kind that is not watched (its API is not served) as synced: it has no objects.
    pub fn mark_unwatched(&self, kind: ChildKind) {
        self.kind(kind).synced.store(true, AtomicOrdering::Release);
        self.synced.notify_waiters();
    }

    /// The first list of `kind` is in.
    pub fn is_kind_synced(&self, kind: ChildKind) -> bool {
        self.kind(kind).synced.load(AtomicOrdering::Acquire)
    }

    /// Every kind's first list is in.
    pub fn is_synced(&self) -> bool {
        self.kinds
            .values()
            .all(|c| c.synced.load(AtomicOrdering::Acquire))
    }

    /// Waits until [`ChildCache::is_synced`] (before that, a child missing from the cache may
    /// exist), but not past `limit` after the first call: a kind whose watch cannot list (RBAC
    /// taken away, say) must not hold every reconcile back; its children are then read with GETs.
    pub async fn wait_synced(&self, limit: Duration) {
        let deadline = *self
            .sync_deadline
            .get_or_init(|| tokio::time::Instant::now() + limit);
        let synced = async {
            loop {
                let notified = self.synced.notified();
                if self.is_synced() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout_at(deadline, synced).await;
    }
}

/// Whether kubundle's own apply owns `spec.replicas` of `live` (then a rendering without the
/// field would remove it: see reconcile/children/handover.rs).
pub fn kubundle_owns_replicas(live: &DynamicObject) -> bool {
    live.managed_fields().iter().any(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .is_some_and(|spec| spec.get("f:replicas").is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::observe::slim::LAST_APPLIED;
    use kube::api::ApiResource;

    fn object(name: &str, uid: &str, rv: &str, image: &str) -> DynamicObject {
        let ar = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "apps",
            "v1",
            "Deployment",
        ));
        let mut o = DynamicObject::new(name, &ar)
            .within("ns")
            .data(serde_json::json!({"spec": {"image": image}}));
        o.metadata.uid = Some(uid.into());
        o.metadata.resource_version = Some(rv.into());
        o.metadata.annotations = Some([(LAST_APPLIED.to_string(), "x".repeat(100))].into());
        o
    }

    fn image(c: &ChildCache, name: &str) -> Option<String> {
        c.get(ChildKind::Deployment, "ns", name)
            .map(|c| c.object().data["spec"]["image"].as_str().unwrap().into())
    }

    #[test]
    fn the_newer_version_wins_whichever_arrives_last() {
        let c = ChildCache::default();
        c.record(ChildKind::Deployment, &object("a", "u1", "20", "new"));
        // The watch delivers an older version after kubundle's write: kept out.
        c.observe(
            ChildKind::Deployment,
            &watcher::Event::Apply(object("a", "u1", "19", "old")),
        );
        assert_eq!(image(&c, "a").as_deref(), Some("new"));
        c.observe(
            ChildKind::Deployment,
            &watcher::Event::Apply(object("a", "u1", "21", "newer")),
        );
        assert_eq!(image(&c, "a").as_deref(), Some("newer"));
        // Version 100 vs 99: compared as numbers, not as strings.
        c.record(ChildKind::Deployment, &object("a", "u1", "100", "n100"));
        c.observe(
            ChildKind::Deployment,
            &watcher::Event::Apply(object("a", "u1", "99", "n99")),
        );
        assert_eq!(image(&c, "a").as_deref(), Some("n100"));
    }

    #[test]
    fn a_deletion_removes_only_the_object_deleted() {
        let c = ChildCache::default();
        c.record(ChildKind::Deployment, &object("a", "u2", "30", "second"));
        // A late deletion of an earlier object of the same name.
        c.observe(
            ChildKind::Deployment,
            &watcher::Event::Delete(object("a", "u1", "25", "first")),
        );
        assert_eq!(image(&c, "a").as_deref(), Some("second"));
        c.observe(
            ChildKind::Deployment,
            &watcher::Event::Delete(object("a", "u2", "31", "second")),
        );
        assert_eq!(image(&c, "a"), None);
        c.record(ChildKind::Deployment, &object("b", "u3", "40", "b"));
        c.forget(ChildKind::Deployment, "ns", "b", "other");
        assert!(image(&c, "b").is_some());
        c.forget(ChildKind::Deployment, "ns", "b", "u3");
        assert_eq!(image(&c, "b"), None);
    }

    #[test]
    fn a_relist_replaces_the_objects_but_keeps_newer_writes() {
        let c = ChildCache::default();
        assert!(!c.is_synced());
        c.observe(ChildKind::Deployment, &watcher::Event::Init);
        c.observe(
            ChildKind::Deployment,
            &watcher::Event::InitApply(object("a", "u1", "10", "listed")),
        );
        c.observe(ChildKind::Deployment, &watcher::Event::InitDone);
        assert_eq!(image(&c, "a").as_deref(), Some("listed"));
        assert!(!c.is_synced(), "the other kinds have not listed yet");
        for kind in ChildKind::ALL {
            if kind != ChildKind::Deployment {
                c.mark_unwatched(kind);
            }
        }
        assert!(c.is_synced());

        // Relist: "a" was written by kubundle after the list's snapshot, "b" was deleted.
        c.record(ChildKind::Deployment, &object("b", "u2", "11", "b"));
        c.observe(ChildKind::Deployment, &watcher::Event::Init);
        c.record(ChildKind::Deployment, &object("a", "u1", "13", "written"));
        c.observe(
            ChildKind::Deployment,
            &watcher::Event::InitApply(object("a", "u1", "12", "listed again")),
        );
        // Until the list is done, the old state is served.
        assert_eq!(image(&c, "b").as_deref(), Some("b"));
        c.observe(ChildKind::Deployment, &watcher::Event::InitDone);
        assert_eq!(image(&c, "a").as_deref(), Some("written"));
        assert_eq!(image(&c, "b"), None);
    }

    #[test]
    fn the_cache_drops_managed_fields_and_the_last_applied_annotation() {
        let mut o = object("a", "u1", "5", "x");
        o.metadata.managed_fields = Some(vec![Default::default(); 3]);
        o.types = None;
        let cached = Cached::new(ChildKind::Deployment, &o);
        let back = cached.object();
        assert!(back.metadata.managed_fields.is_none());
        assert!(!back.annotations().contains_key(LAST_APPLIED));
        assert_eq!(back.data["spec"]["image"], "x");
        let types = back
            .types
            .expect("apiVersion and kind, which list items lack");
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("apps/v1", "Deployment")
        );
        assert!(cached.heap_bytes() < 300, "{}", cached.heap_bytes());
    }

    #[test]
    fn a_typical_child_is_cached_in_a_few_hundred_bytes() {
        // A Deployment of another AppBundle, as the API server returns it.
        let text = std::str::from_utf8(DICTIONARY)
            .unwrap()
            .lines()
            .next()
            .unwrap();
        let json = text
            .replace("example", "frontend")
            .replace("nginx:1.27", "registry.example.com/shop/frontend:v5");
        let mut d: DynamicObject = serde_json::from_str(&json).unwrap();
        d.metadata.uid = Some("6a3e2f8e-0b7c-4d51-9c1e-3f0d2b8a7c55".into());
        let cached = Cached::new(ChildKind::Deployment, &d);
        assert!(json.len() > 1800);
        assert!(cached.heap_bytes() < 400, "{} bytes", cached.heap_bytes());
        let back = serde_json::to_value(cached.object()).unwrap();
        assert_eq!(back, serde_json::to_value(&d).unwrap());
    }

    #[tokio::test]
    async fn reconciles_wait_for_the_first_lists_until_one_deadline() {
        let c = ChildCache::default();
        let t = std::time::Instant::now();
        c.wait_synced(Duration::from_millis(200)).await;
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "waited for the lists"
        );
        let t = std::time::Instant::now();
        c.wait_synced(Duration::from_millis(200)).await;
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "past the deadline, a kind that cannot list holds no reconcile back"
        );
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(compare_versions("9", "10"), Some(Ordering::Less));
        assert_eq!(compare_versions("10", "10"), Some(Ordering::Equal));
        assert_eq!(compare_versions("x", "10"), None);
    }
}
