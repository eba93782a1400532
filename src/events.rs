//! Kubernetes Events (events.k8s.io/v1) about AppBundles.
//!
//! kubundle publishes an Event only when something happens (children created or changed, a
//! condition transition), never on every reconcile, so each one is a single create. Unlike
//! kube-runtime's `Recorder`, nothing is cached to aggregate repeats into series: that cache holds
//! every Event for six minutes, which at thousands of AppBundles is most of the operator's memory.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

/// Normal or Warning, as Kubernetes spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Events sent at the same time, at most. Events are published in the background; when
/// thousands of AppBundles change at once, the rest wait their turn (a few hundred bytes each)
/// instead of each holding a request and its buffers open.
const IN_FLIGHT: usize = 16;

/// Creates Events as `reportingController` kubundle, `reportingInstance` this process.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Publisher {
            client,
            controller: controller.into(),
            instance: instance.into(),
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        }
    }

    /// Creates one Event about `regarding`, in its namespace.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let event = build(
            regarding,
            type_,
            reason,
            action,
            note,
            &self.controller,
            &self.instance,
            k8s_openapi::jiff::Timestamp::now(),
        );
        let ns = regarding.namespace.as_deref().unwrap_or("default");
        // (Stamped when it happened, sent when its turn comes.)
        let _turn = self.in_flight.acquire().await;
        Api::<Event>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// The Event object. Its name, like client-go's, is the object's name and the time in hex
/// nanoseconds: unique per object and instant, and it sorts by time.
/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[allow(clippy::too_many_arguments)]
fn build(
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
    controller: &str,
    instance: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> Event {
    let name = regarding.name.as_deref().unwrap_or("unknown");
    // The API server rejects notes longer than 1 KiB (bytes): cut on a character boundary.
    let note = truncate_utf8(note, 1024).to_string();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(type_.as_str().into()),
        reason: Some(reason.into()),
        action: Some(action.into()),
        note: Some(note),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(controller.into()),
        reporting_instance: Some(instance.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_the_object_and_the_reporter() {
        let regarding = ObjectReference {
            kind: Some("AppBundle".into()),
            name: Some("web".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        };
        let now = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let long = "x".repeat(2000);
        let e = build(
            &regarding,
            EventType::Warning,
            "NameConflict",
            "Reconcile",
            &long,
            "kubundle",
            "pod-1",
            now,
        );
        assert_eq!(e.metadata.name.as_deref(), Some("web.17979cfe362a0000"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("NameConflict"));
        assert_eq!(e.reporting_controller.as_deref(), Some("kubundle"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(e.note.unwrap().len(), 1024);
        assert_eq!(e.regarding, Some(regarding));
    }

    #[test]
    fn notes_are_cut_within_1024_bytes_on_a_character_boundary() {
        let long = "é".repeat(700); // 1400 bytes
        let cut = truncate_utf8(&long, 1024);
        assert_eq!(cut.len(), 1024);
        assert_eq!(truncate_utf8(&format!("x{long}"), 1024).len(), 1023);
        assert_eq!(truncate_utf8("short", 1024), "short");
    }
}
