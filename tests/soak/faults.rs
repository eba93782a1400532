//! The faults of the soak, each real: signals to the operator's processes, the control plane's
//! own processes restarted, Toxiproxy between the operator and the API server, and API Priority
//! and Fairness rejecting the operator's requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::model::Rng;
use super::replicas::Replicas;
use crate::support::toxiproxy::Toxiproxy;
use crate::support::{audit, kubectl, kubectl_stdin, repo_root, run, run_ok};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The leader killed with SIGKILL (a node lost, an OOM kill).
    Kill,
    /// The leader stopped with SIGSTOP for 30 s, then continued (a hung process or a paused VM):
    /// its Lease expires and the standby takes over while it is frozen.
    Freeze,
    /// The API server stopped and started again (a control-plane upgrade).
    ApiServerRestart,
    /// etcd stopped and started again.
    EtcdRestart,
    /// 300 ± 200 ms added to every packet both ways.
    Latency,
    /// The API server's answers limited to 32 KB/s.
    Bandwidth,
    /// Every connection reset (TCP RST) for a second.
    Reset,
    /// Every connection black-holed (data dropped both ways, nothing closed) for 10 s.
    BlackHole,
    /// API Priority and Fairness gives kubundle's identities the smallest share and rejects what
    /// does not fit (429) for 15 s, while changes come in a burst.
    Storm,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::Kill,
        Fault::Freeze,
        Fault::ApiServerRestart,
        Fault::EtcdRestart,
        Fault::Latency,
        Fault::Bandwidth,
        Fault::Reset,
        Fault::BlackHole,
        Fault::Storm,
    ];

    /// The class's word in KUBUNDLE_SOAK_CLASSES.
    pub fn key(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Freeze => "freeze",
            Fault::ApiServerRestart => "apiserver",
            Fault::EtcdRestart => "etcd",
            Fault::Latency => "latency",
            Fault::Bandwidth => "bandwidth",
            Fault::Reset => "reset",
            Fault::BlackHole => "blackhole",
            Fault::Storm => "storm",
        }
    }

    /// The classes named in `list` (comma-separated keys), or an error naming the unknown word.
    pub fn parse_list(list: &str) -> Result<Vec<Fault>, String> {
        let mut chosen = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let fault = Fault::ALL
                .into_iter()
                .find(|f| f.key() == word)
                .ok_or_else(|| {
                    let keys: Vec<&str> = Fault::ALL.iter().map(|f| f.key()).collect();
                    format!(
                        "unknown fault class {word:?}: the classes are {}",
                        keys.join(",")
                    )
                })?;
            if !chosen.contains(&fault) {
                chosen.push(fault);
            }
        }
        if chosen.is_empty() {
            return Err("no fault class named".into());
        }
        Ok(chosen)
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL of the leader",
            Fault::Freeze => "SIGSTOP of the leader for 30 s",
            Fault::ApiServerRestart => "API server restart",
            Fault::EtcdRestart => "etcd restart",
            Fault::Latency => "network latency",
            Fault::Bandwidth => "bandwidth limit",
            Fault::Reset => "connections reset",
            Fault::BlackHole => "connections black-holed",
            Fault::Storm => "429 storm (APF)",
        }
    }
}

/// The schedule: rounds of every chosen class in a seeded order, until both `at_least` faults and
/// `duration` are reached (a fault is never cut short).
pub fn next_fault(rng: &mut Rng, classes: &[Fault], round: &mut Vec<Fault>) -> Fault {
    if round.is_empty() {
        let mut all = classes.to_vec();
        // Fisher–Yates, seeded.
        for i in (1..all.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            all.swap(i, j);
        }
        *round = all;
    }
    round.pop().unwrap()
}

/// What the faults act on.
pub struct Targets<'a> {
    pub replicas: &'a Replicas,
    pub proxy: &'a Toxiproxy,
    /// Set while the change stream should burst (during a storm).
    pub burst: Arc<AtomicBool>,
}

