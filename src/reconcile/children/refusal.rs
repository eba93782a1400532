//! The API server's refusals of a child's write, told apart: definite (only a new spec helps),
//! one that may lift (RBAC, admission policy), a namespace being deleted, or transient.

/// Whether the API server's refusal is definite: the same request will be refused again until
/// the AppBundle (or something else a person controls) changes. Transient failures (the server
/// unreachable, overloaded, timing out, a conflict) are retried with backoff instead.
pub fn is_definite_refusal(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => match s.code {
            408 | 409 | 429 => false,
            400..=499 => true,
            // Server-side apply reports an object it cannot merge (duplicate list keys, values
            // that do not parse) as an internal error; those are about the object, not the server.
            500 => is_invalid_object_message(&s.message),
            _ => false,
        },
        _ => false,
    }
}

/// A refusal that may lift without the AppBundle changing: RBAC (403), or a validating admission
/// policy or webhook (422 or 403 in the admission's words), which their owners may change. The API
/// server's own validation of the object (422 otherwise) only a new spec can answer.
pub fn refusal_may_lift(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 403
                || (s.code == 422
                    && ["ValidatingAdmissionPolicy", "admission webhook"]
                        .iter()
                        .any(|m| s.message.contains(m)))
        }
        _ => false,
    }
}

/// The API server refused to create an object because its namespace is being deleted.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

fn is_invalid_object_message(message: &str) -> bool {
    [
        "failed to create typed patch object",
        "failed to create typed live object",
        "duplicate entries for key",
        "quantities must match the regular expression",
        "unable to parse quantity",
        "cannot convert",
    ]
    .iter()
    .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure(message, "").with_code(code)))
    }

    #[test]
    fn refusals_are_told_from_transient_failures() {
        assert!(is_definite_refusal(&api_error(422, "invalid")));
        assert!(is_definite_refusal(&api_error(403, "forbidden")));
        assert!(is_definite_refusal(&api_error(
            500,
            "failed to create typed patch object (x/y; apps/v1, Kind=Deployment): .spec.template.spec.containers[name=\"y\"].env: duplicate entries for key [name=\"A\"]"
        )));
        assert!(!is_definite_refusal(&api_error(
            500,
            "etcdserver: request timed out"
        )));
        assert!(!is_definite_refusal(&api_error(429, "too many requests")));
        assert!(!is_definite_refusal(&api_error(409, "conflict")));
        assert!(!is_definite_refusal(&api_error(503, "unavailable")));
        assert!(!is_definite_refusal(&api_error(504, "timeout")));
    }

    #[test]
    fn a_terminating_namespace_is_told_from_other_refusals() {
        let mut status = Status::failure("forbidden", "Forbidden").with_code(403);
        assert!(!is_namespace_terminating(&kube::Error::Api(Box::new(
            status.clone()
        ))));
        status.details = Some(kube::core::response::StatusDetails {
            causes: vec![kube::core::response::StatusCause {
                reason: "NamespaceTerminating".into(),
                message: "namespace x is being terminated".into(),
                field: "metadata.namespace".into(),
            }],
            name: "web".into(),
            group: "apps".into(),
            kind: "deployments".into(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        assert!(is_namespace_terminating(&kube::Error::Api(Box::new(
            status
        ))));
    }
}
