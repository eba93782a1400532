//! The operator's Kubernetes client: configured as `Client::try_default` would be (in-cluster, or
//! KUBECONFIG), counting every request it sends, and never waiting forever for an answer.
//!
//! A connection the network drops without a reset (a NAT or load balancer that forgets it, a
//! control-plane node gone) stays open on this side: a request written into it would wait for its
//! answer forever, and hold the reconcile that sent it (kube's client has no request timeout by
//! default). So every request must see its response's headers within [`RESPONSE_DEADLINE`], or it
//! fails and the connection is dropped; the reconcile's error policy retries on a new one. A watch's
//! headers come at once too; its events are guarded by the watches' own idle timeout
//! ([`crate::reconcile::WATCH_TIMEOUT`]). A connection that goes silent after the headers, in the
//! middle of a body, fails the read after [`READ_TIMEOUT`] of silence.
//!
//! With leader election, every write but the Lease's own passes a [`Fence`]: a replica that is not
//! the leader, or no longer surely so, sends none ([`crate::leader`] says why this cannot be left
//! to the reconciles).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use kube::Client;
use tower::{BoxError, Layer, Service};

use crate::leader::Fence;
use crate::metrics::Metrics;

/// How long a request may wait for its response's headers. The API server ends a request it has
/// not answered after 60 s itself (`--request-timeout`) and answers at once when it sheds load
/// (429), so 30 s without a byte means the connection is gone, not that the server is slow.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(30);

/// How long a connection may stay silent while a response is read (headers or body). The headers
/// have [`RESPONSE_DEADLINE`]; this covers a connection that goes silent after them, in the middle
/// of a body, which would otherwise hold the reconcile reading it forever (kube's client sets no
/// read timeout by default), and kube-runtime runs no other reconcile of that AppBundle meanwhile.
/// A watch sends something at least every [`crate::reconcile::WATCH_TIMEOUT`] (the API server ends
/// each watch request then), so this is longer, by a margin.
pub const READ_TIMEOUT: Duration = Duration::from_secs(45);

/// Builds the operator's client (in-cluster, or KUBECONFIG); its writes pass `fence`.
pub async fn operator_client(metrics: &Metrics, fence: Fence) -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    operator_client_for(config, metrics, fence)
}

/// The operator's client for `config`.
pub fn operator_client_for(
    mut config: kube::Config,
    metrics: &Metrics,
    fence: Fence,
) -> Result<Client, kube::Error> {
    config.read_timeout = Some(READ_TIMEOUT);
    // Counted from when the request was written, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    let metrics = metrics.clone();
    let count =
        tower::ServiceBuilder::new().map_request(move |req: http::Request<kube::client::Body>| {
            metrics.request(&req);
            req
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&Deadline(RESPONSE_DEADLINE))
        .with_layer(&Fenced(fence))
        .with_layer(&count.into_inner())
        .build())
}

/// A layer that refuses, without sending them, the writes its [`Fence`] does not allow (a
/// Lease's own requests always pass: they are how the fence opens).
#[derive(Clone, Debug)]
pub struct Fenced(pub Fence);

impl<S> Layer<S> for Fenced {
    type Service = WithFence<S>;

    fn layer(&self, inner: S) -> WithFence<S> {
        WithFence {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// The service of [`Fenced`].
#[derive(Clone, Debug)]
pub struct WithFence<S> {
    inner: S,
    fence: Fence,
}

/// The error of a write the fence refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "not sent: {method} {path} is a write, and this replica does not hold the leader Lease (or has not renewed it in time)"
)]
pub struct NotLeader {
    pub method: http::Method,
    pub path: String,
}

/// Whether `req` changes anything (any method but GET, HEAD and OPTIONS) other than a Lease.
fn fenced<B>(req: &http::Request<B>) -> bool {
    let reads = [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS];
    !reads.contains(req.method()) && !req.uri().path().starts_with("/apis/coordination.k8s.io/")
}

impl<S, B> Service<http::Request<B>> for WithFence<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Answer<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if fenced(&req) && !self.fence.allows_writes() {
            let refused = NotLeader {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
            };
            tracing::warn!(error = %refused, "write refused by the leader fence");
            return Box::pin(async move { Err(Box::new(refused) as BoxError) });
        }
        let answer = self.inner.call(req);
        Box::pin(async move { answer.await.map_err(Into::into) })
    }
}

