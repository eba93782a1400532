//! The operator under the soak: two replicas with leader election, as the chart runs it, each
//! under its own audited ServiceAccount and connected to the API server through the fault proxy.
//! A replica that exits (killed, or after losing its Lease) is started again a second later, as a
//! Deployment's pod would be.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::Mutex;

use crate::support::{Operator, audit};

pub const LEASE: &str = "kubundle-soak";

/// One sample of a replica's memory: seconds since the soak began, the replica, its pid, KiB.
pub type Rss = (u64, String, u32, u64);

/// One replica's slot: its identity, kubeconfig and the process running now.
struct Slot {
    name: String,
    kubeconfig: std::path::PathBuf,
    process: Option<Operator>,
    starts: usize,
}

#[derive(Clone)]
pub struct Replicas {
    slots: Arc<Mutex<Vec<Slot>>>,
    lease_ns: String,
    leases: Api<Lease>,
    /// RSS samples over the soak.
    pub rss: Arc<std::sync::Mutex<Vec<Rss>>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Replicas {
    fn args() -> Vec<String> {
        [
            "--leader-elect",
            &format!("--leader-election-lease={LEASE}"),
            "--log-format=json",
        ]
        .map(String::from)
        .to_vec()
    }

    fn env(&self, name: &str) -> Vec<(String, String)> {
        vec![
            ("POD_NAME".to_string(), name.to_string()),
            ("POD_NAMESPACE".to_string(), self.lease_ns.clone()),
        ]
    }

    /// Starts replicas `names`, each with its own audited identity through `proxy`.
    pub async fn start(
        client: &Client,
        lease_ns: &str,
        names: &[&str],
        proxy: &crate::support::toxiproxy::Toxiproxy,
    ) -> Replicas {
        let replicas = Replicas {
            slots: Arc::new(Mutex::new(Vec::new())),
            lease_ns: lease_ns.to_string(),
            leases: Api::namespaced(client.clone(), lease_ns),
            rss: Arc::default(),
            stopping: Arc::default(),
        };
        for name in names {
            let kubeconfig = proxy.through(&audit::identity(name));
            let process = Operator::start(&Self::args(), &replicas.env(name), &kubeconfig).await;
            replicas.slots.lock().await.push(Slot {
                name: name.to_string(),
                kubeconfig,
                process: Some(process),
                starts: 1,
            });
        }
        replicas
    }

    /// Restarts exited replicas (after a second), and samples RSS, until the process ends.
    pub fn supervise(&self, began: Instant) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_sample = Instant::now() - Duration::from_secs(60);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut slots = me.slots.lock().await;
                for slot in slots.iter_mut() {
                    let exited = match slot.process.as_mut() {
                        Some(p) => p.child.try_wait().ok().flatten().is_some(),
                        None => true,
                    };
                    if exited && !me.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        slot.process = None;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        // It exits at once while the API server cannot be reached: tried again
                        // on the next round, as a pod's restarts are.
                        match Operator::try_start(
                            &Self::args(),
                            &me.env(&slot.name),
                            &slot.kubeconfig,
                        )
                        .await
                        {
                            Ok(p) => {
                                slot.process = Some(p);
                                slot.starts += 1;
                            }
                            Err(e) => {
                                let first = e.lines().next().unwrap_or_default().to_string();
                                eprintln!("soak: replica {} did not start: {first}", slot.name);
                            }
                        }
                    }
                }
                if last_sample.elapsed() >= Duration::from_secs(10) {
                    last_sample = Instant::now();
                    let t = began.elapsed().as_secs();
                    for slot in slots.iter() {
                        if let Some(p) = &slot.process {
                            let pid = p.child.id();
                            if let Some(kib) = rss_kib(pid) {
                                me.rss
                                    .lock()
                                    .unwrap()
                                    .push((t, slot.name.clone(), pid, kib));
                            }
                        }
                    }
                }
            }
        })
    }

    /// The Lease holder now, if the API server answers.
    pub async fn leader(&self) -> Option<String> {
        self.leases
            .get_opt(LEASE)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec.and_then(|s| s.holder_identity))
    }

    /// The pid of replica `name`'s process, if it runs (not exited, waiting to be reaped).
    pub async fn pid(&self, name: &str) -> Option<i32> {
        let mut slots = self.slots.lock().await;
        let process = slots
            .iter_mut()
            .find(|s| s.name == name)
            .and_then(|s| s.process.as_mut())?;
        match process.child.try_wait() {
            Ok(None) => Some(process.child.id() as i32),
            _ => None,
        }
    }

    /// The leader's pid, waiting up to `timeout` for a leader whose process runs.
    pub async fn leader_pid(&self, timeout: Duration) -> Option<(String, i32)> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(name) = self.leader().await
                && let Some(pid) = self.pid(&name).await
            {
                return Some((name, pid));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// How many times each replica was started.
    pub async fn starts(&self) -> Vec<(String, usize)> {
        let slots = self.slots.lock().await;
        slots.iter().map(|s| (s.name.clone(), s.starts)).collect()
    }

    /// Stops every replica.
    pub async fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut slots = self.slots.lock().await;
        for slot in slots.iter_mut() {
            slot.process = None;
        }
    }
}

/// A process's resident set, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The memory report: each process's first, peak and last RSS; for those that lived past ten
/// minutes, RSS then and after; and the largest RSS of any replica in each 5 minutes of the soak.
pub fn rss_report(rss: &[Rss]) -> Vec<String> {
    let mib = |k: u64| k as f64 / 1024.0;
    let mut lines = Vec::new();
    let mut lives: BTreeMap<u32, Vec<&Rss>> = BTreeMap::new();
    for sample in rss {
        lives.entry(sample.2).or_default().push(sample);
    }
    for (pid, samples) in &lives {
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        let peak = samples.iter().map(|s| s.3).max().unwrap_or(0);
        lines.push(format!(
            "RSS of {} pid {pid} from {} s to {} s: first {:.1} MiB, peak {:.1}, last {:.1}",
            first.1,
            first.0,
            last.0,
            mib(first.3),
            mib(peak),
            mib(last.3)
        ));
    }
    for (pid, samples) in &lives {
        let born = samples[0].0;
        let Some(at_10) = samples.iter().find(|s| s.0 >= born + 600) else {
            continue;
        };
        let later_peak = samples.iter().filter(|s| s.0 >= at_10.0).map(|s| s.3).max();
        let last = samples[samples.len() - 1];
        lines.push(format!(
            "RSS growth of {} pid {pid} after its first 10 minutes: {:.1} MiB at {} s, \
             peak after {:.1}, last {:.1} at {} s",
            at_10.1,
            mib(at_10.3),
            at_10.0,
            mib(later_peak.unwrap_or(0)),
            mib(last.3),
            last.0
        ));
    }
    let mut by_window: BTreeMap<u64, u64> = BTreeMap::new();
    for sample in rss {
        let w = by_window.entry(sample.0 / 300).or_default();
        *w = (*w).max(sample.3);
    }
    let series: Vec<String> = by_window
        .iter()
        .map(|(w, k)| format!("{}-{} min {:.1}", w * 5, w * 5 + 5, mib(*k)))
        .collect();
    lines.push(format!(
        "largest RSS (MiB) by 5 minutes: {}",
        series.join(", ")
    ));
    lines
}
