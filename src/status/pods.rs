//! Why an AppBundle's pods do not become ready: pure. From the pods of a rollout that has stopped
//! making progress, the one problem a person should read first, in the kubelet's and the
//! scheduler's own words (the reason names are the ones `kubectl get pods` shows).
//!
//! Only the newest pod template's pods count (the ones the rollout waits for): old pods that still
//! crash while a fix rolls out are not the AppBundle's problem any more.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Kubelet reasons for a container that cannot be created or started, which say so in their
/// message. Ordered by how much they tell a person (the first found wins).
const START_FAILURES: [&str; 7] = [
    "InvalidImageName",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "ErrImageNeverPull",
];

/// How long a rollout may go without progress before kubundle reads its pods to say why: pods that
/// start normally make the Deployment report progress well within it, so healthy rollouts cost no
/// pod reads; a pod that fails is named in the status within about this long plus [`RECHECK`].
pub const STUCK_AFTER: Duration = Duration::from_secs(8);
/// How often the pods of a stuck rollout are read again (their problem may change or clear, and a
/// crash loop does not change the Deployment, so no watch event would say so).
pub const RECHECK: Duration = Duration::from_secs(10);

/// Where a Deployment's rollout stands, for deciding whether to read its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing to diagnose: complete, not observed yet, or no Deployment.
    Nothing,
    /// In progress, the last progress `0` ago (less than [`STUCK_AFTER`]).
    Moving(Duration),
    /// No progress for [`STUCK_AFTER`] or more, or past the progress deadline: read the pods.
    Stuck,
}

/// Where `d`'s rollout to `desired` ready pods stands at `now`.
pub fn progress(d: Option<&Deployment>, desired: i32, now: &Time) -> Progress {
    let Some(d) = d else { return Progress::Nothing };
    let Some(status) = d.status.as_ref() else {
        return Progress::Nothing;
    };
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Progress::Nothing;
    }
    let complete = status.updated_replicas.unwrap_or(0) == desired
        && status.ready_replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired;
    if complete || desired == 0 {
        return Progress::Nothing;
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return Progress::Stuck;
    }
    let last = progressing
        .and_then(|c| {
            c.last_update_time
                .as_ref()
                .or(c.last_transition_time.as_ref())
        })
        .map(|t| t.0);
    let Some(last) = last else {
        return Progress::Stuck;
    };
    let since = now.0.duration_since(last);
    let since = Duration::try_from(since).unwrap_or_default();
    if since >= STUCK_AFTER {
        Progress::Stuck
    } else {
        Progress::Moving(since)
    }
}

/// One problem of one pod, as the status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    /// The condition reason: CrashLoopBackOff, OOMKilled, ErrImagePull, ImagePullBackOff,
    /// InvalidImageName, CreateContainerConfigError, ..., Unschedulable.
    pub reason: &'static str,
    /// What happened, naming the pod and the container, with the exit code, the image or the
    /// scheduler's message.
    pub message: String,
    /// It will not fix itself without a change to the AppBundle (or to the registry): the image
    /// does not exist or cannot be named, or the container exceeds its memory limit.
    pub permanent: bool,
}

/// Severity order: a start failure explains more than a crash, a crash more than a pod that waits
/// for a node.
fn rank(p: &PodProblem) -> usize {
    match p.reason {
        r if START_FAILURES.contains(&r) => 0,
        "OOMKilled" => 1,
        "CrashLoopBackOff" => 2,
        _ => 3,
    }
}

/// The problem to report for these pods (all of one AppBundle), if any of the newest template's
/// pods has one.
pub fn diagnose(pods: &[Pod]) -> Option<PodProblem> {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let hash = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .cloned()
    };
    let newest = live
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .map(|p| hash(p))?;
    let mut problems: Vec<(PodProblem, String)> = live
        .iter()
        .filter(|p| hash(p) == newest)
        .filter_map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            pod_problem(p, &name).map(|problem| (problem, name))
        })
        .collect();
    let affected = problems.len();
    let total = live.iter().filter(|p| hash(p) == newest).count();
    problems.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.1.cmp(&b.1)));
    let (mut first, _) = problems.into_iter().next()?;
    if total > 1 {
        first.message = format!(
            "{} ({affected} of {total} new pods affected)",
            first.message
        );
    }
    Some(first)
}

