//! The `names` settings of a plugin that names workloads (the cgroups
//! plugin's `[plugins.cgroups.names]`), and the resolver they make.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cri::{CriLookup, CriSettings};
use crate::engine::{is_socket, EngineLookup, EngineSettings};
use crate::kubernetes::{KubeError, KubeLookup, KubeSettings, PodSource, SERVICE_ACCOUNT_DIR};
use crate::resolver::{Lookup, Resolver};
use crate::slurm::{SlurmLookup, SlurmSettings};

/// Where pod names come from (`kubernetes` in the `names` settings).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum KubernetesMode {
    /// The API server when the agent runs in a pod (`KUBERNETES_SERVICE_HOST`
    /// is set), else off.
    #[default]
    Auto,
    /// The API server: a list and a watch of this node's pods (RBAC
    /// `pods: get, list, watch`).
    ApiServer,
    /// The kubelet's `/pods`, polled (RBAC `nodes/proxy: get`).
    Kubelet,
    /// No pod names.
    Off,
}

/// What the Kubernetes settings come to on this machine.
#[derive(Debug)]
enum KubePlan {
    /// No pod names; the info line that says why, if any.
    Off(Option<String>),
    /// Pods read with these settings.
    On(Box<KubeSettings>),
    /// Asked for but unusable: the one warning line (what is missing and
    /// the fix).
    Unusable(String),
}

