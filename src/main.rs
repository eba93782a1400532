//! The kubundle operator binary: logging, client, controller, HTTP endpoints, shutdown.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use kubundle::client::operator_client;
use kubundle::endpoints::{HttpState, router};
use kubundle::leader::{Elector, Fence, Timing};
use kubundle::metrics::Metrics;
use kubundle::reconcile::{Context, Settings, controller};
use kubundle::startup;

#[derive(Parser, Debug)]
#[command(
    name = "kubundle",
    version,
    about = "Runs AppBundles as Deployments and Services"
)]
struct Args {
    /// Watch AppBundles in this namespace only (default: all namespaces).
    #[arg(long, env = "KUBUNDLE_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the HTTP endpoints (/metrics, /healthz, /readyz).
    #[arg(long, env = "KUBUNDLE_LISTEN_ADDRESS", default_value = "0.0.0.0:8080")]
    listen_address: SocketAddr,
    /// Log format: json (one object per line), text, or auto (text on a terminal, json otherwise).
    #[arg(long, env = "KUBUNDLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    /// AppBundles reconciled at the same time.
    #[arg(long, env = "KUBUNDLE_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// The cluster's DNS domain, used in status.address.url.
    #[arg(long, env = "KUBUNDLE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Follow Secrets too: roll the pods of AppBundles with spec.rolloutOnConfigChange when a
    /// Secret they use changes, and report missing Secrets. Needs get/list/watch on Secrets.
    #[arg(long, env = "KUBUNDLE_FOLLOW_SECRETS")]
    follow_secrets: bool,

    /// Run several replicas safely: only the holder of a coordination.k8s.io Lease reconciles.
    #[arg(long, env = "KUBUNDLE_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else --namespace, else "default").
    #[arg(long, env = "KUBUNDLE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "KUBUNDLE_LEADER_ELECTION_LEASE",
        default_value = "kubundle"
    )]
    leader_election_lease: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Auto,
    Json,
    Text,
}

fn init_logging(format: LogFormat) {
    // The kube client logs every failed request at ERROR ("failed with error client error
    // (Connect)"), dozens a second during an API-server outage that kubundle reports once itself
    // (the watch failing, /readyz): off unless RUST_LOG names kube_client.
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into());
    let directives = if directives.contains("kube_client") {
        directives
    } else {
        format!("{directives},kube_client::client::builder=off")
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        // Colours only on a terminal: text logs piped to a file stay plain.
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);

    let metrics = Metrics::new();
    // With leader election, no write leaves this process unless it holds the Lease (leader.rs).
    let fence = if args.leader_elect {
        Fence::closed()
    } else {
        Fence::open()
    };
    let client = match operator_client(&metrics, fence.clone()).await {
        Ok(client) => client,
        Err(e) => {
            error!(error = %e, "cannot configure a Kubernetes client (in-cluster config or KUBECONFIG)");
            return ExitCode::FAILURE;
        }
    };
    // The endpoints are served from now on: while kubundle waits for the API server (startup.rs),
    // /healthz says it is alive and /readyz says what it waits for.
    let listener = match std::net::TcpListener::bind(args.listen_address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
    {
        Ok(l) => l,
        Err(e) => {
            error!(address = %args.listen_address, error = %e, "cannot listen for the HTTP endpoints");
            return ExitCode::FAILURE;
        }
    };
    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
          namespace = args.namespace.as_deref().unwrap_or("(all)"),
          leader_elect = args.leader_elect, "kubundle starting");
    let waiting = startup::Waiting::default();
    let early = match startup::EarlyEndpoints::serve(&listener, metrics.clone(), waiting.clone()) {
        Ok(early) => early,
        Err(e) => {
            error!(error = %e, "cannot serve the HTTP endpoints");
            return ExitCode::FAILURE;
        }
    };
    let found = tokio::select! {
        found = startup::wait_for_api(&client, args.namespace.as_deref(), &waiting) => found,
        _ = shutdown_signal() => {
            info!("kubundle stopped while waiting for the API server");
            return ExitCode::SUCCESS;
        }
    };
    let found = match found {
        Ok(found) => found,
        Err(message) => {
            error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    early.stop().await;

    let instance = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "kubundle".into());
    let events = kubundle::events::Publisher::new(client.clone(), "kubundle", &instance);
    let settings = Settings {
        namespace: args.namespace.clone(),
        concurrency: args.concurrency,
        cluster_domain: args.cluster_domain.clone(),
        gateway_api: found.gateway_api,
        follow_secrets: args.follow_secrets,
    };
    info!(
        gateway_api = settings.gateway_api,
        "HTTPRoutes (spec.http.gateway) {}",
        if settings.gateway_api {
            "are served here"
        } else {
            "are not served here: the Gateway API CRDs are not installed"
        }
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        events,
        metrics.clone(),
        settings,
    ));
    // A CRD older than this kubundle (helm upgrade leaves it): found now, said by /readyz, and
    // looked at again until it is applied. By every replica, the standbys too: a new replica
    // waiting for the old leader's Lease must see the CRD applied and turn ready, or the rollout
    // of the new version never finishes.
    ctx.crd_skew.check(&client).await;
    let recheck = {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.crd_skew.recheck(&ctx.client).await })
    };
    let (run, handles) = controller(ctx.clone());

    // A standby replica is ready (healthy and waiting); the leader once its cache is synced.
    let standby = Arc::new(AtomicBool::new(args.leader_elect));
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "cannot serve the HTTP endpoints");
            return ExitCode::FAILURE;
        }
    };
    let app = router(HttpState {
        metrics: metrics.clone(),
        store: handles.store,
        ready: handles.synced,
        watches: handles.watches,
        standby: standby.clone(),
        controller: ctx,
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let code = if args.leader_elect {
        let namespace = args
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let leases: Api<Lease> = Api::namespaced(client, &namespace);
        let mut elector = Elector::new(
            leases,
            &args.leader_election_lease,
            &instance,
            Timing::default(),
            metrics.clone(),
        )
        .with_fence(fence);
        metrics.leader.set(0);
        info!(lease = %format!("{namespace}/{}", args.leader_election_lease), "standing by for the leader lease");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown_signal() => {
                info!("kubundle stopped while standing by");
                return ExitCode::SUCCESS;
            }
        }
        metrics.leader.set(1);
        standby.store(false, Ordering::Relaxed);
        info!("leader: reconciling");
        tokio::select! {
            // The controller stops on SIGTERM or SIGINT after finishing the reconciles in flight.
            _ = run => {
                elector.release().await;
                ExitCode::SUCCESS
            }
            _ = elector.keep() => {
                // Another replica may be reconciling already: stop at once, restart as a candidate.
                error!("lost the leader lease; exiting so that only one replica reconciles");
                metrics.leader.set(0);
                ExitCode::FAILURE
            }
        }
    } else {
        metrics.leader.set(1);
        run.await;
        ExitCode::SUCCESS
    };
    server.abort();
    recheck.abort();
    info!("kubundle stopped");
    code
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
