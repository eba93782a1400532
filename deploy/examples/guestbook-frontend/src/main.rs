//! The guestbook's frontend: a page that lists the entries and adds one. Entries are written to the
//! Redis leader and read from the Redis followers, as in the Kubernetes guestbook tutorial.
//!
//! - `GET /`: the page;  `GET /entries`: the entries as a JSON array (from a follower);
//!   `POST /entries`: add the request body as an entry (to the leader), answers 201 with the count;
//!   `GET /healthz`: 200 while the server runs (the probes).
//! - Environment: `GET_HOSTS_FROM=dns` (the tutorial's default) finds Redis at `redis-leader:6379` and
//!   `redis-follower:6379`; otherwise `REDIS_LEADER_SERVICE_HOST`/`_PORT` and
//!   `REDIS_FOLLOWER_SERVICE_HOST`/`_PORT` (the Service environment variables). `PORT` (8080),
//!   `FRONTEND_VERSION` (shown on the page and in the `X-Frontend-Version` header),
//!   `SHUTDOWN_DELAY_SECONDS` (5): after SIGTERM the server keeps answering this long, so that
//!   clients are not refused while the endpoint is being removed from the Service, then drains.
//!   `FAIL_PERCENT` (0): this share of the page's requests (`GET /`) is answered 500, evenly
//!   spread: a version that is ready but wrong, for a canary's analysis to catch.

mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

const KEY: &[u8] = b"guestbook";
const MAX_ENTRY_BYTES: usize = 1024;

#[derive(Clone)]
struct Config {
    leader: String,
    follower: String,
    version: String,
    /// Percent of the page's requests answered 500.
    fail_percent: u64,
    /// Page requests so far (which of them fail).
    served: Arc<AtomicU64>,
}

impl Config {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let service = |prefix: &str, dns: &str| {
            if var("GET_HOSTS_FROM").as_deref() == Some("dns") {
                return format!("{dns}:6379");
            }
            let host = var(&format!("{prefix}_SERVICE_HOST")).unwrap_or_else(|| dns.to_string());
            let port = var(&format!("{prefix}_SERVICE_PORT")).unwrap_or_else(|| "6379".to_string());
            format!("{host}:{port}")
        };
        Config {
            leader: service("REDIS_LEADER", "redis-leader"),
            follower: service("REDIS_FOLLOWER", "redis-follower"),
            version: var("FRONTEND_VERSION")
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
            fail_percent: var("FAIL_PERCENT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
                .min(100),
            served: Arc::new(AtomicU64::new(0)),
        }
    }
}

fn failure(what: &str, err: std::io::Error) -> Response {
    eprintln!("{what}: {err}");
    (StatusCode::SERVICE_UNAVAILABLE, format!("{what}: {err}\n")).into_response()
}

async fn list(State(config): State<Config>) -> Response {
    let reply = redis::command(&config.follower, &[b"LRANGE", KEY, b"0", b"-1"]).await;
    match reply.and_then(redis::strings) {
        Ok(entries) => axum::Json(entries).into_response(),
        Err(err) => failure(
            &format!("reading the entries from {}", config.follower),
            err,
        ),
    }
}

async fn add(State(config): State<Config>, body: String) -> Response {
    let entry = body.trim();
    if entry.is_empty() || entry.len() > MAX_ENTRY_BYTES {
        let msg = format!("an entry is 1 to {MAX_ENTRY_BYTES} bytes of text\n");
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    match redis::command(&config.leader, &[b"RPUSH", KEY, entry.as_bytes()]).await {
        Ok(redis::Reply::Integer(count)) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({"entries": count})),
        )
            .into_response(),
        Ok(other) => failure(
            "adding the entry",
            std::io::Error::other(format!("unexpected reply {other:?}")),
        ),
        Err(err) => failure(&format!("adding the entry at {}", config.leader), err),
    }
}

async fn page(State(config): State<Config>) -> Response {
    // Request n fails when the share of failures so far falls behind FAIL_PERCENT.
    let n = config.served.fetch_add(1, Ordering::Relaxed);
    if (n + 1) * config.fail_percent / 100 > n * config.fail_percent / 100 {
        let msg = format!(
            "version {} fails {}% of the requests\n",
            config.version, config.fail_percent
        );
        return (StatusCode::INTERNAL_SERVER_ERROR, msg).into_response();
    }
    Html(include_str!("page.html").replace("{{VERSION}}", &config.version)).into_response()
}

async fn stamp_version(State(config): State<Config>, mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&config.version) {
        response.headers_mut().insert("x-frontend-version", value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn shutdown_signal(delay: Duration) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    eprintln!(
        "shutting down: still serving for {delay:?} while the endpoint is removed, then draining"
    );
    tokio::time::sleep(delay).await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let config = Config::from_env();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let delay = std::env::var("SHUTDOWN_DELAY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let app = Router::new()
        .route("/", get(page))
        .route("/entries", get(list).post(add))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::map_response_with_state(
            config.clone(),
            stamp_version,
        ))
        .with_state(config.clone());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    eprintln!(
        "guestbook frontend {} on :{port}; leader {}, followers {}",
        config.version, config.leader, config.follower
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(Duration::from_secs(delay)))
        .await
}
