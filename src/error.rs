//! The one error type of the reconciler. Each variant has a short stable label, used as the
//! `reason` label of `kubundle_reconcile_errors_total` and in logs.

/// Errors that make a reconcile fail and retry with backoff. Conditions that need a person (a name
/// conflict, a refused write) are not errors: they are reported in status and Events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Api(#[source] kube::Error),
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Every value [`Error::label`] returns.
    pub const LABELS: [&'static str; 6] = [
        "conflict",
        "throttled",
        "api_server_error",
        "api_rejected",
        "api_unreachable",
        "serialize",
    ];

    /// The API server could not be reached at all (no HTTP answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Api(e) if !matches!(e, kube::Error::Api(_)))
    }

    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Api(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Api(kube::Error::Api(status)) if status.code == 429 => "throttled",
            Error::Api(kube::Error::Api(status)) if status.code >= 500 => "api_server_error",
            Error::Api(kube::Error::Api(_)) => "api_rejected",
            Error::Api(_) => "api_unreachable",
            Error::Serialize { .. } => "serialize",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Api(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
