//! A watch's (re-)list as the caches take it in: the objects of the list are gathered apart
//! between `Init` and `InitDone` and replace the cached ones only when the list is done, so a
//! reconcile never reads a half-listed cache.

use std::collections::HashMap;
use std::hash::Hash;

use kube::runtime::watcher;

/// The objects of a list in progress, as `(key, value)`.
#[derive(Debug)]
pub struct Listing<K, V>(Option<HashMap<K, V>>);

impl<K, V> Default for Listing<K, V> {
    fn default() -> Self {
        Listing(None)
    }
}

impl<K: Eq + Hash, V> Listing<K, V> {
    /// Takes in one of a list's events (`Init`, `InitApply`, `InitDone`; others are ignored,
    /// as is an `InitApply` outside a list); `entry` makes an object's key and value. Returns
    /// the whole list when this event ended it.
    pub fn follow<T>(
        &mut self,
        event: &watcher::Event<T>,
        entry: impl FnOnce(&T) -> (K, V),
    ) -> Option<HashMap<K, V>> {
        match event {
            watcher::Event::Init => {
                self.0 = Some(HashMap::new());
                None
            }
            watcher::Event::InitApply(obj) => {
                if let Some(listing) = self.0.as_mut() {
                    let (k, v) = entry(obj);
                    listing.insert(k, v);
                }
                None
            }
            watcher::Event::InitDone => self.0.take(),
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_handed_over_whole_when_it_is_done() {
        let mut l = Listing::default();
        let entry = |n: &u32| (*n, n * 10);
        assert_eq!(l.follow(&watcher::Event::InitApply(9), entry), None);
        assert_eq!(l.follow(&watcher::Event::Init, entry), None);
        assert_eq!(l.follow(&watcher::Event::InitApply(1), entry), None);
        assert_eq!(l.follow(&watcher::Event::Apply(2), entry), None);
        assert_eq!(l.follow(&watcher::Event::InitApply(3), entry), None);
        let done = l.follow(&watcher::Event::InitDone, entry).unwrap();
        assert_eq!(done, HashMap::from([(1, 10), (3, 30)]));
        // A second InitDone without a list hands nothing over.
        assert_eq!(l.follow(&watcher::Event::InitDone, entry), None);
    }
}
