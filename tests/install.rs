//! The install paths on the local control plane: the Helm chart (lint, server-side dry run,
//! install/upgrade/uninstall), the plain manifests, the operator running with exactly the chart's
//! identity and arguments (cluster-wide and namespace-scoped), and two replicas with leader election.
//!
//! tests/run.sh runs these last, one at a time, after stopping its own operator: here the only
//! operator is the one a test starts, so what gets reconciled was reconciled with its identity.

mod support;

mod install {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::Api;
    use kubundle::api::AppBundle;

    use crate::support::*;

    const CHART: &str = "charts/kubundle";

    fn helm(args: &[&str]) -> Command {
        let mut cmd = Command::new("helm");
        cmd.args(args).current_dir(repo_root());
        cmd
    }

    fn ensure_namespace(name: &str) {
        let yaml = run_ok(kubectl(&[
            "create",
            "namespace",
            name,
            "--dry-run=client",
            "-o",
            "yaml",
        ]));
        let out = kubectl_stdin(&["apply", "-f", "-"], &yaml);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl auth can-i` for a ServiceAccount: true for "yes".
    fn can_i(sa: &str, args: &[&str]) -> bool {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let as_sa = format!("--as={sa}");
        all.push(&as_sa);
        let out = run(kubectl(&all));
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    }

    /// The chart's Deployment's container arguments and environment, as the pod would get them
    /// (downward-API values filled in as the kubelet would).
    async fn chart_process(
        namespace: &str,
        name: &str,
        pod_name: &str,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let client = client().await;
        let d: Deployment = Api::namespaced(client, namespace).get(name).await.unwrap();
        let container = d.spec.unwrap().template.spec.unwrap().containers.remove(0);
        let args = container.args.unwrap_or_default();
        let env = container
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let value = match e.value_from.and_then(|f| f.field_ref).map(|f| f.field_path) {
                    Some(path) if path == "metadata.name" => pod_name.to_string(),
                    Some(path) if path == "metadata.namespace" => namespace.to_string(),
                    Some(other) => panic!("unexpected fieldRef {other}"),
                    None => e.value.unwrap_or_default(),
                };
                (e.name, value)
            })
            .collect();
        (args, env)
    }

    /// A kubeconfig with a token of the chart's ServiceAccount (TokenRequest API).
    fn service_account_kubeconfig(namespace: &str, sa: &str) -> std::path::PathBuf {
        let token = run_ok(kubectl(&[
            "create",
            "token",
            sa,
            "-n",
            namespace,
            "--duration=1h",
        ]));
        token_kubeconfig(&token, &format!("kubeconfig-{namespace}-{sa}"))
    }

    async fn guestbook_becomes_ready(ns: &str) {
        let yaml =
            std::fs::read_to_string(repo_root().join("deploy/examples/guestbook.yaml")).unwrap();
        apply_yaml(ns, &yaml.replace("type: LoadBalancer", "type: ClusterIP"));
        run_ok(kubectl(&[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            "appbundle",
            "--all",
            "--timeout=60s",
        ]));
    }

    #[test]
    fn helm_lint_and_server_side_dry_run_of_every_rendered_object() {
        ensure_namespace("kubundle-dryrun");
        ensure_namespace("kubundle-dryrun-team");
        for values in [
            vec![],
            vec![
                "--set",
                "watchNamespace=kubundle-dryrun-team",
                "--set",
                "networkPolicy.enabled=true",
            ],
            vec![
                "--set",
                "replicaCount=1",
                "--set",
                "leaderElection.enabled=false",
                "--set",
                "logFormat=text",
                "--set",
                "configRollouts.secrets=true",
            ],
        ] {
            let mut lint = vec!["lint", CHART, "--strict"];
            lint.extend(&values);
            run_ok(helm(&lint));
            let mut template = vec![
                "template",
                // A release name of its own: cluster-scoped names (the ClusterRole) must not meet
                // the release another test installs.
                "kubundle-dryrun",
                CHART,
                "-n",
                "kubundle-dryrun",
                "--include-crds",
            ];
            template.extend(&values);
            let rendered = run_ok(helm(&template));
            let out = kubectl_stdin(
                &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                &rendered,
            );
            assert!(
                out.status.success(),
                "{values:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // configRollouts.secrets grants reading Secrets and tells the operator to follow them; by
        // default neither.
        for (secrets, expected) in [("false", false), ("true", true)] {
            let rendered = run_ok(helm(&[
                "template",
                "kubundle",
                CHART,
                "--set",
                &format!("configRollouts.secrets={secrets}"),
            ]));
            assert_eq!(
                rendered.contains("- --follow-secrets"),
                expected,
                "{secrets}"
            );
            assert_eq!(
                rendered.contains("resources: [secrets]"),
                expected,
                "{secrets}"
            );
        }
        // The monitoring objects: linted and rendered here; the real CRDs validate them, and a real
        // Prometheus scrapes and evaluates them, in tests/real_metrics.rs.
        let monitoring = [
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "prometheusRule.enabled=true",
        ];
        run_ok(helm(
            &[&["lint", CHART, "--strict"][..], &monitoring].concat(),
        ));
        let rendered = run_ok(helm(
            &[&["template", "kubundle", CHART][..], &monitoring].concat(),
        ));
        assert!(
            rendered.contains("kind: ServiceMonitor")
                && rendered.contains("alert: KubundleAppBundlesNotReady")
        );
        // The schema refuses nonsense values.
        let out = run(helm(&[
            "template",
            "kubundle",
            CHART,
            "--set",
            "logFormat=xml",
        ]));
        assert!(!out.status.success());
        // Several replicas without leader election would all reconcile: refused.
        let out = run(helm(&[
            "template",
            "kubundle",
            CHART,
            "--set",
            "leaderElection.enabled=false",
        ]));
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs leaderElection.enabled"));

        // The plain manifests (rendered from the chart) install with kubectl. A server-side dry
        // run does not create the Namespace the file starts with, so it must exist already.
        ensure_namespace("kubundle-system");
        let out = run(kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "deploy/kubectl/kubundle.yaml",
        ])
        .current_dir(repo_root()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    async fn chart_installs_upgrades_and_uninstalls() {
        let client = client().await;
        let ns = "kubundle-lifecycle";
        run_ok(helm(&[
            "install",
            "kb",
            CHART,
            "-n",
            ns,
            "--create-namespace",
            "--wait",
            "--timeout=2m",
        ]));
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let d = deployments.get("kb-kubundle").await.unwrap();
        assert_eq!(d.status.unwrap().available_replicas, Some(2));

        // AppBundles are in Kubernetes' view and edit roles (aggregated): a namespace's viewer
        // reads them and cannot change them, its editor can.
        let team = create_namespace(&client, "team").await;
        for (who, role) in [("viewer", "view"), ("editor", "edit")] {
            run_ok(kubectl(&["create", "serviceaccount", who, "-n", &team]));
            run_ok(kubectl(&[
                "create",
                "rolebinding",
                who,
                "-n",
                &team,
                &format!("--clusterrole={role}"),
                &format!("--serviceaccount={team}:{who}"),
            ]));
        }
        let viewer = format!("system:serviceaccount:{team}:viewer");
        let editor = format!("system:serviceaccount:{team}:editor");
        eventually(Duration::from_secs(30), "the roles aggregated", || async {
            let checks = [
                can_i(&viewer, &["list", "appbundles.kubundle.dev", "-n", &team]),
                can_i(
                    &viewer,
                    &[
                        "get",
                        "appbundles.kubundle.dev",
                        "--subresource=status",
                        "-n",
                        &team,
                    ],
                ),
                !can_i(&viewer, &["patch", "appbundles.kubundle.dev", "-n", &team]),
                can_i(&editor, &["create", "appbundles.kubundle.dev", "-n", &team]),
                can_i(
                    &editor,
                    &[
                        "patch",
                        "appbundles.kubundle.dev",
                        "--subresource=scale",
                        "-n",
                        &team,
                    ],
                ),
                !can_i(&editor, &["list", "appbundles.kubundle.dev", "-A"]),
            ];
            if checks.iter().all(|ok| *ok) {
                Ok(())
            } else {
                Err(format!("{checks:?}"))
            }
        })
        .await;
        delete_namespace(&client, &team).await;

        run_ok(helm(&[
            "upgrade",
            "kb",
            CHART,
            "-n",
            ns,
            "--set",
            "concurrency=8",
            "--set",
            "logFormat=text",
            "--wait",
            "--timeout=2m",
        ]));
        let d = deployments.get("kb-kubundle").await.unwrap();
        let args = d.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert!(
            args.contains(&"--concurrency=8".to_string())
                && args.contains(&"--log-format=text".to_string()),
            "{args:?}"
        );
        let history = run_ok(helm(&["history", "kb", "-n", ns]));
        assert!(history.lines().count() >= 3, "{history}");

        run_ok(helm(&["uninstall", "kb", "-n", ns, "--wait"]));
        assert!(deployments.get_opt("kb-kubundle").await.unwrap().is_none());
        let view = format!("kb-kubundle-{ns}-view");
        let edit = format!("kb-kubundle-{ns}-edit");
        for role in ["kb-kubundle", view.as_str(), edit.as_str()] {
            let out = run(kubectl(&["get", "clusterrole", role]));
            assert!(
                !out.status.success(),
                "ClusterRole {role} outlived the release"
            );
        }
        // Helm never deletes CRDs from crds/: AppBundles (and so the applications) survive an uninstall.
        run_ok(kubectl(&["get", "crd", "appbundles.kubundle.dev"]));
        delete_namespace(&client, ns).await;
    }

    #[tokio::test]
    async fn operator_runs_with_the_charts_cluster_wide_identity() {
        let client = client().await;
        let release_ns = "kubundle-system";
        run_ok(helm(&[
            "upgrade",
            "--install",
            "kubundle",
            CHART,
            "-n",
            release_ns,
            "--create-namespace",
            "--wait",
            "--timeout=2m",
        ]));
        let sa = format!("system:serviceaccount:{release_ns}:kubundle");

        // Exactly what the operator uses, and nothing else.
        for (args, expected) in [
            (vec!["list", "appbundles.kubundle.dev", "-A"], true),
            (vec!["watch", "appbundles.kubundle.dev", "-A"], true),
            (
                vec![
                    "patch",
                    "appbundles.kubundle.dev",
                    "--subresource=status",
                    "-A",
                ],
                true,
            ),
            (vec!["create", "deployments.apps", "-A"], true),
            (vec!["patch", "services", "-A"], true),
            // A canary's Service and Deployment, once spec.rollout is removed.
            (vec!["delete", "services", "-A"], true),
            (
                vec!["patch", "horizontalpodautoscalers.autoscaling", "-A"],
                true,
            ),
            (
                vec!["delete", "horizontalpodautoscalers.autoscaling", "-A"],
                true,
            ),
            (vec!["watch", "poddisruptionbudgets.policy", "-A"], true),
            (vec!["delete", "poddisruptionbudgets.policy", "-A"], true),
            (vec!["update", "poddisruptionbudgets.policy", "-A"], false),
            (vec!["delete", "ingresses.networking.k8s.io", "-A"], true),
            (
                vec!["patch", "httproutes.gateway.networking.k8s.io", "-A"],
                true,
            ),
            (
                vec!["patch", "gateways.gateway.networking.k8s.io", "-A"],
                false,
            ),
            (vec!["create", "events.events.k8s.io", "-A"], true),
            (vec!["patch", "events.events.k8s.io", "-A"], false),
            (
                vec![
                    "update",
                    "leases.coordination.k8s.io/kubundle",
                    "-n",
                    release_ns,
                ],
                true,
            ),
            (vec!["get", "secrets", "-A"], false),
            (vec!["list", "secrets", "-n", release_ns], false),
            // ConfigMaps: watched as metadata, read for spec.rolloutOnConfigChange; never written.
            (vec!["get", "configmaps", "-A"], true),
            (vec!["watch", "configmaps", "-A"], true),
            (vec!["patch", "configmaps", "-A"], false),
            (vec!["watch", "secrets", "-A"], false),
            // ControllerRevisions: the rollout history, never watched.
            (vec!["create", "controllerrevisions.apps", "-A"], true),
            (vec!["get", "controllerrevisions.apps", "-A"], true),
            (vec!["delete", "controllerrevisions.apps", "-A"], true),
            (vec!["watch", "controllerrevisions.apps", "-A"], false),
            // Namespaces: read only to tell one being deleted (no writes then).
            (vec!["get", "namespaces"], true),
            (vec!["get", "ingressclasses.networking.k8s.io"], true),
            (vec!["list", "ingressclasses.networking.k8s.io"], false),
            (
                vec!["get", "gateways.gateway.networking.k8s.io", "-A"],
                true,
            ),
            (
                vec!["list", "gateways.gateway.networking.k8s.io", "-A"],
                false,
            ),
            (
                vec!["patch", "gateways.gateway.networking.k8s.io", "-A"],
                false,
            ),
            (vec!["list", "namespaces"], false),
            (vec!["delete", "namespaces"], false),
            (vec!["delete", "deployments.apps", "-A"], true),
            (vec!["create", "pods", "-A"], false),
            (vec!["list", "pods", "-A"], true),
            (vec!["watch", "pods", "-A"], false),
            (vec!["get", "pods", "-A"], false),
            (vec!["create", "statefulsets.apps", "-A"], false),
            (vec!["update", "appbundles.kubundle.dev", "-A"], false),
            (vec!["delete", "appbundles.kubundle.dev", "-A"], false),
            (
                vec![
                    "update",
                    "leases.coordination.k8s.io/other",
                    "-n",
                    release_ns,
                ],
                false,
            ),
            (
                vec!["create", "clusterroles.rbac.authorization.k8s.io"],
                false,
            ),
        ] {
            assert_eq!(can_i(&sa, &args), expected, "can-i {args:?}");
        }

        let kubeconfig = service_account_kubeconfig(release_ns, "kubundle");
        let (args, env) = chart_process(release_ns, "kubundle", "kubundle-identity-test").await;
        let operator = Operator::start(&args, &env, &kubeconfig).await;
        let ns = create_namespace(&client, "chart-identity").await;
        guestbook_becomes_ready(&ns).await;
        assert_eq!(operator.metric("kubundle_leader").await, 1.0);
        assert_eq!(
            operator
                .metric(r#"kubundle_reconcile_total{result="error"}"#)
                .await,
            0.0
        );
        assert_eq!(
            operator
                .metric(r#"kubundle_api_writes_total{kind="Deployment",verb="apply"}"#)
                .await,
            3.0
        );
        drop(operator);
        delete_namespace(&client, &ns).await;
    }

    #[tokio::test]
    async fn operator_runs_with_the_charts_namespace_scoped_identity() {
        let client = client().await;
        let release_ns = "kubundle-scoped";
        let team = create_namespace(&client, "team").await;
        let other = create_namespace(&client, "other-team").await;
        run_ok(helm(&[
            "upgrade",
            "--install",
            "kubundle",
            CHART,
            "-n",
            release_ns,
            "--create-namespace",
            "--set",
            &format!("watchNamespace={team}"),
            "--wait",
            "--timeout=2m",
        ]));
        let sa = format!("system:serviceaccount:{release_ns}:kubundle");
        assert!(can_i(
            &sa,
            &["list", "appbundles.kubundle.dev", "-n", &team]
        ));
        assert!(can_i(&sa, &["create", "deployments.apps", "-n", &team]));
        assert!(
            !can_i(&sa, &["list", "appbundles.kubundle.dev", "-A"]),
            "a namespace-scoped install reads all namespaces"
        );
        assert!(!can_i(&sa, &["create", "deployments.apps", "-n", &other]));
        assert!(!can_i(&sa, &["get", "secrets", "-n", &team]));
        let out = run(kubectl(&["get", "clusterrole", "kubundle"]));
        assert!(
            !out.status.success()
                || !String::from_utf8_lossy(&out.stdout).contains("kubundle-scoped")
        );

        let kubeconfig = service_account_kubeconfig(release_ns, "kubundle");
        let (args, env) = chart_process(release_ns, "kubundle", "kubundle-scoped-test").await;
        assert!(args.contains(&format!("--namespace={team}")), "{args:?}");
        let _operator = Operator::start(&args, &env, &kubeconfig).await;
        guestbook_becomes_ready(&team).await;
        // AppBundles elsewhere are not its business (and it could not write there anyway).
        apply_yaml(
            &other,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: ignored}\nspec: {image: nginx, ports: [{containerPort: 80}]}\n",
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ignored: AppBundle = Api::namespaced(client.clone(), &other)
            .get("ignored")
            .await
            .unwrap();
        // The CRD defaults status to {observedGeneration: 0} (kstatus reads that as "not yet
        // observed"); a reconciled AppBundle would have conditions and observedGeneration 1.
        let status = ignored.status.unwrap_or_default();
        assert!(
            status.conditions.is_empty() && status.observed_generation.unwrap_or(0) == 0,
            "an AppBundle outside the watched namespace was reconciled: {status:?}"
        );
        run_ok(helm(&["uninstall", "kubundle", "-n", release_ns, "--wait"]));
        for ns in [&team, &other, &release_ns.to_string()] {
            delete_namespace(&client, ns).await;
        }
    }

    /// `configRollouts.secrets=true`: the chart grants reading Secrets (only then) and the operator,
    /// with exactly the chart's identity and arguments, follows them: a missing Secret is reported,
    /// and a new Secret value rolls the pods of an AppBundle with rolloutOnConfigChange.
    #[tokio::test]
    async fn with_the_secrets_value_the_operator_follows_secrets() {
        let client = client().await;
        let release_ns = "kubundle-secrets";
        let team = create_namespace(&client, "secret-team").await;
        run_ok(helm(&[
            "upgrade",
            "--install",
            "kubundle-secrets",
            CHART,
            "-n",
            release_ns,
            "--create-namespace",
            "--set",
            &format!("watchNamespace={team}"),
            "--set",
            "configRollouts.secrets=true",
            "--set",
            "replicaCount=1",
            "--wait",
            "--timeout=2m",
        ]));
        let sa = format!("system:serviceaccount:{release_ns}:kubundle-secrets");
        assert!(can_i(&sa, &["watch", "secrets", "-n", &team]));
        assert!(!can_i(&sa, &["patch", "secrets", "-n", &team]));
        let kubeconfig = service_account_kubeconfig(release_ns, "kubundle-secrets");
        let (args, env) =
            chart_process(release_ns, "kubundle-secrets", "kubundle-secrets-test").await;
        assert!(args.contains(&"--follow-secrets".to_string()), "{args:?}");
        let _operator = Operator::start(&args, &env, &kubeconfig).await;

        apply_yaml(
            &team,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: web}\nspec:\n  \
             image: nginx:1.27\n  ports: [{containerPort: 80}]\n  rolloutOnConfigChange: true\n  \
             env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: api-token, key: token}}}]\n",
        );
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &team);
        let b = wait_bundle(&api, "web", Duration::from_secs(60), "ConfigMissing", |b| {
            condition_of(b, "Ready").is_some_and(|c| c.1 == "ConfigMissing")
        })
        .await;
        assert!(
            condition_of(&b, "Ready")
                .unwrap()
                .2
                .starts_with("Secret api-token (used by spec.env[0]) does not exist"),
            "{:?}",
            condition_of(&b, "Ready")
        );
        let secret = |value: &str| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: api-token}}\nstringData: {{token: {value}}}\n"
            )
        };
        apply_yaml(&team, &secret("one"));
        wait_bundle(&api, "web", Duration::from_secs(60), "Ready", is_ready).await;
        let digest = || async {
            let d: Deployment = Api::namespaced(client.clone(), &team)
                .get("web")
                .await
                .unwrap();
            d.spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.annotations)
                .and_then(|a| a.get(kubundle::render::config::CONFIG_DIGEST).cloned())
                .expect("a config digest")
        };
        let before = digest().await;
        apply_yaml(&team, &secret("two"));
        eventually(Duration::from_secs(20), "a new digest", || async {
            let now = digest().await;
            if now != before { Ok(()) } else { Err(now) }
        })
        .await;
        run_ok(helm(&[
            "uninstall",
            "kubundle-secrets",
            "-n",
            release_ns,
            "--wait",
        ]));
        for ns in [&team, &release_ns.to_string()] {
            delete_namespace(&client, ns).await;
        }
    }

    /// Two replicas with leader election: exactly one reconciles; after `kill -9` of the leader the
    /// other takes over, and the time until it reconciles a new AppBundle is measured.
    #[tokio::test]
    async fn two_replicas_elect_one_leader_and_fail_over() {
        let client = client().await;
        let lease_ns = create_namespace(&client, "ha").await;
        let ns = create_namespace(&client, "ha-apps").await;
        let args: Vec<String> = [
            "--leader-elect",
            "--leader-election-lease=kubundle-ha",
            "--log-format=json",
        ]
        .map(String::from)
        .to_vec();
        let env = |pod: &str| {
            vec![
                ("POD_NAME".to_string(), pod.to_string()),
                ("POD_NAMESPACE".to_string(), lease_ns.clone()),
            ]
        };
        let admin = kubeconfig_path();
        let mut a = Some(Operator::start(&args, &env("replica-a"), &admin).await);
        let mut b = Some(Operator::start(&args, &env("replica-b"), &admin).await);

        let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_ns);
        let holder = eventually(Duration::from_secs(30), "a leader", || async {
            let lease = leases
                .get_opt("kubundle-ha")
                .await
                .map_err(|e| e.to_string())?;
            lease
                .and_then(|l| l.spec.and_then(|s| s.holder_identity))
                .ok_or_else(|| "no holder".to_string())
        })
        .await;
        let (leader, standby) = if holder == "replica-a" {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        assert_eq!(
            leader.as_ref().unwrap().metric("kubundle_leader").await,
            1.0,
            "the Lease holder must lead"
        );
        assert_eq!(
            standby.as_ref().unwrap().metric("kubundle_leader").await,
            0.0,
            "exactly one replica must lead"
        );

        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        apply_yaml(
            &ns,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: first}\nspec: {image: nginx, ports: [{containerPort: 80}]}\n",
        );
        wait_bundle(
            &api,
            "first",
            Duration::from_secs(30),
            "first Ready",
            is_ready,
        )
        .await;
        let success = r#"kubundle_reconcile_total{result="success"}"#;
        assert!(leader.as_ref().unwrap().metric(success).await >= 1.0);
        let survivor = standby.take().unwrap();
        assert_eq!(
            survivor.metric(success).await,
            0.0,
            "the standby reconciled"
        );
        assert_eq!(
            survivor
                .metric(r#"kubundle_api_writes_total{kind="Deployment",verb="apply"}"#)
                .await,
            0.0
        );

        // kill -9 the leader: it has no chance to release the Lease; the standby must wait it out.
        drop(leader.take());
        let killed_at = Instant::now();
        apply_yaml(
            &ns,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: second}\nspec: {image: nginx, ports: [{containerPort: 80}]}\n",
        );
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        eventually(
            Duration::from_secs(60),
            "the standby to take over and reconcile",
            || async {
                deployments
                    .get_opt("second")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "no Deployment yet".to_string())
            },
        )
        .await;
        let reconciled = killed_at.elapsed();
        wait_bundle(
            &api,
            "second",
            Duration::from_secs(30),
            "second Ready",
            is_ready,
        )
        .await;
        eprintln!(
            "failover: a new AppBundle was reconciled {:.1} s after kill -9 of the leader (Ready after {:.1} s)",
            reconciled.as_secs_f64(),
            killed_at.elapsed().as_secs_f64()
        );
        assert_eq!(survivor.metric("kubundle_leader").await, 1.0);
        let lease = leases.get("kubundle-ha").await.unwrap().spec.unwrap();
        assert_ne!(
            lease.holder_identity,
            Some(holder),
            "the Lease still names the dead leader"
        );
        assert!(
            reconciled < Duration::from_secs(30),
            "failover took {reconciled:?}"
        );
        drop(survivor);
        delete_namespace(&client, &ns).await;
        delete_namespace(&client, &lease_ns).await;
    }

    /// The AppBundle CRD as this kubundle's previous release had it: no rollout history fields in
    /// the status. Applied in place of the current one; the current one is put back on drop.
    struct PreviousCrd;

    impl PreviousCrd {
        fn apply() -> PreviousCrd {
            let mut crd: serde_json::Value = serde_json::from_str(&run_ok(kubectl(&[
                "get",
                "crd",
                "appbundles.kubundle.dev",
                "-o",
                "json",
            ])))
            .unwrap();
            let status = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
                ["status"]["properties"];
            let status = status.as_object_mut().unwrap();
            assert!(
                status.remove("revision").is_some() && status.remove("currentRevision").is_some()
            );
            let out = kubectl_stdin(&["replace", "-f", "-"], &crd.to_string());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            PreviousCrd
        }

        /// Waits until the API server publishes `with_history` (or not) in the AppBundle's schema.
        async fn published(with_history: bool) {
            eventually(Duration::from_secs(60), "the schema published", || async {
                let text = run_ok(kubectl(&[
                    "get",
                    "--raw",
                    "/openapi/v3/apis/kubundle.dev/v1alpha1",
                ]));
                let doc: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let has =
                    !doc["components"]["schemas"]["dev.kubundle.v1alpha1.AppBundle"]["properties"]
                        ["status"]["properties"]["currentRevision"]
                        .is_null();
                if has == with_history {
                    Ok(())
                } else {
                    Err(format!("currentRevision published: {has}"))
                }
            })
            .await
        }
    }

    impl Drop for PreviousCrd {
        fn drop(&mut self) {
            let _ = run(
                kubectl(&["apply", "--server-side", "--force-conflicts", "-f", "crds/"])
                    .current_dir(repo_root()),
            );
        }
    }

    /// An upgrade from a release without rollout history: each AppBundle gets exactly one
    /// revision create and one status write, though its first reconciles read a cached AppBundle
    /// older than kubundle's own status write. (Before: 35 creates, 15 refused with 409, and 35
    /// status writes for 20 AppBundles.)
    #[tokio::test]
    async fn an_upgrade_records_one_revision_per_bundle() {
        const N: usize = 20;
        let client = client().await;
        let ns = create_namespace(&client, "upgrade-history").await;
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
            Api::namespaced(client.clone(), &ns);
        // Watching this namespace only: its counts are this test's (others may be terminating).
        let watching = ["--log-format=json".to_string(), format!("--namespace={ns}")];
        let yaml: String = (0..N)
            .map(|i| {
                format!(
                    "---\napiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: app-{i}}}\n\
                     spec: {{image: 'nginx:1.27', replicas: 1, ports: [{{containerPort: 80}}]}}\n"
                )
            })
            .collect();
        let recorded = |b: &AppBundle| {
            is_ready(b)
                && b.status
                    .as_ref()
                    .and_then(|s| s.current_revision.as_ref())
                    .is_some()
        };
        let all_recorded = || async {
            let list = api
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let done = list.items.iter().filter(|b| recorded(b)).count();
            if done == N {
                Ok(())
            } else {
                Err(format!("{done} of {N}"))
            }
        };
        {
            let _operator = Operator::start(&watching, &[], &kubeconfig_path()).await;
            apply_yaml(&ns, &yaml);
            eventually(
                Duration::from_secs(120),
                "all Ready and recorded",
                all_recorded,
            )
            .await;
        }
        // What the release before rollout history left: no revisions, no revision in status.
        revisions
            .delete_collection(&Default::default(), &Default::default())
            .await
            .unwrap();
        for i in 0..N {
            run_ok(kubectl(&[
                "-n",
                &ns,
                "patch",
                "appbundle",
                &format!("app-{i}"),
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"revision":null,"currentRevision":null}}"#,
            ]));
        }
        let operator = Operator::start(&watching, &[], &kubeconfig_path()).await;
        eventually(Duration::from_secs(120), "all recorded again", all_recorded).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let creates = operator
            .metric(r#"kubundle_api_writes_total{kind="ControllerRevision",verb="create"}"#)
            .await;
        let status_writes = operator
            .metric(r#"kubundle_api_writes_total{kind="AppBundle",verb="apply_status"}"#)
            .await;
        println!(
            "upgrade of {N} AppBundles: {creates} revision creates, {status_writes} status writes"
        );
        assert_eq!((creates, status_writes), (N as f64, N as f64));
        assert_eq!(
            revisions
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .len(),
            N
        );
        delete_namespace(&client, &ns).await;
    }

    async fn readyz(operator: &Operator) -> (u16, String) {
        http_get(&format!("{}/readyz", operator.url)).await.unwrap()
    }

    /// A new kubundle with the previous release's CRD (what `helm upgrade` leaves): status stays
    /// true (Ready after a spec change, for kubectl wait and Flux), /readyz says what is wrong and
    /// how to fix it, a Warning Event on the AppBundle, the gauge; no write loop and no history
    /// attempts; once the CRD is applied, everything is back without a restart, history
    /// included. Found at startup and, for a CRD changed under a running kubundle, from the API
    /// server's refusal. (Before: Ready=False DeploymentPending for good, /readyz 200, no Event,
    /// 6 failed status writes and 6 ControllerRevision POSTs a minute per AppBundle.)
    #[tokio::test]
    async fn an_operator_newer_than_its_crd_keeps_status_true_and_says_so() {
        let client = client().await;
        let ns = create_namespace(&client, "crd-skew").await;
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
            Api::namespaced(client.clone(), &ns);
        let bundle = |image: &str| {
            format!(
                "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: web}}\n\
                 spec: {{image: '{image}', replicas: 1, ports: [{{containerPort: 80}}]}}\n"
            )
        };
        let ready_with = |image: &'static str| {
            move |b: &AppBundle| {
                is_ready(b) && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some(image)
            }
        };

        // At startup.
        let previous = PreviousCrd::apply();
        PreviousCrd::published(false).await;
        let operator =
            Operator::start(&["--log-format=json".to_string()], &[], &kubeconfig_path()).await;
        let (code, body) = readyz(&operator).await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains(".status.currentRevision")
                && body.contains(".status.revision")
                && body.contains("kubectl apply --server-side --force-conflicts -f"),
            "{body}"
        );
        assert_eq!(operator.metric("kubundle_crd_missing_fields").await, 2.0);
        apply_yaml(&ns, &bundle("nginx:1.27"));
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(60),
            "Ready",
            ready_with("nginx:1.27"),
        )
        .await;
        apply_yaml(&ns, &bundle("nginx:1.28"));
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(60),
            "Ready on the new spec",
            ready_with("nginx:1.28"),
        )
        .await;
        let event = warning_event(&client, &ns, "web").await;
        assert_eq!(event.reason.as_deref(), Some("CRDOutdated"));
        assert!(event.note.unwrap_or_default().contains(".status.revision"));
        // Settled: no status write, no history attempt.
        let status_writes = r#"kubundle_api_writes_total{kind="AppBundle",verb="apply_status"}"#;
        let before = operator.metric(status_writes).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            operator.metric(status_writes).await,
            before,
            "status writes went on"
        );
        assert!(
            revisions
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );

        // The CRD applied: back to normal within the recheck (30 s), history recorded.
        drop(previous);
        let started = Instant::now();
        eventually(Duration::from_secs(60), "/readyz 200", || async {
            match readyz(&operator).await {
                (200, _) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let back = started.elapsed();
        assert_eq!(operator.metric("kubundle_crd_missing_fields").await, 0.0);
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(30),
            "the revision recorded",
            |b| b.status.as_ref().and_then(|s| s.revision) == Some(1),
        )
        .await;

        // Changed under a running kubundle: found by the refused status write.
        let _previous = PreviousCrd::apply();
        PreviousCrd::published(false).await;
        apply_yaml(&ns, &bundle("nginx:1.29"));
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(60),
            "Ready on the next spec",
            ready_with("nginx:1.29"),
        )
        .await;
        let (code, body) = readyz(&operator).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains(".status.revision"), "{body}");
        println!(
            "CRD older than kubundle: Ready on a new spec; /readyz 200 {back:?} after the CRD was applied"
        );
        delete_namespace(&client, &ns).await;
    }
}