/// Injects `fault` and returns once it is over, with a note of what was done.
pub async fn inject(fault: Fault, t: &Targets<'_>) -> String {
    match fault {
        Fault::Kill => match t.replicas.leader_pid(Duration::from_secs(30)).await {
            Some((name, pid)) if signal(pid, libc::SIGKILL) => format!("killed {name} (pid {pid})"),
            Some((name, pid)) => format!("{name} (pid {pid}) was gone before the SIGKILL"),
            None => "no leader to kill within 30 s".into(),
        },
        Fault::Freeze => match t.replicas.leader_pid(Duration::from_secs(30)).await {
            Some((name, pid)) if signal(pid, libc::SIGSTOP) => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let woke = signal(pid, libc::SIGCONT);
                let holder = t.replicas.leader().await;
                format!(
                    "froze {name} (pid {pid}) for 30 s{}; the Lease is now {holder:?}'s",
                    if woke { "" } else { " (gone when let go)" }
                )
            }
            Some((name, pid)) => format!("{name} (pid {pid}) was gone before the SIGSTOP"),
            None => "no leader to freeze within 30 s".into(),
        },
        Fault::ApiServerRestart | Fault::EtcdRestart => {
            let component = if fault == Fault::EtcdRestart {
                "etcd"
            } else {
                "kube-apiserver"
            };
            let started = Instant::now();
            tokio::task::spawn_blocking(move || {
                run_ok(
                    std::process::Command::new(repo_root().join("deploy/local/cluster.sh"))
                        .args(["restart", component, "--down", "5"]),
                )
            })
            .await
            .unwrap();
            format!("{component} down 5 s, back after {:?}", started.elapsed())
        }
        Fault::Latency => {
            let latency = json!({"latency": 300, "jitter": 200});
            t.proxy
                .add("latency-down", "latency", "downstream", latency.clone())
                .await;
            t.proxy
                .add("latency-up", "latency", "upstream", latency)
                .await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            t.proxy.remove("latency-down").await;
            t.proxy.remove("latency-up").await;
            "300 ± 200 ms each way for 10 s".into()
        }
        Fault::Bandwidth => {
            t.proxy
                .add("bandwidth", "bandwidth", "downstream", json!({"rate": 32}))
                .await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            t.proxy.remove("bandwidth").await;
            "32 KB/s from the API server for 10 s".into()
        }
        Fault::Reset => {
            t.proxy
                .add("reset", "reset_peer", "downstream", json!({"timeout": 0}))
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            t.proxy.remove("reset").await;
            "every connection reset for 1 s".into()
        }
        Fault::BlackHole => {
            t.proxy
                .add("hole-down", "timeout", "downstream", json!({"timeout": 0}))
                .await;
            t.proxy
                .add("hole-up", "timeout", "upstream", json!({"timeout": 0}))
                .await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            t.proxy.remove("hole-down").await;
            t.proxy.remove("hole-up").await;
            "every connection black-holed for 10 s".into()
        }
        Fault::Storm => {
            let before = rejected().await;
            let out = kubectl_stdin(&["apply", "-f", "-"], &storm_objects());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            t.burst.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(15)).await;
            t.burst.store(false, Ordering::Relaxed);
            let _ = run(kubectl(&[
                "delete",
                "flowschema,prioritylevelconfiguration",
                STORM,
                "--ignore-not-found",
            ]));
            let after = rejected().await;
            format!(
                "15 s with the smallest APF share, rejecting: {} requests rejected (429)",
                after.saturating_sub(before)
            )
        }
    }
}

/// Sends `sig` to `pid`; false when the process is gone (it may exit, or lose its Lease and
/// exit, at any time).
fn signal(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: a signal to a child process of this test.
    unsafe { libc::kill(pid, sig) == 0 }
}

const STORM: &str = "kubundle-soak-storm";

/// A priority level with the smallest share that rejects what does not fit, and a flow schema
/// sending every request of the audited ServiceAccounts (the operator's replicas) to it.
fn storm_objects() -> String {
    format!(
        "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: PriorityLevelConfiguration\n\
         metadata: {{name: {STORM}}}\nspec:\n  type: Limited\n  limited:\n    \
         nominalConcurrencyShares: 1\n    lendablePercent: 0\n    limitResponse: {{type: Reject}}\n\
         ---\napiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: FlowSchema\n\
         metadata: {{name: {STORM}}}\nspec:\n  priorityLevelConfiguration: {{name: {STORM}}}\n  \
         matchingPrecedence: 500\n  distinguisherMethod: {{type: ByUser}}\n  rules:\n  \
         - subjects:\n    - kind: ServiceAccount\n      serviceAccount: {{namespace: {ns}, name: '*'}}\n    \
         resourceRules:\n    - verbs: ['*']\n      apiGroups: ['*']\n      resources: ['*']\n      \
         namespaces: ['*']\n      clusterScope: true\n    nonResourceRules:\n    - verbs: ['*']\n      \
         nonResourceURLs: ['*']\n",
        ns = audit::NAMESPACE
    )
}

/// Requests the storm's priority level rejected so far, from the API server's metrics.
pub async fn rejected() -> u64 {
    let out = tokio::task::spawn_blocking(|| run(kubectl(&["get", "--raw", "/metrics"])))
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("apiserver_flowcontrol_rejected_requests_total"))
        .filter(|l| l.contains(&format!("priority_level=\"{STORM}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
