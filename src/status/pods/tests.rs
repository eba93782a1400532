use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;

fn pod(name: &str, hash: &str, created: &str, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": {"pod-template-hash": hash},
        },
        "spec": {"containers": [{"name": "app", "image": "example/app:1",
                                 "resources": {"limits": {"memory": "64Mi"}}}]},
        "status": status,
    }))
    .unwrap()
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({"containerStatuses": [{"name": "app", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}]})
}

fn crash_looping(exit: i32, reason: &str, message: &str, restarts: i32) -> Value {
    json!({"containerStatuses": [{"name": "app", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": restarts,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": exit, "reason": reason, "message": message}}}]})
}

const T1: &str = "2026-01-01T00:00:01Z";
const T2: &str = "2026-01-01T00:00:02Z";

#[test]
fn a_crash_loop_names_the_container_the_exit_code_and_the_last_words() {
    let p = diagnose(&[pod(
        "web-1",
        "a",
        T1,
        crash_looping(3, "Error", "cannot open config\n", 2),
    )])
    .unwrap();
    assert_eq!(p.reason, "CrashLoopBackOff");
    assert!(!p.permanent);
    assert!(
        p.message
            .contains("container app of pod web-1 keeps exiting with code 3"),
        "{}",
        p.message
    );
    assert!(p.message.contains("restarted 2 times"), "{}", p.message);
    assert!(
        p.message.ends_with("its last message: cannot open config"),
        "{}",
        p.message
    );
}

#[test]
fn an_oom_kill_names_the_limit_and_is_permanent() {
    let p = diagnose(&[pod(
        "web-1",
        "a",
        T1,
        crash_looping(137, "OOMKilled", "", 1),
    )])
    .unwrap();
    assert_eq!(p.reason, "OOMKilled");
    assert!(p.permanent);
    assert!(p.message.contains("memory limit of 64Mi"), "{}", p.message);
}

#[test]
fn a_missing_image_is_permanent_a_failing_pull_is_not() {
    let missing = "failed to pull and unpack image \"r/x:1\": not found";
    let p = diagnose(&[pod("web-1", "a", T1, waiting("ErrImagePull", missing))]).unwrap();
    assert_eq!(p.reason, "ImagePullBackOff");
    assert!(p.permanent);
    assert_eq!(
        p.message,
        format!("container app of pod web-1 cannot get its image example/app:1: {missing}")
    );
    // The back-off in between attempts quotes the failure: the same problem, word for word.
    let backoff = format!("Back-off pulling image \"r/x:1\": ErrImagePull: {missing}");
    let again = diagnose(&[pod("web-1", "a", T1, waiting("ImagePullBackOff", &backoff))]).unwrap();
    assert_eq!(again, p);
    let refused = "dial tcp 10.0.0.1:443: connect: connection refused";
    let p = diagnose(&[pod("web-1", "a", T1, waiting("ImagePullBackOff", refused))]).unwrap();
    assert_eq!(p.reason, "ImagePullBackOff");
    assert!(!p.permanent);
    let p = diagnose(&[pod(
        "web-1",
        "a",
        T1,
        waiting("CreateContainerConfigError", "configmap \"x\" not found"),
    )])
    .unwrap();
    assert_eq!(
        p.message,
        "container app of pod web-1 cannot be started (CreateContainerConfigError): configmap \"x\" not found"
    );
    assert!(!p.permanent, "the ConfigMap may be created later");
    let p = diagnose(&[pod("web-1", "a", T1, waiting("InvalidImageName", "bad"))]).unwrap();
    assert!(p.permanent);
}

#[test]
fn unschedulable_carries_the_schedulers_message() {
    let status = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": "0/9 nodes are available: 9 Insufficient cpu."}]});
    let p = diagnose(&[pod("web-1", "a", T1, status)]).unwrap();
    assert_eq!(p.reason, "Unschedulable");
    assert!(!p.permanent);
    assert!(
        p.message
            .ends_with("0/9 nodes are available: 9 Insufficient cpu."),
        "{}",
        p.message
    );
}

