use super::*;
use crate::api::find_condition;
use k8s_openapi::api::apps::v1::DeploymentStatus;
use serde_json::json;

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap())
}

fn bundle(replicas: i32, service_type: &str) -> AppBundle {
    serde_json::from_value(json!({
        "apiVersion": "kubundle.dev/v1alpha1", "kind": "AppBundle",
        "metadata": {"name": "frontend", "namespace": "guestbook", "uid": "u1", "generation": 2},
        "spec": {"image": "gb-frontend:v5", "replicas": replicas,
                 "ports": [{"name": "http", "containerPort": 80}],
                 "service": {"type": service_type}},
    }))
    .unwrap()
}

fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
    let mut d: Deployment =
        serde_json::from_value(json!({"metadata": {"name": "frontend", "generation": generation}}))
            .unwrap();
    d.status = Some(serde_json::from_value::<DeploymentStatus>(status).unwrap());
    d
}

fn rolled_out(n: i32) -> Deployment {
    deployment(
        1,
        json!({"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n}),
    )
}

fn service(ingress_ip: Option<&str>) -> Service {
    let mut v = json!({"metadata": {"name": "frontend", "namespace": "guestbook"}, "spec": {"clusterIP": "10.96.0.10"}});
    if let Some(ip) = ingress_ip {
        v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    serde_json::from_value(v).unwrap()
}

fn cond<'a>(s: &'a AppBundleStatus, t: &str) -> (&'a str, &'a str) {
    let c = find_condition(&s.conditions, t).unwrap_or_else(|| panic!("no {t} condition"));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn first_sight_is_unknown_and_reconciling() {
    let b = bundle(3, "ClusterIP");
    let s = compute(&b, &Observed::default(), None, "cluster.local", &now());
    assert_eq!(cond(&s, READY), (UNKNOWN, reason::PENDING));
    assert_eq!(cond(&s, RECONCILING).0, TRUE);
    assert_eq!(cond(&s, STALLED).0, FALSE);
    assert_eq!(s.observed_generation, Some(2));
}

#[test]
fn ready_when_fully_rolled_out() {
    let b = bundle(3, "ClusterIP");
    let (d, svc) = (rolled_out(3), service(None));
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&d),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY), (TRUE, reason::AVAILABLE));
    assert_eq!(cond(&s, RECONCILING).0, FALSE);
    assert_eq!(cond(&s, STALLED).0, FALSE);
    assert_eq!(s.image.as_deref(), Some("gb-frontend:v5"));
    assert_eq!(s.replica_summary.as_deref(), Some("3/3"));
    let addr = s.address.unwrap();
    assert_eq!(
        addr.url.as_deref(),
        Some("http://frontend.guestbook.svc.cluster.local:80")
    );
    assert_eq!(addr.cluster_ip.as_deref(), Some("10.96.0.10"));
    assert_eq!(
        s.selector.as_deref(),
        Some(crate::render::selector_string("frontend").as_str())
    );
}

#[test]
fn old_pods_left_keep_it_reconciling() {
    let b = bundle(3, "ClusterIP");
    let d = deployment(
        2,
        json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
    );
    let svc = service(None);
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&d),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY), (FALSE, reason::ROLLING_OUT));
    assert_eq!(cond(&s, RECONCILING), (TRUE, reason::ROLLING_OUT));
    assert!(
        find_condition(&s.conditions, READY)
            .unwrap()
            .message
            .contains("1 old pods left")
    );
    // the image is not reported as rolled out until the rollout completes
    assert_eq!(s.image, None);
}

#[test]
fn unobserved_deployment_generation_is_not_ready() {
    let b = bundle(3, "ClusterIP");
    let d = deployment(
        3,
        json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
    );
    let svc = service(None);
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&d),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY), (FALSE, reason::DEPLOYMENT_PENDING));
}

