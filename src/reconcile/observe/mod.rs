//! What the controller observes through its watches and reads: the AppBundles' cached form, the
//! children's cache, the ConfigMaps and Secrets the pods use, the watch streams' health and
//! relists, namespaces being deleted, and the CRD installed in the cluster.

pub mod cached_bundle;
pub mod children_cache;
pub mod config_tracker;
pub mod crd_skew;
pub mod listing;
pub mod namespaces;
pub mod relist;
pub mod slim;
pub mod watches;
