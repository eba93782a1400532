//! Shared helpers for the end-to-end tests. They run against the local control plane started by
//! `deploy/local/cluster.sh up` (the test command `tests/run.sh` does that and exports KUBECONFIG
//! and a PATH with the built kubectl and helm). Without a cluster they fail with a message saying
//! so: an end-to-end test never passes by skipping itself.
#![allow(dead_code)] // each test binary uses a different subset

pub mod audit;
pub mod hostile;
pub mod prometheus;
pub mod real;
pub mod toxiproxy;

use std::borrow::BorrowMut;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

/// The repository root.
/// The checkout the tests run from. `cargo test` says it at run time; the path compiled in can be
/// another checkout's when two share one target directory (cargo does not rebuild a workspace
/// member for a new path), so it is only the fallback for a test binary run by hand.
pub fn repo_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
    })
}

/// The admin kubeconfig of the local cluster, from `KUBECONFIG`.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("KUBECONFIG") {
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        _ => panic!(
            "KUBECONFIG does not point at a kubeconfig file. End-to-end tests need the local cluster: \
             run `tests/run.sh`, or `deploy/local/cluster.sh up && eval \"$(deploy/local/cluster.sh env)\"` \
             before `cargo test`."
        ),
    }
}

/// The API server's address (host:port) in `kubeconfig`.
pub fn api_server_address(kubeconfig: &Path) -> String {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let server = config.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .unwrap();
    server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// A client for the local cluster with the admin identity.
pub async fn client() -> Client {
    kubeconfig_path();
    Client::try_default()
        .await
        .expect("cannot build a client from KUBECONFIG")
}

/// Runs a command to completion and returns its output, panicking if it cannot be started.
pub fn run(mut cmd: impl BorrowMut<Command>) -> Output {
    let cmd = cmd.borrow_mut();
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(mut cmd: impl BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run(&mut *cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is not UTF-8")
}

/// `kubectl` from PATH (the one `cluster.sh env` puts there) with the given arguments.
pub fn kubectl(args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.args(args);
    cmd
}

/// Creates a namespace with a name unique to this test run; each test works in its own.
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubundle.dev/test": prefix}},
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
    name
}

/// Deletes a namespace created by [`create_namespace`] (the cluster is torn down after the run anyway).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await;
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `timeout` naming `what`
/// and the last state `check` described through `Err`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A value from `deploy/local/versions.env`, the single place the component versions are pinned.
pub fn pinned_version(key: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("deploy/local/versions.env"))
        .expect("cannot read deploy/local/versions.env");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} is not set in deploy/local/versions.env"))
        .trim()
        .to_string()
}