#[test]
fn load_balancer_waits_for_an_address() {
    let b = bundle(1, "LoadBalancer");
    let d = rolled_out(1);
    let pending = service(None);
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&d),
            service: Some(&pending),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY), (FALSE, reason::WAITING_FOR_ADDRESS));
    assert_eq!(cond(&s, RECONCILING).0, TRUE);
    let with_ip = service(Some("203.0.113.7"));
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&d),
            service: Some(&with_ip),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY), (TRUE, reason::AVAILABLE));
    assert_eq!(s.address.unwrap().external, vec!["203.0.113.7".to_string()]);
}

#[test]
fn progress_deadline_keeps_the_servers_words_for_pods_it_could_not_create() {
    // Found by the soak's long form: a pod template naming a missing PriorityClass, Stalled an
    // hour later with only the Deployment's "has timed out progressing".
    let b = bundle(1, "ClusterIP");
    let d = deployment(
        1,
        json!({"observedGeneration": 1, "replicas": 0, "updatedReplicas": 0,
        "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"h24-548d95c49f\" has timed out progressing."},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": "pods \"h24-548d95c49f-\" is forbidden: no PriorityClass with name no-such-priority was found"}]}),
    );
    let svc = service(None);
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&d),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(
        cond(&s, STALLED),
        (TRUE, reason::PROGRESS_DEADLINE_EXCEEDED)
    );
    let message = s
        .conditions
        .iter()
        .find(|c| c.type_ == STALLED)
        .map(|c| c.message.clone())
        .unwrap();
    assert!(message.contains("has timed out progressing"), "{message}");
    assert!(
        message.contains("cannot create pods") && message.contains("no-such-priority"),
        "{message}"
    );
}

#[test]
fn progress_deadline_exceeded_is_stalled() {
    let b = bundle(1, "ClusterIP");
    let d = deployment(
        1,
        json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                        "message": "ReplicaSet \"frontend-abc\" has timed out progressing."}]}),
    );
    let svc = service(None);
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&d),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(
        cond(&s, STALLED),
        (TRUE, reason::PROGRESS_DEADLINE_EXCEEDED)
    );
    assert_eq!(cond(&s, READY).0, FALSE);
    // kstatus reads Reconciling=True before Stalled: it must be False for "Failed" to show
    assert_eq!(cond(&s, RECONCILING).0, FALSE);
}

#[test]
fn name_conflict_is_stalled_with_the_message() {
    let b = bundle(1, "ClusterIP");
    let blocker = Blocker::NameConflict {
        kind: "Deployment",
        name: "frontend".into(),
        message: "Deployment guestbook/frontend already exists".into(),
    };
    let s = compute(
        &b,
        &Observed::default(),
        Some(&blocker),
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, STALLED), (TRUE, reason::NAME_CONFLICT));
    assert!(
        find_condition(&s.conditions, STALLED)
            .unwrap()
            .message
            .contains("guestbook/frontend")
    );
    assert_eq!(cond(&s, READY).0, FALSE);
    assert_eq!(cond(&s, RECONCILING).0, FALSE);
}

#[test]
fn recomputing_the_same_facts_changes_nothing() {
    let mut b = bundle(3, "ClusterIP");
    let (d, svc) = (rolled_out(3), service(None));
    let observed = Observed {
        deployment: Some(&d),
        service: Some(&svc),
        ..Default::default()
    };
    let first = compute(&b, &observed, None, "cluster.local", &now());
    b.status = Some(first.clone());
    let later = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
    assert_eq!(
        compute(&b, &observed, None, "cluster.local", &later),
        first,
        "a no-op reconcile must not produce a status write"
    );
}

#[test]
fn old_pods_terminating_keep_ready_false() {
    let b = bundle(3, "ClusterIP");
    let d = deployment(
        1,
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
               "availableReplicas": 3, "terminatingReplicas": 2}),
    );
    let svc = service(None);
    let observed = Observed {
        deployment: Some(&d),
        service: Some(&svc),
        ..Default::default()
    };
    let s = compute(&b, &observed, None, "cluster.local", &now());
    assert_eq!(cond(&s, READY), (FALSE, reason::PODS_TERMINATING));
    assert_eq!(cond(&s, RECONCILING).0, TRUE);
    assert_eq!(cond(&s, STALLED).0, FALSE);
}