/// A layer that fails a request whose response does not start within its duration.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Duration);

impl<S> Layer<S> for Deadline {
    type Service = WithDeadline<S>;

    fn layer(&self, inner: S) -> WithDeadline<S> {
        WithDeadline {
            inner,
            deadline: self.0,
        }
    }
}

/// The service of [`Deadline`].
#[derive(Clone, Debug)]
pub struct WithDeadline<S> {
    inner: S,
    deadline: Duration,
}

/// The error of a request that hit its deadline.
#[derive(Debug, thiserror::Error)]
#[error(
    "no response from the API server within {0:?} (the connection is dropped; a retry uses a new one)"
)]
pub struct NoResponse(pub Duration);

type Answer<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, Req> Service<Req> for WithDeadline<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Answer<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let answer = self.inner.call(req);
        let deadline = self.deadline;
        Box::pin(async move {
            match tokio::time::timeout(deadline, answer).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(NoResponse(deadline)) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn a_quiet_watch_outlives_the_read_timeout_by_a_margin() {
        // The API server ends each watch request after WATCH_TIMEOUT; the read timeout must not
        // end it first, nor the watches' own idle timeout (WATCH_TIMEOUT + 5 s).
        let watch = Duration::from_secs(u64::from(crate::reconcile::WATCH_TIMEOUT));
        assert!(READ_TIMEOUT >= watch + Duration::from_secs(10));
        assert!(READ_TIMEOUT > RESPONSE_DEADLINE);
    }

    fn request(method: http::Method, path: &str) -> http::Request<()> {
        http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_closed_fence_refuses_writes_but_not_reads_nor_the_lease() {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let server = tower::service_fn(move |_: http::Request<()>| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Ok::<_, BoxError>(()) }
        });
        let mut fenced = Fenced(Fence::closed()).layer(server);
        let write = request(
            http::Method::PATCH,
            "/apis/apps/v1/namespaces/a/deployments/web",
        );
        let err = (&mut fenced).oneshot(write).await.unwrap_err();
        assert!(err.is::<NotLeader>(), "{err}");
        let read = request(
            http::Method::GET,
            "/apis/apps/v1/namespaces/a/deployments/web",
        );
        (&mut fenced).oneshot(read).await.unwrap();
        let lease = request(
            http::Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/a/leases/kubundle",
        );
        (&mut fenced).oneshot(lease).await.unwrap();
        assert_eq!(sent.load(std::sync::atomic::Ordering::Relaxed), 2);
        let mut open =
            Fenced(Fence::open()).layer(tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, BoxError>(())
            }));
        let write = request(http::Method::POST, "/api/v1/namespaces/a/events");
        (&mut open).oneshot(write).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_fails_at_its_deadline() {
        let silent = tower::service_fn(|_: ()| std::future::pending::<Result<(), BoxError>>());
        let err = Deadline(Duration::from_secs(30))
            .layer(silent)
            .oneshot(())
            .await
            .unwrap_err();
        assert!(err.is::<NoResponse>(), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_passes_through() {
        let quick = tower::service_fn(|n: u32| async move {
            tokio::time::sleep(Duration::from_secs(29)).await;
            Ok::<_, BoxError>(n + 1)
        });
        let answer = Deadline(Duration::from_secs(30))
            .layer(quick)
            .oneshot(1)
            .await
            .unwrap();
        assert_eq!(answer, 2);
    }
}
