//! The kubundle operator binary: logging, client, controller, HTTP endpoints, shutdown.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use kubundle::http::{HttpState, router};
use kubundle::metrics::Metrics;
use kubundle::reconcile::{Context, Settings, check_crd, controller};

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
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Auto,
    Json,
    Text,
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
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
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);

    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            error!(error = %e, "cannot configure a Kubernetes client (in-cluster config or KUBECONFIG)");
            return ExitCode::FAILURE;
        }
    };
    if let Err(message) = check_crd(&client, args.namespace.as_deref()).await {
        error!("{message}");
        return ExitCode::FAILURE;
    }

    let metrics = Metrics::new();
    let instance = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "kubundle".into());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kubundle".into(),
            instance: Some(instance),
        },
    );
    let settings = Settings {
        namespace: args.namespace.clone(),
        concurrency: args.concurrency,
        cluster_domain: args.cluster_domain.clone(),
    };
    let ctx = Arc::new(Context::new(client, recorder, metrics.clone(), settings));
    let (run, handles) = controller(ctx);
    let listener = match tokio::net::TcpListener::bind(args.listen_address).await {
        Ok(l) => l,
        Err(e) => {
            error!(address = %args.listen_address, error = %e, "cannot listen for the HTTP endpoints");
            return ExitCode::FAILURE;
        }
    };
    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
          namespace = args.namespace.as_deref().unwrap_or("(all)"), "kubundle starting");
    let app = router(HttpState {
        metrics,
        store: handles.store,
        ready: handles.synced,
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The controller stops on SIGTERM or SIGINT after finishing the reconciles in flight.
    run.await;
    server.abort();
    info!("kubundle stopped");
    ExitCode::SUCCESS
}