#[test]
fn only_the_newest_templates_pods_count() {
    // Old pods (template "a") crash; the fix's pods (template "b") are starting fine.
    let fine = json!({"containerStatuses": [{"name": "app", "image": "example/app:2", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"running": {}}}]});
    let pods = [
        pod("old-1", "a", T1, crash_looping(1, "Error", "", 4)),
        pod("new-1", "b", T2, fine.clone()),
    ];
    assert_eq!(diagnose(&pods), None);
    // And the other way round: the newest pods crash, the old ones are fine.
    let pods = [
        pod("old-1", "a", T1, fine),
        pod("new-1", "b", T2, crash_looping(1, "Error", "", 1)),
    ];
    assert!(diagnose(&pods).unwrap().message.contains("new-1"));
}

#[test]
fn the_most_telling_problem_wins_and_the_count_is_given() {
    let pods = [
        pod("web-1", "a", T1, crash_looping(1, "Error", "", 1)),
        pod("web-2", "a", T1, waiting("ErrImagePull", "not found")),
        pod(
            "web-3",
            "a",
            T2,
            json!({"containerStatuses": [{"name": "app", "image": "i", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        ),
    ];
    let p = diagnose(&pods).unwrap();
    assert_eq!(p.reason, "ImagePullBackOff");
    assert!(
        p.message.ends_with("(2 of 3 new pods affected)"),
        "{}",
        p.message
    );
}

#[test]
fn healthy_restarted_and_terminating_pods_are_no_problem() {
    let restarted_running = json!({"containerStatuses": [{"name": "app", "image": "i", "imageID": "",
        "ready": false, "restartCount": 1, "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 1}}}]});
    assert_eq!(diagnose(&[pod("web-1", "a", T1, restarted_running)]), None);
    let mut gone = pod("web-1", "a", T1, crash_looping(1, "Error", "", 3));
    gone.metadata.deletion_timestamp = gone.metadata.creation_timestamp.clone();
    assert_eq!(diagnose(&[gone]), None);
    assert_eq!(diagnose(&[]), None);
}

#[test]
fn long_last_words_are_cut_at_a_character_boundary() {
    let words = "é".repeat(400);
    let p = diagnose(&[pod("web-1", "a", T1, crash_looping(1, "Error", &words, 1))]).unwrap();
    let last = p.message.rsplit("its last message: ").next().unwrap();
    assert!(
        last.starts_with('…') && last.len() <= 300 + '…'.len_utf8(),
        "{}",
        last.len()
    );
}

#[test]
fn init_containers_and_sidecars_are_named_as_such() {
    let with_init = |status: Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "creationTimestamp": T1,
                         "labels": {"pod-template-hash": "a"}},
            "spec": {
                "initContainers": [
                    {"name": "proxy", "image": "proxy:1", "restartPolicy": "Always",
                     "resources": {"limits": {"memory": "32Mi"}}},
                    {"name": "migrate", "image": "app:1"}
                ],
                "containers": [{"name": "app", "image": "app:1"}]
            },
            "status": status,
        }))
        .unwrap()
    };
    let failing = |name: &str, reason: &str| {
        json!({"initContainerStatuses": [{"name": name, "image": "x", "imageID": "", "ready": false,
            "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": reason}}}]})
    };
    let migrate = diagnose(&[with_init(failing("migrate", "Error"))]).unwrap();
    assert_eq!(migrate.reason, "CrashLoopBackOff");
    assert!(
        migrate
            .message
            .starts_with("init container migrate of pod web-1 keeps exiting with code 1"),
        "{}",
        migrate.message
    );
    let proxy = diagnose(&[with_init(failing("proxy", "OOMKilled"))]).unwrap();
    assert_eq!(proxy.reason, "OOMKilled");
    assert!(
        proxy.message.starts_with(
            "sidecar proxy of pod web-1 was killed for using more than its memory limit of 32Mi"
        ),
        "{}",
        proxy.message
    );
}