/// Runs `kubectl` with `input` on stdin (e.g. `apply -f -`); returns the output, success or not.
pub fn kubectl_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Applies YAML with `kubectl apply -n NAMESPACE -f -`, which must succeed.
pub fn apply_yaml(namespace: &str, yaml: &str) {
    let out = kubectl_stdin(&["apply", "-n", namespace, "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An AppBundle with an image, one port and `extra` spec lines (which may replace the ports).
pub fn bundle_yaml(name: &str, extra: &str) -> String {
    let ports = if extra.starts_with("  ports:") || extra.contains("\n  ports:") {
        ""
    } else {
        "  ports: [{name: http, containerPort: 80}]\n"
    };
    format!(
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {name}}}\n\
         spec:\n  image: nginx:1.27\n{ports}{extra}"
    )
}

/// The condition `type_` of an AppBundle's status as (status, reason, message), if present.
pub fn condition_of(
    bundle: &kubundle::api::AppBundle,
    type_: &str,
) -> Option<(String, String, String)> {
    let status = bundle.status.as_ref()?;
    kubundle::api::find_condition(&status.conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the AppBundle satisfies `check` (given the object), returning it.
pub async fn wait_bundle<F>(
    api: &Api<kubundle::api::AppBundle>,
    name: &str,
    timeout: Duration,
    what: &str,
    check: F,
) -> kubundle::api::AppBundle
where
    F: Fn(&kubundle::api::AppBundle) -> bool,
{
    eventually(timeout, what, || async {
        let b = api.get(name).await.map_err(|e| e.to_string())?;
        if check(&b) {
            Ok(b)
        } else {
            Err(format!(
                "status: {}",
                serde_json::to_string(&b.status).unwrap()
            ))
        }
    })
    .await
}

/// Ready=True for the newest generation, with `pods` ready pods.
pub fn ready_at(b: &kubundle::api::AppBundle, pods: i32) -> bool {
    is_ready(b) && b.status.as_ref().and_then(|s| s.ready_replicas) == Some(pods)
}

/// Ready=True for the newest generation.
pub fn is_ready(b: &kubundle::api::AppBundle) -> bool {
    let current = b.status.as_ref().and_then(|s| s.observed_generation) == b.metadata.generation;
    current && condition_of(b, "Ready").is_some_and(|c| c.0 == "True")
}

/// The operator's metrics endpoint (started by tests/run.sh), from `KUBUNDLE_METRICS_URL`.
pub fn metrics_url() -> String {
    std::env::var("KUBUNDLE_METRICS_URL").unwrap_or_else(|_| {
        panic!("KUBUNDLE_METRICS_URL is not set: these tests need the operator running; use tests/run.sh")
    })
}

/// Fetches a Prometheus text exposition over plain HTTP (no client library needed for loopback).
pub async fn scrape(url: &str) -> String {
    let (status, body) = http_get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

/// GET over plain HTTP/1.1: the status code and the body, or why nothing usable answered.
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    http_request("GET", url, "").await
}

/// One HTTP/1.1 request on a new connection (`body` sent as text when not empty): the status code
/// and the body, or why nothing usable answered.
pub async fn http_request(method: &str, url: &str, body: &str) -> Result<(u16, String), String> {
    http_request_via(method, url, body, None).await
}

/// GET `url` on a connection to `address` (host:port) instead of the URL's host, which is still
/// the Host header: what `curl --resolve` does, for a hostname that no DNS knows.
pub async fn http_get_via(url: &str, address: &str) -> Result<(u16, String), String> {
    http_request_via("GET", url, "", Some(address)).await
}

async fn http_request_via(
    method: &str,
    url: &str,
    body: &str,
    address: Option<&str>,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    // The URL's host and port, port 80 when it names none.
    let target = match address {
        Some(a) => a.to_string(),
        None if host.contains(':') => host.to_string(),
        None => format!("{host}:80"),
    };
    let mut stream = tokio::net::TcpStream::connect(&target)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("not an HTTP response")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if chunked {
        return Ok((status, dechunk(body)?));
    }
    Ok((status, body.to_string()))
}

/// The body of a chunked HTTP/1.1 response (what Go servers send for larger answers).
fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or("a chunk without its size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .map_err(|e| format!("chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).ok_or("a chunk cut short")?;
        out.push_str(chunk);
        rest = after[size..]
            .strip_prefix("\r\n")
            .ok_or("a chunk without its end")?;
    }
}

/// The (first and only) container of a Deployment kubundle rendered.
pub fn container(
    d: &k8s_openapi::api::apps::v1::Deployment,
) -> &k8s_openapi::api::core::v1::Container {
    &d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

/// Waits up to `timeout` until neither a Deployment nor a Service named `name` is left in `ns`.
pub async fn children_gone(client: &Client, ns: &str, name: &str, timeout: Duration) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    eventually(
        timeout,
        "the Deployment and Service to be deleted",
        || async {
            let d = deployments.get_opt(name).await.map_err(|e| e.to_string())?;
            let s = services.get_opt(name).await.map_err(|e| e.to_string())?;
            match (d, s) {
                (None, None) => Ok(()),
                (d, s) => Err(format!(
                    "deployment {}, service {}",
                    d.is_some(),
                    s.is_some()
                )),
            }
        },
    )
    .await;
}

/// The value of one sample (`name{labels}` exactly as exposed, or a bare name) in an exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
}

/// A kubundle process started by a test; stopped (SIGKILL) when dropped.
pub struct Operator {
    pub child: std::process::Child,
    /// Base URL of its HTTP endpoints.
    pub url: String,
}

