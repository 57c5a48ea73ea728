//! Where this node's pods are read from and with what ([`PodSource`],
//! [`KubeSettings`]), the settings of an agent in a pod
//! ([`KubeSettings::in_cluster`]), and the checks that need no network
//! ([`KubeSettings::validate`], [`KubeError`]).

use std::path::PathBuf;
use std::time::Duration;

use super::SERVICE_ACCOUNT_DIR;

/// The RBAC rule the API server mode needs, as the warnings name it.
const API_RBAC: &str = "pods: get, list, watch";

/// The RBAC rule the kubelet mode needs, as the warnings name it.
const KUBELET_RBAC: &str = "nodes/proxy: get";

/// Where pods are read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PodSource {
    /// The API server at [`KubeSettings::api_url`]: a list, then a watch
    /// (RBAC `pods: get, list, watch`).
    #[default]
    ApiServer,
    /// The kubelet's `GET {url}/pods`, polled every
    /// [`KubeSettings::kubelet_poll_interval`] (RBAC `nodes/proxy: get`).
    Kubelet {
        /// The kubelet's base URL, e.g. `https://127.0.0.1:10250`.
        url: String,
    },
}

/// How to reach the pods of this node, and how patiently.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// The API server, e.g. `https://kubernetes.default.svc`
    /// ([`KubeSettings::in_cluster`] builds it from the service env vars).
    pub api_url: String,
    /// The bearer token, read at each request (tokens rotate); an empty
    /// path sends none (a kubelet's read-only port).
    pub token_file: PathBuf,
    /// The CA that signs the server's certificate; an empty path uses the
    /// system's trust store.
    pub ca_file: PathBuf,
    /// This node's name (`NODE_NAME` from the downward API). Required for
    /// the API server; for the kubelet, empty accepts every pod it lists.
    pub node_name: String,
    /// Labels copied as names, under the key [`crate::names::label_key`].
    pub pod_labels: Vec<String>,
    /// Where pods are read from.
    pub source: PodSource,
    /// Limit for connecting, for a response's headers and for a list's
    /// body (a watch's body is long-lived: see `watch_timeout`).
    pub request_timeout: Duration,
    /// How often the kubelet is asked (for [`PodSource::Kubelet`]).
    pub kubelet_poll_interval: Duration,
    /// A watch's `timeoutSeconds` (whole seconds, at least 1; up to a
    /// quarter more, at random, so that agents do not reconnect together).
    /// A watch still open `request_timeout` after it is cut as silent.
    pub watch_timeout: Duration,
    /// How long a deleted pod, or a container id a restart replaced, stays
    /// answerable (its last points may still be on their way).
    pub deleted_grace: Duration,
    /// The first wait after a failure; it doubles at each failure in a row.
    pub retry_min: Duration,
    /// The longest wait between tries.
    pub retry_max: Duration,
    /// The wait after a refused or unreadable token (a person must act).
    pub auth_retry: Duration,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            api_url: "https://kubernetes.default.svc".into(),
            token_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("token"),
            ca_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("ca.crt"),
            node_name: String::new(),
            pod_labels: Vec::new(),
            source: PodSource::ApiServer,
            request_timeout: Duration::from_secs(10),
            kubelet_poll_interval: Duration::from_secs(10),
            watch_timeout: Duration::from_secs(300),
            deleted_grace: Duration::from_secs(300),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            auth_retry: Duration::from_secs(60),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// An environment variable that a pod gets from Kubernetes is missing.
    #[error("{var} is not set (not running in a pod?): {fix}")]
    MissingEnv {
        /// The variable.
        var: &'static str,
        /// What sets it.
        fix: &'static str,
    },
    /// A setting's value is unusable.
    #[error("kubernetes setting {key}: {reason}")]
    Invalid {
        /// The field of [`KubeSettings`].
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl KubeSettings {
    /// The settings of an agent running in a pod: the API server from
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, the node from
    /// `NODE_NAME`, the service account's token and CA, defaults elsewhere.
    pub fn in_cluster() -> Result<Self, KubeError> {
        Self::in_cluster_with(|var| std::env::var(var).ok())
    }

    /// [`KubeSettings::in_cluster`] with the environment read through `env`
    /// (tests give their own).
    pub fn in_cluster_with(env: impl Fn(&str) -> Option<String>) -> Result<Self, KubeError> {
        let get = |var: &'static str, fix: &'static str| {
            env(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(KubeError::MissingEnv { var, fix })
        };
        let service = "Kubernetes sets it in every pod";
        let host = get("KUBERNETES_SERVICE_HOST", service)?;
        let port = get("KUBERNETES_SERVICE_PORT", service)?;
        let node_name = get(
            "NODE_NAME",
            "give the agent's container `env: [{name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]`",
        )?;
        // An IPv6 address needs brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Self {
            api_url: format!("https://{host}:{port}"),
            node_name,
            ..Self::default()
        })
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), KubeError> {
        let invalid = |key, reason: &str| {
            Err(KubeError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        match &self.source {
            PodSource::ApiServer => {
                check_url("api_url", &self.api_url)?;
                if self.node_name.trim().is_empty() {
                    return invalid(
                        "node_name",
                        "empty: the watch must be limited to this node's pods (set NODE_NAME from the downward API's spec.nodeName)",
                    );
                }
            }
            PodSource::Kubelet { url } => {
                check_url("source.url", url)?;
                if self.kubelet_poll_interval.is_zero() {
                    return invalid("kubelet_poll_interval", "must be more than 0");
                }
            }
        }
        for (key, value) in [
            ("request_timeout", self.request_timeout),
            ("retry_min", self.retry_min),
            ("auth_retry", self.auth_retry),
        ] {
            if value.is_zero() {
                return invalid(key, "must be more than 0");
            }
        }
        if self.watch_timeout < Duration::from_secs(1) {
            return invalid("watch_timeout", "must be at least 1s");
        }
        if self.retry_max < self.retry_min {
            return invalid("retry_max", "must be at least retry_min");
        }
        Ok(())
    }

    pub(super) fn base_url(&self) -> &str {
        match &self.source {
            PodSource::ApiServer => self.api_url.trim_end_matches('/'),
            PodSource::Kubelet { url } => url.trim_end_matches('/'),
        }
    }

    pub(super) fn rbac(&self) -> &'static str {
        match self.source {
            PodSource::ApiServer => API_RBAC,
            PodSource::Kubelet { .. } => KUBELET_RBAC,
        }
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), KubeError> {
    let invalid = |reason: String| Err(KubeError::Invalid { key, reason });
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return invalid(format!("`{url}` is not a URL"));
    };
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
        return invalid(format!("`{url}` must start with https:// or http://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return invalid(format!("`{url}` has no host"));
    }
    Ok(())
}
