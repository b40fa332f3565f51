//! Kubernetes Events (`events.k8s.io/v1`), one per state change (docs/design.md §7).
//!
//! kube's `Recorder` keeps every Event it sent for six minutes, to count repeats as a series,
//! and scans that cache on each send: with one Event per new tenant that is one kept object
//! per tenant of a fleet. The operator sends an Event only when something changed, so there
//! is no series to count and nothing is kept: each Event is created on its own.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};

/// Sends Events as the operator's controller and instance.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
}

impl EventPublisher {
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
        }
    }

    /// Creates the Event about `regarding` in its namespace (`default` for cluster objects).
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let object = self.object(event, regarding, Timestamp::now());
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &object)
            .await
            .map(|_| ())
    }

    fn object(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let subject = regarding.name.as_deref().unwrap_or("object");
        K8sEvent {
            metadata: ObjectMeta {
                // The object's name and a random suffix, as kubectl and client-go name Events.
                name: Some(format!("{subject}.{:016x}", rand::random::<u64>())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> EventPublisher {
        // Building the object needs no connection; a client for an address nothing serves.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        EventPublisher::new(client, "ctl".to_owned(), "replica-a".to_owned())
    }

    #[tokio::test]
    async fn the_event_object_names_its_subject_reporter_and_time() {
        let regarding = ObjectReference {
            kind: Some("HelpdeskTenant".to_owned()),
            name: Some("acme".to_owned()),
            namespace: Some("shop".to_owned()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "SenderUnaligned".to_owned(),
            note: Some("not aligned".to_owned()),
            action: "CheckSender".to_owned(),
            secondary: None,
        };
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let publisher = publisher();
        let object = publisher.object(&event, &regarding, now);
        let name = object.metadata.name.clone().expect("name");
        assert!(
            name.starts_with("acme.") && name.len() == "acme.".len() + 16,
            "{name}"
        );
        assert_eq!(object.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(object.type_.as_deref(), Some("Warning"));
        assert_eq!(object.reason.as_deref(), Some("SenderUnaligned"));
        assert_eq!(object.action.as_deref(), Some("CheckSender"));
        assert_eq!(object.note.as_deref(), Some("not aligned"));
        assert_eq!(object.event_time, Some(MicroTime(now)));
        assert_eq!(object.regarding, Some(regarding.clone()));
        assert_eq!(object.reporting_controller.as_deref(), Some("ctl"));
        assert_eq!(object.reporting_instance.as_deref(), Some("replica-a"));
        assert!(object.series.is_none());
        // Two Events about the same object never share a name.
        let again = publisher.object(&event, &regarding, now);
        assert_ne!(again.metadata.name, object.metadata.name);
    }
}
