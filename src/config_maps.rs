//! What the operator keeps of its tenants' ConfigMaps (docs/design.md §8 "Watches, caches,
//! readiness, shutdown"): the owned-ConfigMap watch applied to a map of compact copies, which
//! reconciles read instead of GETting. A copy holds what reconcile compares and nothing else:
//! the resourceVersion a write is conditional on, the controller's uid, the labels and the
//! owned keys (a kube `ConfigMap` in a reflector store costs about a kilobyte more per
//! tenant, mostly in `BTreeMap` nodes).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::mail_settings::keys;

/// One ConfigMap as reconcile needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedConfigMap {
    pub name: String,
    pub resource_version: Option<String>,
    /// The uid of the owner reference marked `controller`.
    pub controller_uid: Option<String>,
    labels: Box<[(String, String)]>,
    /// The owned keys' values, in the order of [`keys::ALL`].
    data: [Option<String>; keys::ALL.len()],
}

impl OwnedConfigMap {
    pub fn from_object(cm: &ConfigMap) -> Self {
        let controller_uid = cm
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| r.uid.clone());
        let labels = cm
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self {
            name: cm.metadata.name.clone().unwrap_or_default(),
            resource_version: cm.metadata.resource_version.clone(),
            controller_uid,
            labels,
            data: keys::ALL.map(|key| cm.data.as_ref().and_then(|d| d.get(key)).cloned()),
        }
    }

    /// The value of one owned key.
    pub fn value(&self, key: &str) -> Option<&str> {
        let index = keys::ALL.iter().position(|k| *k == key)?;
        self.data[index].as_deref()
    }

    /// Whether the owned keys hold exactly `data`'s values for them.
    pub fn holds(&self, data: &BTreeMap<String, String>) -> bool {
        keys::ALL
            .iter()
            .all(|key| self.value(key) == data.get(*key).map(String::as_str))
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Key = (String, String);

fn key_of(cm: &ConfigMap) -> Option<Key> {
    Some((cm.metadata.namespace.clone()?, cm.metadata.name.clone()?))
}

#[derive(Default)]
struct State {
    objects: HashMap<Key, Arc<OwnedConfigMap>>,
    /// A list in progress: it replaces `objects` once complete.
    listing: Option<HashMap<Key, Arc<OwnedConfigMap>>>,
}

/// The owned ConfigMaps of the running watch.
pub struct ConfigMapCache {
    state: RwLock<State>,
    ready: watch::Sender<bool>,
}

impl Default for ConfigMapCache {
    fn default() -> Self {
        Self {
            state: RwLock::new(State::default()),
            ready: watch::Sender::new(false),
        }
    }
}

impl ConfigMapCache {
    /// Applies one watch event, as kube's reflector does: a (re)list is collected aside and
    /// replaces the whole map when it is complete.
    pub fn apply(&self, event: &watcher::Event<ConfigMap>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(cm) => {
                if let Some(key) = key_of(cm) {
                    state
                        .objects
                        .insert(key, Arc::new(OwnedConfigMap::from_object(cm)));
                }
            }
            watcher::Event::Delete(cm) => {
                if let Some(key) = key_of(cm) {
                    state.objects.remove(&key);
                }
            }
            watcher::Event::Init => state.listing = Some(HashMap::new()),
            watcher::Event::InitApply(cm) => {
                if let (Some(listing), Some(key)) = (state.listing.as_mut(), key_of(cm)) {
                    listing.insert(key, Arc::new(OwnedConfigMap::from_object(cm)));
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = state.listing.take() {
                    state.objects = listing;
                }
                drop(state);
                self.ready.send_replace(true);
            }
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<OwnedConfigMap>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Whether the watch has delivered its first complete list.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits for the first complete list.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Forgets everything: the watch feeding it has stopped (a term ended).
    pub fn reset(&self) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = State::default();
        self.ready.send_replace(false);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .objects
            .len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn cm(name: &str, version: &str, mode: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                resource_version: Some(version.to_owned()),
                labels: Some(BTreeMap::from([("bench".to_owned(), "a".to_owned())])),
                owner_references: Some(vec![
                    OwnerReference {
                        uid: "other".to_owned(),
                        ..OwnerReference::default()
                    },
                    OwnerReference {
                        uid: "tenant-uid".to_owned(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    },
                ]),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (keys::SENDER_MODE.to_owned(), mode.to_owned()),
                ("someone-else".to_owned(), "x".to_owned()),
            ])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn keeps_what_reconcile_compares() {
        let owned = OwnedConfigMap::from_object(&cm("a", "7", "tenant"));
        assert_eq!(owned.name, "a");
        assert_eq!(owned.resource_version.as_deref(), Some("7"));
        assert_eq!(owned.controller_uid.as_deref(), Some("tenant-uid"));
        assert_eq!(owned.label("bench"), Some("a"));
        assert_eq!(owned.label("other"), None);
        assert_eq!(owned.value(keys::SENDER_MODE), Some("tenant"));
        assert_eq!(owned.value("someone-else"), None, "only the owned keys");
        let mut data = BTreeMap::from([(keys::SENDER_MODE.to_owned(), "tenant".to_owned())]);
        assert!(owned.holds(&data));
        data.insert(keys::FROM.to_owned(), "a@b.example".to_owned());
        assert!(!owned.holds(&data), "a key the ConfigMap lacks");
    }

    #[test]
    fn a_list_replaces_the_map_when_complete_and_makes_it_ready() {
        let cache = ConfigMapCache::default();
        assert!(!cache.is_ready());
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(cm("a", "1", "tenant")));
        assert!(
            cache.get("ns", "a").is_none(),
            "not before the list is complete"
        );
        cache.apply(&watcher::Event::InitDone);
        assert!(cache.is_ready());
        assert_eq!(
            cache.get("ns", "a").map(|c| c.name.clone()).as_deref(),
            Some("a")
        );

        cache.apply(&watcher::Event::Apply(cm("b", "2", "fallback")));
        cache.apply(&watcher::Event::Apply(cm("a", "3", "fallback")));
        assert_eq!(
            cache
                .get("ns", "a")
                .and_then(|c| c.resource_version.clone()),
            Some("3".to_owned())
        );
        cache.apply(&watcher::Event::Delete(cm("b", "4", "fallback")));
        assert!(cache.get("ns", "b").is_none());

        // A relist (after a 410, say) drops what it no longer lists, and stays ready.
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(cm("c", "5", "tenant")));
        assert!(cache.is_ready());
        assert!(
            cache.get("ns", "a").is_some(),
            "the old map serves until the list is done"
        );
        cache.apply(&watcher::Event::InitDone);
        assert!(cache.get("ns", "a").is_none());
        assert!(cache.get("ns", "c").is_some());
        assert_eq!(cache.len(), 1);

        cache.reset();
        assert!(!cache.is_ready());
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn waiting_ends_with_the_first_list() {
        let cache = Arc::new(ConfigMapCache::default());
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { cache.wait_until_ready().await }
        });
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("ready within 5 s")
            .expect("the waiter ran");
    }
}