#[test]
fn pod_creation_failures_show_at_once_and_stall_when_permanent() {
    let b = bundle(1, "ClusterIP");
    let svc = service(None);
    let failing = |message: &str| {
        deployment(
            1,
            json!({"observedGeneration": 1, "replicas": 0, "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}]}),
        )
    };
    let quota = failing("pods \"frontend-x\" is forbidden: exceeded quota: compute");
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&quota),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY), (FALSE, reason::POD_CREATION_FAILED));
    assert_eq!(cond(&s, STALLED).0, FALSE, "quota can free up: not Stalled");
    assert!(
        find_condition(&s.conditions, READY)
            .unwrap()
            .message
            .contains("exceeded quota")
    );

    let invalid = failing("Pod \"frontend-x\" is invalid: spec.containers[0].image: Invalid value");
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&invalid),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, STALLED), (TRUE, reason::POD_CREATION_FAILED));
    assert_eq!(cond(&s, READY).0, FALSE);
}

#[test]
fn scaled_to_zero_is_ready_once_no_pod_is_left() {
    let b = bundle(0, "ClusterIP");
    let svc = service(None);
    let gone = deployment(1, json!({"observedGeneration": 1}));
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&gone),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY), (TRUE, reason::AVAILABLE));
    let leaving = deployment(1, json!({"observedGeneration": 1, "replicas": 1}));
    let s = compute(
        &b,
        &Observed {
            deployment: Some(&leaving),
            service: Some(&svc),
            ..Default::default()
        },
        None,
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY).0, FALSE);
}

#[test]
fn a_terminating_child_is_waited_for_not_stalled() {
    let b = bundle(1, "ClusterIP");
    let blocker = Blocker::Terminating {
        kind: "Deployment",
        name: "frontend".into(),
    };
    let s = compute(
        &b,
        &Observed::default(),
        Some(&blocker),
        "cluster.local",
        &now(),
    );
    assert_eq!(cond(&s, READY), (FALSE, reason::CHILD_TERMINATING));
    assert_eq!(cond(&s, RECONCILING).0, TRUE);
    assert_eq!(cond(&s, STALLED).0, FALSE);
}

#[test]
fn pod_problems_name_the_reason_and_stall_only_when_permanent() {
    use crate::status::pods::PodProblem;
    let b = bundle(2, "ClusterIP");
    let d = deployment(
        2,
        json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 0, "availableReplicas": 0}),
    );
    let svc = service(None);
    let compute_with = |p: &PodProblem| {
        compute(
            &b,
            &Observed {
                deployment: Some(&d),
                service: Some(&svc),
                pods: Some(p),
                ..Default::default()
            },
            None,
            "cluster.local",
            &now(),
        )
    };
    let crash = PodProblem {
        reason: "CrashLoopBackOff",
        message: "container app of pod web-1 keeps exiting with code 1".into(),
        permanent: false,
    };
    let s = compute_with(&crash);
    assert_eq!(cond(&s, READY), (FALSE, "CrashLoopBackOff"));
    assert_eq!(cond(&s, RECONCILING), (TRUE, "CrashLoopBackOff"));
    assert_eq!(cond(&s, STALLED).0, FALSE);
    let message = &find_condition(&s.conditions, READY).unwrap().message;
    assert!(
        message.starts_with("2 of 2 pods updated, 0 ready"),
        "{message}"
    );
    assert!(message.ends_with("keeps exiting with code 1"), "{message}");

    let missing = PodProblem {
        reason: "ErrImagePull",
        message: "container app of pod web-1 cannot get its image r/x:1".into(),
        permanent: true,
    };
    let s = compute_with(&missing);
    assert_eq!(cond(&s, READY), (FALSE, "ErrImagePull"));
    assert_eq!(cond(&s, RECONCILING).0, FALSE);
    assert_eq!(cond(&s, STALLED), (TRUE, "ErrImagePull"));
}

