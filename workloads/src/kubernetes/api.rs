//! The Kubernetes API's JSON, only the fields used (a pod's metadata,
//! node, container statuses; a list's and a bookmark's `resourceVersion`;
//! a `Status`; a watch event), and the streaming decoding of a PodList that
//! keeps only this node's pods ([`PodFilter`], [`ListSeed`]): another
//! node's pod is dropped as soon as it is parsed, so memory follows this
//! node's pods whatever a server sends.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::index::{container_id, PodInfo};

// The API's JSON: only the fields used; a null where an object or list is
// expected reads as empty (the API omits empty fields, some servers write null).

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
pub(super) struct Pod {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    spec: PodSpec,
    #[serde(default, deserialize_with = "nullable")]
    status: PodStatus,
}

#[derive(Deserialize, Default)]
pub(super) struct ObjectMeta {
    #[serde(default, deserialize_with = "nullable")]
    uid: String,
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    labels: HashMap<String, String>,
    #[serde(rename = "resourceVersion", default, deserialize_with = "nullable")]
    pub(super) resource_version: String,
}

#[derive(Deserialize, Default)]
struct PodSpec {
    #[serde(rename = "nodeName", default, deserialize_with = "nullable")]
    node_name: String,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    #[serde(rename = "containerStatuses", default, deserialize_with = "nullable")]
    containers: Vec<ContainerStatus>,
    #[serde(
        rename = "initContainerStatuses",
        default,
        deserialize_with = "nullable"
    )]
    init_containers: Vec<ContainerStatus>,
    #[serde(
        rename = "ephemeralContainerStatuses",
        default,
        deserialize_with = "nullable"
    )]
    ephemeral_containers: Vec<ContainerStatus>,
}

#[derive(Deserialize, Default)]
struct ContainerStatus {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(rename = "containerID", default, deserialize_with = "nullable")]
    container_id: String,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default, deserialize_with = "nullable")]
    resource_version: String,
}

/// A `Status` object (an error's body, an `ERROR` event's object).
#[derive(Deserialize, Default)]
pub(super) struct Status {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) code: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) reason: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) message: String,
}

#[derive(Deserialize)]
pub(super) struct WatchEvent {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) object: serde_json::Value,
}

/// Which pods are kept and what is copied of them.
pub(super) struct PodFilter {
    /// Empty: every pod (the kubelet's own list).
    pub(super) node: String,
    pub(super) labels: Vec<String>,
}

pub(super) enum Skip {
    /// No uid: not a pod the index can key.
    NoUid,
    /// Another node's pod (its uid).
    OtherNode(String),
}

impl PodFilter {
    pub(super) fn info(&self, pod: Pod) -> Result<PodInfo, Skip> {
        let Pod {
            metadata,
            spec,
            status,
        } = pod;
        if metadata.uid.is_empty() {
            return Err(Skip::NoUid);
        }
        if !self.node.is_empty() && spec.node_name != self.node {
            return Err(Skip::OtherNode(metadata.uid));
        }
        let labels = self
            .labels
            .iter()
            .filter_map(|l| metadata.labels.get(l).map(|v| (l.clone(), v.clone())))
            .collect();
        let containers = status
            .containers
            .into_iter()
            .chain(status.init_containers)
            .chain(status.ephemeral_containers)
            .filter_map(|c| container_id(&c.container_id).map(|id| (id.to_owned(), c.name)))
            .collect();
        Ok(PodInfo {
            uid: metadata.uid,
            name: metadata.name,
            namespace: metadata.namespace,
            node: spec.node_name,
            labels,
            containers,
        })
    }
}

/// A list read: this node's pods only (others are dropped as they are parsed).
#[derive(Default)]
pub(super) struct Listed {
    pub(super) resource_version: String,
    pub(super) pods: Vec<PodInfo>,
    pub(super) ignored: u64,
}

/// Parses a PodList, keeping only the filter's pods.
#[derive(Clone, Copy)]
pub(super) struct ListSeed<'a> {
    pub(super) filter: &'a PodFilter,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Listed;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Listed, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Listed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PodList object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Listed, A::Error> {
        let mut listed = Listed::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metadata" => {
                    let meta: Option<ListMeta> = map.next_value()?;
                    listed.resource_version = meta.unwrap_or_default().resource_version;
                }
                "items" => {
                    let (pods, ignored) = map.next_value_seed(ItemsSeed {
                        filter: self.filter,
                    })?;
                    listed.pods = pods;
                    listed.ignored = ignored;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(listed)
    }
}

/// Parses `items`, one pod at a time, dropping other nodes' pods at once.
#[derive(Clone, Copy)]
struct ItemsSeed<'a> {
    filter: &'a PodFilter,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = (Vec<PodInfo>, u64);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = (Vec<PodInfo>, u64);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of pods")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), 0))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), 0))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut pods = Vec::new();
        let mut ignored = 0;
        while let Some(pod) = seq.next_element::<Pod>()? {
            match self.filter.info(pod) {
                Ok(info) => pods.push(info),
                Err(_) => ignored += 1,
            }
        }
        Ok((pods, ignored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_keeps_only_this_nodes_pods_and_reads_nulls_as_empty() {
        let filter = PodFilter {
            node: "n1".into(),
            labels: vec!["app".into()],
        };
        let json = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"42"},"items":[
            {"metadata":{"uid":"a","name":"a","namespace":"x","labels":{"app":"web","other":"1"}},"spec":{"nodeName":"n1"},
             "status":{"containerStatuses":[{"name":"c","containerID":"containerd://1111"},{"name":"w"}],"initContainerStatuses":null}},
            {"metadata":{"uid":"b","labels":null},"spec":{"nodeName":"n2"},"status":{}}
        ]}"#;
        let mut de = serde_json::Deserializer::from_str(json);
        let listed = ListSeed { filter: &filter }.deserialize(&mut de).unwrap();
        assert_eq!(listed.resource_version, "42");
        assert_eq!(listed.ignored, 1);
        assert_eq!(listed.pods.len(), 1);
        assert_eq!(
            listed.pods[0].labels,
            [("app".to_owned(), "web".to_owned())]
        );
        assert_eq!(
            listed.pods[0].containers,
            [("1111".to_owned(), "c".to_owned())]
        );
        let empty = r#"{"metadata":{},"items":null}"#;
        let mut de = serde_json::Deserializer::from_str(empty);
        let listed = ListSeed { filter: &filter }.deserialize(&mut de).unwrap();
        assert!(listed.pods.is_empty());
    }
}