/// Where workload names come from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NamesConfig {
    /// Look names up at all (default true). Off: workloads keep the ids of
    /// their cgroup paths, exactly as without any manager.
    pub enabled: bool,
    /// Docker's API socket.
    pub docker_socket: PathBuf,
    /// Podman's API sockets, tried in order; `{uid}` is the uid of a
    /// rootless container's owner.
    pub podman_sockets: Vec<String>,
    /// Container labels copied as `label_<name>` attributes (e.g. `["app"]`).
    pub container_labels: Vec<String>,
    /// How long one request to an engine (or a CRI runtime) may take.
    #[serde(with = "alumet::config::duration")]
    pub engine_timeout: Duration,
    /// containerd's socket, whose CRI names its containers (those of
    /// Kubernetes pods when `kubernetes` is off).
    pub containerd_socket: PathBuf,
    /// CRI-O's socket, likewise.
    pub crio_socket: PathBuf,
    /// Name Slurm jobs (default true).
    pub slurm: bool,
    /// The `squeue` asked when no process of a job says its names; `""`:
    /// never run it.
    pub squeue: String,
    /// How long `squeue` may take.
    #[serde(with = "alumet::config::duration")]
    pub squeue_timeout: Duration,
    /// Name Kubernetes pods and their containers: "auto" (default: from the
    /// API server when the agent runs in a pod, i.e. when
    /// `KUBERNETES_SERVICE_HOST` is set, else off), "api_server" (a list and
    /// a watch of this node's pods; RBAC `pods: get, list, watch`),
    /// "kubelet" (the kubelet's `/pods`, polled; RBAC `nodes/proxy: get`) or
    /// "off".
    pub kubernetes: KubernetesMode,
    /// This node's name, whose pods are read; "" (default): the `NODE_NAME`
    /// environment variable (give it the downward API's `spec.nodeName`).
    pub node_name: String,
    /// Pod labels copied as `label_<name>` attributes (e.g.
    /// `["app", "app.kubernetes.io/name"]`).
    pub pod_labels: Vec<String>,
    /// The API server's URL; "" (default): `https://` the
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` that every
    /// pod has.
    pub api_url: String,
    /// The service account token sent to the API server or the kubelet,
    /// read again at each request (tokens rotate; never logged); "" sends
    /// none.
    pub token_file: PathBuf,
    /// The CA that signs the API server's (or the kubelet's) certificate;
    /// "": the system's trust store.
    pub ca_file: PathBuf,
    /// The kubelet's URL, for kubernetes = "kubelet" (the service account
    /// needs `nodes/proxy: get`; 127.0.0.1 needs the agent in the host's
    /// network).
    pub kubelet_url: String,
}

/// The kubelet's URL when the agent shares the host's network.
const DEFAULT_KUBELET_URL: &str = "https://127.0.0.1:10250";

impl Default for NamesConfig {
    fn default() -> Self {
        let engine = EngineSettings::default();
        let slurm = SlurmSettings::default();
        let cri = CriSettings::default();
        Self {
            enabled: true,
            docker_socket: engine.docker_socket,
            podman_sockets: engine.podman_sockets,
            container_labels: engine.labels,
            engine_timeout: engine.timeout,
            containerd_socket: cri.containerd_socket,
            crio_socket: cri.crio_socket,
            slurm: true,
            squeue: slurm.squeue,
            squeue_timeout: slurm.timeout,
            kubernetes: KubernetesMode::Auto,
            node_name: String::new(),
            pod_labels: Vec::new(),
            api_url: String::new(),
            token_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("token"),
            ca_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("ca.crt"),
            kubelet_url: DEFAULT_KUBELET_URL.to_owned(),
        }
    }
}

impl NamesConfig {
    /// Checks every value against its range; keys are named as in the
    /// cgroups plugin's section (`names.engine_timeout`).
    pub fn validate(&self) -> Result<(), alumet::config::ConfigError> {
        use alumet::limits::TIMEOUT;
        TIMEOUT.check("names.engine_timeout", self.engine_timeout)?;
        TIMEOUT.check("names.squeue_timeout", self.squeue_timeout)
    }

    /// The lookups these settings ask for, with `proc_root` for the
    /// processes' environments. Each says in one line whether it can work
    /// here; none is left out for a manager that is not running yet (its
    /// socket is tried per workload). Kubernetes starts its pod watcher
    /// here, which stops when its lookup is dropped (with the resolver);
    /// Kubernetes settings that cannot work here (no node name, no token)
    /// are one warning and no pod names, never a failure.
    pub fn lookups(&self, proc_root: PathBuf) -> Vec<Arc<dyn Lookup>> {
        let mut lookups: Vec<Arc<dyn Lookup>> = Vec::new();
        if !self.enabled {
            log::info!("names: off; workloads keep the ids of their cgroup paths");
            return lookups;
        }
        let present: Vec<String> = std::iter::once(self.docker_socket.display().to_string())
            .chain(
                self.podman_sockets
                    .iter()
                    .filter(|s| !s.contains("{uid}"))
                    .cloned(),
            )
            .chain([&self.containerd_socket, &self.crio_socket].map(|p| p.display().to_string()))
            .filter(|s| is_socket(std::path::Path::new(s)))
            .collect();
        log::info!(
            "names: containers from the engines' sockets ({})",
            if present.is_empty() {
                "none listening now; tried again per container".to_owned()
            } else {
                format!("listening: {}", present.join(", "))
            }
        );
        lookups.push(Arc::new(EngineLookup::new(EngineSettings {
            docker_socket: self.docker_socket.clone(),
            podman_sockets: self.podman_sockets.clone(),
            labels: self.container_labels.clone(),
            timeout: self.engine_timeout,
        })));
        if self.slurm {
            lookups.push(Arc::new(SlurmLookup::new(SlurmSettings {
                proc_root,
                squeue: self.squeue.clone(),
                timeout: self.squeue_timeout,
            })));
        }
        match self.kube_plan(|var| std::env::var(var).ok()) {
            KubePlan::Off(why) => {
                if let Some(why) = why {
                    log::info!("{why}");
                }
            }
            KubePlan::Unusable(warning) => log::warn!("{warning}"),
            KubePlan::On(settings) => {
                let what = match &settings.source {
                    PodSource::ApiServer => format!(
                        "the API server {} (RBAC `pods: get, list, watch`)",
                        settings.api_url
                    ),
                    PodSource::Kubelet { url } => {
                        format!("the kubelet {url} (RBAC `nodes/proxy: get`)")
                    }
                };
                let node = if settings.node_name.is_empty() {
                    "the kubelet's own".to_owned()
                } else {
                    format!("node {}'s", settings.node_name)
                };
                match KubeLookup::watching(*settings) {
                    Ok(kube) => {
                        log::info!("names: {node} pods and their containers from {what}");
                        lookups.push(Arc::new(kube));
                    }
                    Err(e) => log::warn!(
                        "names: cannot start the Kubernetes pod watcher ({e}); pods keep their uids"
                    ),
                }
            }
        }
        // After Kubernetes: a pod's container is named by the API first.
        lookups.push(Arc::new(CriLookup::new(CriSettings {
            containerd_socket: self.containerd_socket.clone(),
            crio_socket: self.crio_socket.clone(),
            timeout: self.engine_timeout,
        })));
        lookups
    }

    /// The Kubernetes settings, with the environment read through `env`.
    fn kube_plan(&self, env: impl Fn(&str) -> Option<String>) -> KubePlan {
        let env = |var: &str| {
            env(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let unusable = |what: String| {
            KubePlan::Unusable(format!(
                "names: no Kubernetes pod names: {what}; pods keep their uids"
            ))
        };
        let source = match self.kubernetes {
            KubernetesMode::Off => return KubePlan::Off(None),
            KubernetesMode::Auto if env("KUBERNETES_SERVICE_HOST").is_none() => {
                return KubePlan::Off(Some(
                    "names: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set): no pod names (kubernetes = \"api_server\" or \"kubelet\" names them anyway)".to_owned(),
                ))
            }
            KubernetesMode::Auto | KubernetesMode::ApiServer => PodSource::ApiServer,
            KubernetesMode::Kubelet => PodSource::Kubelet {
                url: self.kubelet_url.trim().to_owned(),
            },
        };
        let node_name = match self.node_name.trim() {
            "" => env("NODE_NAME").unwrap_or_default(),
            name => name.to_owned(),
        };
        if node_name.is_empty() && source == PodSource::ApiServer {
            return unusable(
                "this node's name is unknown: give the agent's container `env: [{name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]`, or set node_name".to_owned(),
            );
        }
        let mut settings = match (&source, self.api_url.trim()) {
            (PodSource::ApiServer, "") => {
                let in_cluster = KubeSettings::in_cluster_with(|var| match var {
                    "NODE_NAME" => Some(node_name.clone()),
                    var => env(var),
                });
                match in_cluster {
                    Ok(s) => s,
                    Err(KubeError::MissingEnv { var, .. }) => {
                        return unusable(format!(
                            "{var} is not set (not running in a pod?): set api_url"
                        ))
                    }
                    Err(e) => return unusable(e.to_string()),
                }
            }
            (_, url) => KubeSettings {
                api_url: url.to_owned(),
                ..KubeSettings::default()
            },
        };
        settings.node_name = node_name;
        settings.source = source;
        settings.pod_labels = self.pod_labels.clone();
        settings.token_file = self.token_file.clone();
        settings.ca_file = self.ca_file.clone();
        // Opened, not read: the token's content never reaches a message.
        for (key, path, fix) in [
            (
                "token_file",
                &settings.token_file,
                "mount the service account token (automountServiceAccountToken: true) or set token_file",
            ),
            (
                "ca_file",
                &settings.ca_file,
                "mount the service account's ca.crt or set ca_file (\"\": the system's trust store)",
            ),
        ] {
            if path.as_os_str().is_empty() {
                continue;
            }
            if let Err(e) = std::fs::File::open(path) {
                return unusable(format!(
                    "cannot open {key} {} ({e}): {fix}",
                    path.display()
                ));
            }
        }
        match settings.validate() {
            Ok(()) => KubePlan::On(Box::new(settings)),
            // The settings' name for the kubelet's URL is not the config's.
            Err(KubeError::Invalid {
                key: "source.url",
                reason,
            }) => unusable(format!("kubelet_url: {reason}")),
            Err(e) => unusable(e.to_string()),
        }
    }

    /// A resolver with these settings' lookups.
    pub fn resolver(&self, proc_root: PathBuf) -> Resolver {
        Resolver::new(self.lookups(proc_root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alumet::config::{deserialize_config, serialize_config, ConfigTable};

    fn parse(text: &str) -> Result<NamesConfig, String> {
        let table: ConfigTable = text.parse().map_err(|e| format!("{e}"))?;
        deserialize_config(table).map_err(|e| e.to_string())
    }

    #[test]
    fn kubernetes_keys_are_read_and_unknown_keys_refused() {
        let config = parse(
            r#"
            kubernetes = "kubelet"
            node_name = "worker-3"
            pod_labels = ["app", "app.kubernetes.io/name"]
            api_url = "https://10.96.0.1:443"
            token_file = "/etc/alumet/token"
            ca_file = ""
            kubelet_url = "https://10.0.0.7:10250"
            "#,
        )
        .unwrap();
        assert_eq!(config.kubernetes, KubernetesMode::Kubelet);
        assert_eq!(config.node_name, "worker-3");
        assert_eq!(config.pod_labels, ["app", "app.kubernetes.io/name"]);
        assert_eq!(config.api_url, "https://10.96.0.1:443");
        assert_eq!(config.token_file, PathBuf::from("/etc/alumet/token"));
        assert_eq!(config.ca_file, PathBuf::new());
        assert_eq!(config.kubelet_url, "https://10.0.0.7:10250");
        assert_eq!(
            config.slurm,
            NamesConfig::default().slurm,
            "others keep their defaults"
        );
        for mode in ["auto", "api_server", "off"] {
            assert!(parse(&format!("kubernetes = \"{mode}\"")).is_ok(), "{mode}");
        }
        let err = parse("kubernetes = \"yes\"").unwrap_err();
        assert!(err.contains("api_server"), "{err}");
        let err = parse("kubelet_port = 10250").unwrap_err();
        assert!(err.contains("kubelet_port"), "{err}");
    }

    #[test]
    fn the_default_round_trips_and_reads_the_service_account() {
        let default = NamesConfig::default();
        assert_eq!(default.kubernetes, KubernetesMode::Auto);
        assert_eq!(
            default.token_file,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
        );
        assert_eq!(
            default.ca_file,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
        );
        assert_eq!(default.kubelet_url, "https://127.0.0.1:10250");
        let table = serialize_config(&default).unwrap();
        assert_eq!(table["kubernetes"].as_str(), Some("auto"));
        let back: NamesConfig = deserialize_config(table).unwrap();
        assert_eq!(back, default);
    }

    /// A config whose token and CA exist (the token's content is a secret).
    fn with_files(dir: &tempfile::TempDir, kubernetes: KubernetesMode) -> NamesConfig {
        let token_file = dir.path().join("token");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&token_file, "s3cr3t-token").unwrap();
        std::fs::write(&ca_file, "-----BEGIN CERTIFICATE-----").unwrap();
        NamesConfig {
            kubernetes,
            pod_labels: vec!["app".into()],
            token_file,
            ca_file,
            ..NamesConfig::default()
        }
    }

    fn in_pod(var: &str) -> Option<String> {
        match var {
            "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".into()),
            "KUBERNETES_SERVICE_PORT" => Some("443".into()),
            "NODE_NAME" => Some("worker-3".into()),
            _ => None,
        }
    }

    fn warning(plan: KubePlan) -> String {
        match plan {
            KubePlan::Unusable(w) => w,
            other => panic!("not unusable: {other:?}"),
        }
    }

    #[test]
    fn auto_is_the_api_server_in_a_pod_and_off_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let config = with_files(&dir, KubernetesMode::Auto);
        let KubePlan::On(settings) = config.kube_plan(in_pod) else {
            panic!("off in a pod");
        };
        assert_eq!(settings.source, PodSource::ApiServer);
        assert_eq!(settings.api_url, "https://10.96.0.1:443");
        assert_eq!(settings.node_name, "worker-3");
        assert_eq!(settings.pod_labels, ["app"]);
        assert_eq!(settings.token_file, config.token_file);
        assert!(
            matches!(config.kube_plan(|_| None), KubePlan::Off(Some(why)) if why.contains("KUBERNETES_SERVICE_HOST"))
        );
        let off = NamesConfig {
            kubernetes: KubernetesMode::Off,
            ..config.clone()
        };
        assert!(matches!(off.kube_plan(in_pod), KubePlan::Off(None)));
        // Settings win over the environment.
        let set = NamesConfig {
            node_name: "node-b".into(),
            api_url: "https://api.example:6443".into(),
            ..config
        };
        let KubePlan::On(settings) = set.kube_plan(in_pod) else {
            panic!("off");
        };
        assert_eq!(settings.api_url, "https://api.example:6443");
        assert_eq!(settings.node_name, "node-b");
    }

    #[test]
    fn unusable_settings_are_one_warning_naming_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let config = with_files(&dir, KubernetesMode::ApiServer);
        let no_node =
            warning(config.kube_plan(|v| (v != "NODE_NAME").then(|| in_pod(v)).flatten()));
        assert!(
            no_node.contains("NODE_NAME") && no_node.contains("spec.nodeName"),
            "{no_node}"
        );
        assert!(no_node.contains("node_name"), "{no_node}");
        let outside =
            warning(config.kube_plan(|v| (v == "NODE_NAME").then(|| in_pod(v)).flatten()));
        assert!(
            outside.contains("KUBERNETES_SERVICE_HOST") && outside.contains("api_url"),
            "{outside}"
        );
        let no_token = NamesConfig {
            token_file: dir.path().join("absent"),
            ..config.clone()
        };
        let w = warning(no_token.kube_plan(in_pod));
        assert!(w.contains("token_file") && w.contains("absent"), "{w}");
        let no_ca = NamesConfig {
            ca_file: dir.path().join("absent-ca"),
            ..config.clone()
        };
        let w = warning(no_ca.kube_plan(in_pod));
        assert!(w.contains("ca_file") && !w.contains("s3cr3t"), "{w}");
        let kubelet = NamesConfig {
            kubernetes: KubernetesMode::Kubelet,
            kubelet_url: "10250".into(),
            ..config
        };
        let w = warning(kubelet.kube_plan(in_pod));
        assert!(w.contains("kubelet_url"), "{w}");
    }

    #[test]
    fn the_kubelet_mode_reads_the_kubelet_and_needs_no_node_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = with_files(&dir, KubernetesMode::Kubelet);
        let KubePlan::On(settings) = config.kube_plan(|_| None) else {
            panic!("off");
        };
        assert_eq!(
            settings.source,
            PodSource::Kubelet {
                url: "https://127.0.0.1:10250".into()
            }
        );
        assert_eq!(settings.node_name, "");
        let KubePlan::On(settings) = config.kube_plan(in_pod) else {
            panic!("off");
        };
        assert_eq!(settings.node_name, "worker-3");
    }

    #[test]
    fn without_kubernetes_no_kubernetes_lookup() {
        let config = NamesConfig {
            kubernetes: KubernetesMode::Off,
            ..NamesConfig::default()
        };
        let names: Vec<&str> = config
            .lookups(PathBuf::from("/proc"))
            .iter()
            .map(|l| l.name())
            .collect();
        assert!(!names.contains(&"kubernetes"), "{names:?}");
    }
}