#[test]
fn a_rollout_is_stuck_after_a_while_without_progress() {
    use crate::status::pods::{Progress, STUCK_AFTER, progress};
    use std::time::Duration;
    let at = |secs: i64| Time(now().0 + k8s_openapi::jiff::SignedDuration::from_secs(secs));
    let d = deployment(
        2,
        json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1,
               "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                               "lastUpdateTime": now().0.to_string()}]}),
    );
    assert_eq!(
        progress(Some(&d), 2, &at(3)),
        Progress::Moving(Duration::from_secs(3))
    );
    assert_eq!(
        progress(Some(&d), 2, &at(STUCK_AFTER.as_secs() as i64)),
        Progress::Stuck
    );
    assert_eq!(
        progress(Some(&d), 1, &at(60)),
        Progress::Stuck,
        "one ready of one, but not updated"
    );
    assert_eq!(
        progress(Some(&rolled_out(2)), 2, &at(60)),
        Progress::Nothing
    );
    assert_eq!(progress(None, 2, &at(60)), Progress::Nothing);
    let unobserved = deployment(3, json!({"observedGeneration": 2}));
    assert_eq!(progress(Some(&unobserved), 2, &at(60)), Progress::Nothing);
}

#[test]
fn autoscaled_bundles_count_the_deployments_replicas_at_least_the_minimum() {
    let mut b = bundle(3, "ClusterIP");
    b.spec.autoscaling =
        Some(serde_json::from_value(json!({"minReplicas": 2, "maxReplicas": 5})).unwrap());
    let with = |replicas: i32| -> Deployment {
        serde_json::from_value(
            json!({"metadata": {"generation": 1}, "spec": {"replicas": replicas,
            "selector": {}, "template": {}}}),
        )
        .unwrap()
    };
    assert_eq!(
        desired_replicas(&b, Some(&with(4))),
        4,
        "the autoscaler's choice"
    );
    assert_eq!(
        desired_replicas(&b, Some(&with(1))),
        2,
        "not below the minimum"
    );
    assert_eq!(desired_replicas(&b, None), 2);
    b.spec.autoscaling = None;
    assert_eq!(
        desired_replicas(&b, Some(&with(4))),
        3,
        "spec.replicas without autoscaling"
    );
}

#[test]
fn a_rollouts_steps_are_progress_and_its_start_and_end_are_milestones() {
    let mut b = bundle(3, "ClusterIP");
    let svc = service(None);
    fn observe<'a>(d: Option<&'a Deployment>, svc: &'a Service) -> Observed<'a> {
        Observed {
            deployment: d,
            service: Some(svc),
            ..Observed::default()
        }
    }
    let step = |b: &mut AppBundle, d: Option<&Deployment>| {
        let s = compute(b, &observe(d, &svc), None, "cluster.local", &now());
        let milestone = is_milestone(&b.status.clone().unwrap_or_default(), &s);
        b.status = Some(s);
        milestone
    };
    let created = deployment(2, json!({}));
    let observed = deployment(
        2,
        json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3}),
    );
    let one_ready = deployment(
        2,
        json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1}),
    );
    let mut all_ready = rolled_out(3);
    all_ready.metadata.generation = Some(2);
    all_ready.status.as_mut().unwrap().observed_generation = Some(2);

    assert!(
        !step(&mut b, Some(&created)),
        "the first status is progress: observedGeneration 0 said 'in progress' already"
    );
    assert!(
        !step(&mut b, Some(&observed)),
        "Ready Unknown -> False is progress"
    );
    assert!(!step(&mut b, Some(&one_ready)), "1 of 3 ready is progress");
    assert!(step(&mut b, Some(&all_ready)), "Ready True is a milestone");
    assert!(!step(&mut b, Some(&all_ready)), "nothing changed");

    // A new spec: Ready leaves True.
    b.metadata.generation = Some(3);
    let mut rolling = deployment(
        3,
        json!({"observedGeneration": 3, "replicas": 4, "updatedReplicas": 1, "readyReplicas": 3, "availableReplicas": 3}),
    );
    assert!(
        step(&mut b, Some(&rolling)),
        "Ready leaving True is a milestone"
    );
    rolling.status.as_mut().unwrap().updated_replicas = Some(2);
    assert!(
        !step(&mut b, Some(&rolling)),
        "the rollout's steps are progress"
    );

    // Stalled, then stalled for another reason: each a milestone.
    let conflict = |message: &str| Blocker::NameConflict {
        kind: "Deployment",
        name: "frontend".into(),
        message: message.into(),
    };
    let old = b.status.clone().unwrap();
    let stalled = compute(
        &b,
        &observe(None, &svc),
        Some(&conflict("a")),
        "cluster.local",
        &now(),
    );
    assert!(is_milestone(&old, &stalled));
    let mut b2 = b.clone();
    b2.status = Some(stalled.clone());
    let refused = Blocker::WriteRefused {
        kind: "Deployment",
        message: "no".into(),
        retry: false,
    };
    let other = compute(
        &b2,
        &observe(None, &svc),
        Some(&refused),
        "cluster.local",
        &now(),
    );
    assert!(
        is_milestone(&stalled, &other),
        "another reason to be Stalled"
    );
    let same_reason = compute(
        &b2,
        &observe(None, &svc),
        Some(&conflict("b")),
        "cluster.local",
        &now(),
    );
    assert!(
        !is_milestone(&stalled, &same_reason),
        "the same reason, another message"
    );
    // A new revision recorded (a spec change that kept Ready True): written at once.
    let mut recorded = same_reason.clone();
    recorded.revision = Some(2);
    recorded.current_revision = Some("frontend-0123456789".into());
    assert!(is_milestone(&same_reason, &recorded));
}

