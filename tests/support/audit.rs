//! Who wrote what, and when, from the API server's own audit log.
//!
//! The local cluster's API server (deploy/local/cluster.sh) logs, at the Metadata level, every
//! write made by a ServiceAccount of namespace [`NAMESPACE`], and nothing else. A test that runs
//! operator replicas as such ServiceAccounts ([`identity`]) can then tell one replica's writes
//! from another's: the operator's own counters cannot be trusted to say what a process that
//! should not be writing did.

use std::path::PathBuf;
use std::time::SystemTime;

use super::{kubeconfig_path, kubectl, run, run_ok, token_kubeconfig};

/// The namespace whose ServiceAccounts the API server audits.
pub const NAMESPACE: &str = "kubundle-audited";

/// The audit log of the local cluster.
pub fn log_path() -> PathBuf {
    let state = std::env::var_os("KUBUNDLE_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo_root().join(".cluster"));
    state.join("logs/audit.log")
}

/// A kubeconfig for the audited ServiceAccount `name` (created if missing), allowed everything
/// (the identity is there to be told apart, not to test RBAC).
pub fn identity(name: &str) -> PathBuf {
    assert!(
        log_path().parent().unwrap().is_dir(),
        "no audit log directory at {}: is the local cluster up?",
        log_path().display()
    );
    let _ = run(kubectl(&["create", "namespace", NAMESPACE]));
    let _ = run(kubectl(&[
        "create",
        "serviceaccount",
        name,
        "-n",
        NAMESPACE,
    ]));
    let _ = run(kubectl(&[
        "create",
        "clusterrolebinding",
        "kubundle-audited",
        "--clusterrole=cluster-admin",
        &format!("--group=system:serviceaccounts:{NAMESPACE}"),
    ]));
    let token = run_ok(kubectl(&[
        "create",
        "token",
        name,
        "-n",
        NAMESPACE,
        "--duration=2h",
    ]));
    let _ = kubeconfig_path();
    token_kubeconfig(&token, &format!("kubeconfig-audited-{name}"))
}

/// The user name of the audited ServiceAccount `name`.
pub fn user(name: &str) -> String {
    format!("system:serviceaccount:{NAMESPACE}:{name}")
}

/// One write, as the API server recorded it.
#[derive(Debug, Clone)]
pub struct Write {
    /// The ServiceAccount's name (not the full user name).
    pub who: String,
    pub verb: String,
    /// `resource[/subresource] namespace/name`.
    pub what: String,
    pub resource: String,
    /// When the API server received it.
    pub at: SystemTime,
    /// Its HTTP status.
    pub code: i64,
}

/// Every audited write received at or after `since`.
///
/// The API server rotates its log at 100 MB (cluster.sh keeps ten old files, `audit-TIME.log`
/// beside `audit.log`): all of them are read, so a long test sees its whole run; a test that
/// must see from its start checks that with [`reach_back_to`].
pub fn writes_since(since: SystemTime) -> Vec<Write> {
    let prefix = format!("system:serviceaccount:{NAMESPACE}:");
    let mut writes: Vec<Write> = log_files()
        .iter()
        .filter_map(|f| std::fs::File::open(f).ok())
        .flat_map(|f| std::io::BufRead::lines(std::io::BufReader::new(f)).map_while(Result::ok))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .filter_map(|e| {
            let who = e["user"]["username"].as_str()?.strip_prefix(&prefix)?;
            let at = e["requestReceivedTimestamp"].as_str()?;
            let at: SystemTime = at.parse::<k8s_openapi::jiff::Timestamp>().ok()?.into();
            let r = &e["objectRef"];
            let resource = r["resource"].as_str().unwrap_or_default().to_string();
            let sub = r["subresource"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            Some(Write {
                who: who.to_string(),
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                what: format!(
                    "{resource}{sub} {}/{}",
                    r["namespace"].as_str().unwrap_or_default(),
                    r["name"].as_str().unwrap_or_default()
                ),
                resource,
                at,
                code: e["responseStatus"]["code"].as_i64().unwrap_or_default(),
            })
        })
        .filter(|w| w.at >= since)
        .collect();
    writes.sort_by_key(|w| w.at);
    writes
}

/// The audit log and its rotated files.
fn log_files() -> Vec<PathBuf> {
    let current = log_path();
    let mut files: Vec<PathBuf> = std::fs::read_dir(current.parent().unwrap())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    files.push(current);
    files
}

/// Whether `writes` (read from `at` on) reach back to `at`: the oldest is no later than `within`
/// after it (a test's first write comes that soon). False when rotation has dropped the start
/// of a run, which would leave a check of "every write" seeing only some.
pub fn reach_back_to(writes: &[Write], at: SystemTime, within: std::time::Duration) -> bool {
    writes.first().is_some_and(|w| w.at <= at + within)
}

/// Seconds (since the epoch) in which more than one audited identity made a write that took
/// effect (a 2xx answer), a Lease's aside: two replicas acting as leader at once. Each with the
/// writers and a few of the writes. (A write that failed changed nothing: one a frozen leader had
/// sent just before it froze reaches the API server when it wakes, and is refused or fails.)
pub fn split_brain_seconds(writes: &[Write]) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_second: BTreeMap<u64, (BTreeSet<&str>, Vec<&Write>)> = BTreeMap::new();
    let effective = writes
        .iter()
        .filter(|w| w.resource != "leases" && (200..300).contains(&w.code));
    for w in effective {
        let s =
            w.at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
        let entry = by_second.entry(s).or_default();
        entry.0.insert(&w.who);
        entry.1.push(w);
    }
    by_second
        .into_iter()
        .filter(|(_, (who, _))| who.len() > 1)
        .map(|(s, (who, ws))| {
            let sample: Vec<String> = ws
                .iter()
                .take(6)
                .map(|w| format!("{} {} {} ({})", w.who, w.verb, w.what, w.code))
                .collect();
            format!("second {s}: {who:?} wrote: {}", sample.join("; "))
        })
        .collect()
}
