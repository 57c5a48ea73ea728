//! The names of one workload, as the attributes its points carry.
//!
//! Attribute keys are the ones each ecosystem's tools use, so that joins
//! work: `namespace`, `pod`, `container` as cAdvisor and kube-state-metrics
//! name them; `container_name`, `image`, `compose_project`,
//! `compose_service` for engine containers; `job_name`, `user`, `account`,
//! `partition`, `slurm_qos` for Slurm jobs (`qos` is a Kubernetes pod's
//! class, from its path); `vm_name` for virtual machines; and
//! `label_<name>` for the labels a user asks for.

/// Every attribute key a lookup may add (besides `label_*`): the names
/// that describe a workload without identifying its series, so that an
/// output keeps one series when they arrive after its first points.
pub const NAME_KEYS: [&str; 16] = [
    "container_name",
    "image",
    "compose_project",
    "compose_service",
    "podman_pod",
    "namespace",
    "pod",
    "container",
    "node",
    "job_name",
    "user",
    "account",
    "partition",
    "slurm_qos",
    "array_job_id",
    "array_task_id",
];

/// Whether `key` is a name a lookup adds ([`NAME_KEYS`] or `label_*`).
///
/// No name may share its key with an attribute that a cgroup's path gives
/// (`job_id`, `pod_uid`, `qos`...): an output that finds a series' earlier
/// points by leaving the names out would not find it.
pub fn is_name_key(key: &str) -> bool {
    key.starts_with("label_") || NAME_KEYS.contains(&key)
}

/// The names of one workload: `(attribute key, value)` pairs in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(pub Vec<(String, String)>);

impl Names {
    /// No names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key = value`, unless `value` is empty.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.0.push((key.into(), value));
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The attribute key of a user-listed label: `label_` and the label's name
/// with every character that is not a letter, a digit or `_` made `_`
/// (`app.kubernetes.io/name` → `label_app_kubernetes_io_name`), as
/// kube-state-metrics writes them.
pub fn label_key(label: &str) -> String {
    let mut key = String::from("label_");
    key.extend(label.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_not_names_and_labels_get_prometheus_keys() {
        let mut n = Names::new();
        n.push("pod", "web-1");
        n.push("namespace", "");
        assert_eq!(n.0, [("pod".to_owned(), "web-1".to_owned())]);
        assert_eq!(n.get("pod"), Some("web-1"));
        assert_eq!(
            label_key("app.kubernetes.io/name"),
            "label_app_kubernetes_io_name"
        );
    }
}