#[test]
fn a_missing_configmap_is_the_reason_not_stalled_even_when_the_pods_run() {
    use crate::render::config::{ConfigKind, ConfigRef};
    let b = bundle(3, "ClusterIP");
    let d = rolled_out(3);
    let svc = service(None);
    let missing = [ConfigRef {
        kind: ConfigKind::ConfigMap,
        name: "settings".into(),
        optional: false,
        field: "spec.envFrom[0]".into(),
    }];
    let observed = Observed {
        deployment: Some(&d),
        service: Some(&svc),
        missing_config: &missing,
        ..Observed::default()
    };
    let s = compute(&b, &observed, None, "cluster.local", &now());
    let ready = find_condition(&s.conditions, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ConfigMissing")
    );
    assert_eq!(
        ready.message,
        "ConfigMap settings (used by spec.envFrom[0]) does not exist in the namespace: the pods cannot start without it; create it, or mark the reference optional"
    );
    assert_eq!(
        find_condition(&s.conditions, STALLED).unwrap().status,
        "False"
    );
    assert_eq!(
        find_condition(&s.conditions, RECONCILING).unwrap().status,
        "True"
    );
}

#[test]
fn secrets_that_cannot_be_followed_are_said_in_ready() {
    use crate::render::config::{ConfigKind, ConfigRef};
    let b = bundle(3, "ClusterIP");
    let d = rolled_out(3);
    let svc = service(None);
    let unfollowed = [ConfigRef {
        kind: ConfigKind::Secret,
        name: "api-token".into(),
        optional: false,
        field: "spec.env[0]".into(),
    }];
    let observed = Observed {
        deployment: Some(&d),
        service: Some(&svc),
        unfollowed_config: &unfollowed,
        ..Observed::default()
    };
    let s = compute(&b, &observed, None, "cluster.local", &now());
    let ready = find_condition(&s.conditions, READY).unwrap();
    assert_eq!(ready.status, "True");
    assert!(
        ready.message.ends_with(
            "; changes of Secret api-token roll nothing: kubundle may not read Secrets (chart value configRollouts.secrets)"
        ),
        "{}",
        ready.message
    );
}

