//! The children whose last apply changed nothing although they looked different: a value the API
//! server stores in a form drift detection does not know is applied once, not every reconcile.

use std::collections::HashMap;
use std::sync::Mutex;

#[cfg(doc)]
use super::drift::covers;

/// Most children [`Settled`] remembers (a few hundred bytes each).
const SETTLED_MAX: usize = 4096;

/// Objects whose last apply was a no-op although the comparison said they differ (a value the
/// API server stores in a form [`covers`] does not know): by child, the rendering hash and the
/// resourceVersion at that time. While both stay the same, the child is up to date: this bounds
/// any normalisation kubundle does not model to one no-op apply per change of the object.
#[derive(Default)]
pub struct Settled(Mutex<HashMap<String, (String, String)>>);

impl Settled {
    pub(super) fn key(kind: &str, ns: &str, name: &str) -> String {
        format!("{kind}/{ns}/{name}")
    }
    pub(super) fn is_settled(&self, key: &str, hash: &str, rv: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|(h, r)| h == hash && r == rv)
    }
    pub(super) fn record(&self, key: String, hash: String, rv: String) {
        let mut memo = self.0.lock().unwrap();
        // Entries of deleted AppBundles are not removed one by one: the memo is bounded instead.
        // Forgetting costs at most one no-op apply per child.
        if memo.len() >= SETTLED_MAX && !memo.contains_key(&key) {
            memo.clear();
        }
        memo.insert(key, (hash, rv));
    }
    pub(super) fn forget(&self, key: &str) {
        self.0.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_remembers_a_hash_and_resource_version_and_is_bounded() {
        let memo = Settled::default();
        memo.record("Deployment/ns/a".into(), "h1".into(), "10".into());
        assert!(memo.is_settled("Deployment/ns/a", "h1", "10"));
        assert!(
            !memo.is_settled("Deployment/ns/a", "h1", "11"),
            "the object changed since"
        );
        assert!(
            !memo.is_settled("Deployment/ns/a", "h2", "10"),
            "the rendering changed since"
        );
        memo.forget("Deployment/ns/a");
        assert!(!memo.is_settled("Deployment/ns/a", "h1", "10"));
        for i in 0..SETTLED_MAX + 10 {
            memo.record(format!("Deployment/ns/{i}"), "h".into(), "1".into());
        }
        assert!(memo.0.lock().unwrap().len() <= SETTLED_MAX);
    }
}
