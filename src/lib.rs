//! kubundle: a Kubernetes operator that turns one `AppBundle` into one Deployment and one Service.