/// The problem of one pod, if it has one (`name`: how messages name it).
pub fn pod_problem(pod: &Pod, name: &str) -> Option<PodProblem> {
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    let mut found: Option<PodProblem> = None;
    for c in containers {
        if let Some(p) = container_problem(c, name, pod)
            && found.as_ref().is_none_or(|f| rank(&p) < rank(f))
        {
            found = Some(p);
        }
    }
    if found.is_some() {
        return found;
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    Some(PodProblem {
        reason: "Unschedulable",
        message: format!(
            "pod {name} cannot be scheduled: {}",
            unschedulable
                .message
                .as_deref()
                .unwrap_or("no node fits it")
        ),
        permanent: false,
    })
}

fn container_problem(c: &ContainerStatus, pod_name: &str, pod: &Pod) -> Option<PodProblem> {
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
    let waiting_reason = waiting
        .and_then(|w| w.reason.as_deref())
        .unwrap_or_default();
    let waiting_message = waiting
        .and_then(|w| w.message.as_deref())
        .unwrap_or_default();
    let who = format!(
        "{} {} of pod {pod_name}",
        container_role(pod, &c.name),
        c.name
    );

    if let Some(&waiting_reason) = START_FAILURES.iter().find(|r| **r == waiting_reason) {
        // The kubelet alternates between ErrImagePull (a pull failed) and ImagePullBackOff (waiting
        // to try again, quoting the failure): one reason and one message for both, so the status
        // does not flap with every attempt.
        let (waiting_reason, waiting_message) = match waiting_reason {
            "ErrImagePull" | "ImagePullBackOff" => (
                "ImagePullBackOff",
                waiting_message
                    .split_once("ErrImagePull: ")
                    .map_or(waiting_message, |(_, cause)| cause),
            ),
            other => (other, waiting_message),
        };
        let image_missing = waiting_message.contains("not found")
            || waiting_message.contains("manifest unknown")
            || waiting_message.contains("404");
        let permanent = waiting_reason == "InvalidImageName"
            || (waiting_reason.contains("Image") && image_missing);
        let what = if waiting_reason.contains("Image") {
            format!("{who} cannot get its image {}", c.image)
        } else {
            format!("{who} cannot be started ({waiting_reason})")
        };
        let detail = if waiting_message.is_empty() {
            String::new()
        } else {
            format!(": {waiting_message}")
        };
        return Some(PodProblem {
            reason: waiting_reason,
            message: format!("{what}{detail}"),
            permanent,
        });
    }

    // A container that ended badly and is (or will be) restarted: the last termination says why.
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let current = c.state.as_ref().and_then(|s| s.terminated.as_ref());
    // (A container that runs again after a restart is not reported: it may be fine now.)
    let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
    let crashed =
        waiting_reason == "CrashLoopBackOff" || (c.restart_count > 0 && !running && !c.ready);
    let ended = current
        .filter(|t| t.exit_code != 0)
        .or(last.filter(|_| crashed))?;
    if !crashed && current.is_none() {
        return None;
    }
    let exit = ended.exit_code;
    if ended.reason.as_deref() == Some("OOMKilled") {
        let limit = pod
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .find(|x| x.name == c.name)
            })
            .and_then(|x| x.resources.as_ref())
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .map(|q| format!(" of {}", q.0))
            .unwrap_or_default();
        return Some(PodProblem {
            reason: "OOMKilled",
            message: format!(
                "{who} was killed for using more than its memory limit{limit} (exit code {exit}); restarted {} times",
                c.restart_count
            ),
            permanent: true,
        });
    }
    let mut message = format!(
        "{who} keeps exiting with code {exit}{}; restarted {} times",
        ended
            .reason
            .as_deref()
            .filter(|r| *r != "Error")
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        c.restart_count
    );
    if let Some(last_words) = ended
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        message.push_str(&format!("; its last message: {}", tail(last_words, 300)));
    }
    Some(PodProblem {
        reason: "CrashLoopBackOff",
        message,
        permanent: false,
    })
}

/// What a container of `pod` is, for messages: a sidecar (an init container that restarts always),
/// an init container, or a container.
fn container_role(pod: &Pod, name: &str) -> &'static str {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|i| i.iter().find(|c| c.name == name));
    match init {
        Some(c) if c.restart_policy.as_deref() == Some("Always") => "sidecar",
        Some(_) => "init container",
        None => "container",
    }
}

/// The last `max` bytes of `text` (on a character boundary), marked when cut.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests;