#[test]
fn an_autoscalers_scale_keeps_ready_and_is_written_once_when_done() {
    let mut b = bundle(2, "ClusterIP");
    b.spec.replicas = None;
    b.spec.autoscaling =
        Some(serde_json::from_value(json!({"minReplicas": 2, "maxReplicas": 6})).unwrap());
    let svc = service(None);
    let at = |replicas: i32, status: serde_json::Value| -> Deployment {
        let mut d = deployment(1, status);
        d.spec = Some(
            serde_json::from_value(json!({"replicas": replicas, "selector": {}, "template": {}}))
                .unwrap(),
        );
        d
    };
    let observe = |b: &AppBundle, d: &Deployment| -> AppBundleStatus {
        let observed = Observed {
            deployment: Some(d),
            service: Some(&svc),
            ..Observed::default()
        };
        compute(b, &observed, None, "cluster.local", &now())
    };
    let settled = at(
        2,
        json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
    );
    let ready = observe(&b, &settled);
    assert_eq!(cond(&ready, READY), (TRUE, reason::AVAILABLE));
    b.status = Some(ready.clone());
    // The autoscaler asks for 6: pods are being added, all of the newest template.
    for (total, available) in [(2, 2), (6, 2), (6, 4), (6, 5)] {
        let scaling = at(
            6,
            json!({"observedGeneration": 1, "replicas": total, "updatedReplicas": total, "readyReplicas": available, "availableReplicas": available}),
        );
        assert_eq!(
            observe(&b, &scaling),
            ready,
            "{total} pods, {available} available: nothing to write"
        );
    }
    // Done: one write, Ready all along (so no RolledOut Event), the new counts.
    let done = observe(
        &b,
        &at(
            6,
            json!({"observedGeneration": 1, "replicas": 6, "updatedReplicas": 6, "readyReplicas": 6, "availableReplicas": 6}),
        ),
    );
    assert_eq!(cond(&done, READY), (TRUE, reason::AVAILABLE));
    assert_eq!(done.replica_summary.as_deref(), Some("6/6"));
    assert!(!is_milestone(&ready, &done));
    // Below the minimum, or with old pods (a rollout), it is no mere scale.
    let short = at(
        6,
        json!({"observedGeneration": 1, "replicas": 6, "updatedReplicas": 6, "readyReplicas": 1, "availableReplicas": 1}),
    );
    assert_eq!(cond(&observe(&b, &short), READY).0, FALSE);
    let rolling = at(
        6,
        json!({"observedGeneration": 1, "replicas": 6, "updatedReplicas": 3, "readyReplicas": 6, "availableReplicas": 6}),
    );
    assert_eq!(cond(&observe(&b, &rolling), READY).0, FALSE);
}

#[test]
fn the_autoscalers_measured_utilization_and_its_reason_not_to_scale_are_reported() {
    let mut b = bundle(2, "ClusterIP");
    b.spec.replicas = None;
    b.spec.autoscaling = Some(
        serde_json::from_value(
            json!({"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50}),
        )
        .unwrap(),
    );
    let svc = service(None);
    let d = rolled_out(2);
    let hpa = |status: serde_json::Value| -> HorizontalPodAutoscaler {
        serde_json::from_value(json!({"metadata": {"name": "frontend"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "frontend"},
            "maxReplicas": 4}, "status": status}))
        .unwrap()
    };
    let report = |h: &HorizontalPodAutoscaler| {
        let observed = Observed {
            deployment: Some(&d),
            service: Some(&svc),
            autoscaler: Some(h),
            ..Observed::default()
        };
        compute(&b, &observed, None, "cluster.local", &now())
            .autoscaling
            .unwrap()
    };
    let measured = report(&hpa(json!({"currentReplicas": 2, "desiredReplicas": 3,
        "currentMetrics": [
            {"type": "Resource", "resource": {"name": "memory", "current": {"averageUtilization": 31, "averageValue": "20Mi"}}},
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 182, "averageValue": "91m"}}}]})));
    assert_eq!(measured.cpu_utilization, Some(182));
    assert_eq!(measured.memory_utilization, Some(31));
    assert_eq!(measured.desired_replicas, Some(3));
    assert_eq!(measured.message, None);
    let blind = report(&hpa(json!({"currentReplicas": 2, "desiredReplicas": 2,
        "conditions": [{"type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric",
                        "message": "the HPA was unable to compute the replica count"}]})));
    assert_eq!(blind.cpu_utilization, None);
    assert_eq!(
        blind.message.as_deref(),
        Some("FailedGetResourceMetric: the HPA was unable to compute the replica count")
    );
}