impl Operator {
    /// Starts the operator binary with `args` (any `--listen-address` in them is replaced by port
    /// 0 on loopback: the kernel picks a free port as the operator binds it, so nothing can take
    /// it in between), environment `env`, and `KUBECONFIG=kubeconfig`; reads the bound address
    /// from its start-up log line (so `args` must keep the JSON log format) and waits until it is
    /// past its start-up: its `/readyz` no longer says "starting" (it serves its endpoints from
    /// the first moment, while it waits for the API server: startup.rs).
    pub async fn start(args: &[String], env: &[(String, String)], kubeconfig: &Path) -> Operator {
        let operator = Self::try_start(args, env, kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let start = std::time::Instant::now();
        loop {
            match http_get(&format!("{}/readyz", operator.url)).await {
                Ok((_, body)) if !body.starts_with("starting") => return operator,
                other if start.elapsed() > Duration::from_secs(30) => {
                    panic!("the operator was still starting after 30 s: /readyz {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Starts the operator and returns as soon as it serves its HTTP endpoints, which may still
    /// say it waits for the API server; says why it could not start instead of panicking (an
    /// operator whose CRD is not installed exits at once, for one).
    pub async fn try_start(
        args: &[String],
        env: &[(String, String)],
        kubeconfig: &Path,
    ) -> Result<Operator, String> {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!(
            "kubundle-test-operator-{}-{n}.log",
            std::process::id()
        ));
        // KUBUNDLE_TEST_OPERATOR_BIN runs another build (say, main's) under the same tests.
        let binary = std::env::var("KUBUNDLE_TEST_OPERATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kubundle").to_string());
        let mut child = Command::new(binary)
            .args(args.iter().filter(|a| !a.starts_with("--listen-address")))
            .arg("--listen-address=127.0.0.1:0")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KUBECONFIG", kubeconfig)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|e| format!("cannot start the operator: {e}"))?;
        let start = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(address) = text.lines().find_map(listen_address) {
                let url = format!("http://{address}");
                if tokio::net::TcpStream::connect(&address).await.is_ok() {
                    return Ok(Operator { child, url });
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("the operator exited ({status}): {text}"));
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the operator did not start in 30 s: {text}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of one metric series, from /metrics.
    pub async fn metric(&self, series: &str) -> f64 {
        sample(&scrape(&format!("{}/metrics", self.url)).await, series)
            .unwrap_or_else(|| panic!("no {series}"))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the operator's "kubundle starting" log line (JSON log format, the chart's).
fn listen_address(line: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    if json["message"] != "kubundle starting" {
        return None;
    }
    json["address"].as_str().map(str::to_owned)
}

/// A kubeconfig for the local cluster that authenticates with `token` (e.g. a ServiceAccount's,
/// from the TokenRequest API), written next to the admin kubeconfig.
pub fn token_kubeconfig(token: &str, file_name: &str) -> PathBuf {
    let mut kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path()).unwrap();
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.trim().to_string().into()),
            ..kube::config::AuthInfo::default()
        });
    }
    let path = kubeconfig_path().with_file_name(file_name);
    // JSON is YAML: kubectl and kube-rs read it.
    std::fs::write(&path, serde_json::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

/// Waits for a Warning Event regarding the AppBundle `name` in `namespace`, returning it. (Only
/// the AppBundle's: a child of the same name gets Events from others, such as the API server's
/// ClusterIPNotAllocated from its IP repair loop for a Service created a moment before.)
pub async fn warning_event(
    client: &Client,
    namespace: &str,
    name: &str,
) -> k8s_openapi::api::events::v1::Event {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    eventually(
        Duration::from_secs(30),
        &format!("a Warning Event on {name}"),
        || async {
            let list = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| {
                    let regarding = e.regarding.as_ref();
                    e.type_.as_deref() == Some("Warning")
                        && regarding.and_then(|r| r.kind.as_deref()) == Some("AppBundle")
                        && regarding.and_then(|r| r.name.as_deref()) == Some(name)
                })
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await
}

/// `kubectl kubundle ARGS`: kubectl runs the plugin binary this crate builds, found on PATH as a
/// user who copied it there would have it.
pub fn kubectl_kubundle(args: &[&str]) -> Command {
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-kubundle"));
    let dir = plugin.parent().expect("the plugin's directory");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let mut cmd = Command::new("kubectl");
    cmd.arg("kubundle").args(args);
    cmd.env("PATH", std::env::join_paths(dirs).expect("a PATH"));
    cmd
}

/// Runs the Argo CD health check (deploy/gitops/argocd/health.lua) on an object, in Lua 5.1 (Argo
/// CD's gopher-lua speaks 5.1): returns (status, message).
pub fn argocd_health(object: &serde_json::Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    use mlua::serde::SerializeOptions;
    let lua = mlua::Lua::new();
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua.to_value_with(object, options).unwrap();
    lua.globals().set("obj", obj).unwrap();
    let script =
        std::fs::read_to_string(repo_root().join("deploy/gitops/argocd/health.lua")).unwrap();
    let hs: mlua::Table = lua.load(&script).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}
