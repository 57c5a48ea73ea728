//! Container names from the engines' APIs on their Unix sockets: Docker
//! (`/var/run/docker.sock`) and Podman (`/run/podman/podman.sock`, and for
//! rootless containers `/run/user/<uid>/podman/podman.sock`), which both
//! answer Docker's `GET /containers/<id>/json`; a Podman pod's name comes
//! from Podman's `GET /v4.0.0/libpod/pods/<id>/json`.
//!
//! Reference: Docker Engine API, "Inspect a container"
//! (<https://docs.docker.com/reference/api/engine/version/v1.43/#tag/Container/operation/ContainerInspect>);
//! Podman serves the same endpoint (`podman system service`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::names::{label_key, Names};
use crate::resolver::{Found, Lookup, Workload};
use crate::unix_http::{SocketClient, SocketError};

/// Where each engine listens, and what to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// Docker's socket.
    pub docker_socket: PathBuf,
    /// Podman's sockets, tried in order; `{uid}` is replaced by the uid of
    /// the container's owner where its cgroup path says it (rootless).
    pub podman_sockets: Vec<String>,
    /// Container labels to copy as `label_<name>` attributes.
    pub labels: Vec<String>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            podman_sockets: vec![
                "/run/podman/podman.sock".to_owned(),
                "/run/user/{uid}/podman/podman.sock".to_owned(),
            ],
            labels: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The part of an inspect document that names a container.
#[derive(Debug, Deserialize)]
struct Inspect {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<InspectConfig>,
}

#[derive(Debug, Deserialize, Default)]
struct InspectConfig {
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

/// The part of a Podman pod's inspect document that names it.
#[derive(Debug, Deserialize)]
struct PodInspect {
    #[serde(rename = "Name", default)]
    name: String,
}

/// The names of a container from its inspect document.
fn names_of(inspect: Inspect, wanted_labels: &[String]) -> Names {
    let mut names = Names::new();
    // The API writes names with a leading `/` (Docker's legacy links).
    names.push("container_name", inspect.name.trim_start_matches('/'));
    let config = inspect.config.unwrap_or_default();
    names.push("image", config.image);
    let labels = config.labels.unwrap_or_default();
    for (label, key) in [
        ("com.docker.compose.project", "compose_project"),
        ("com.docker.compose.service", "compose_service"),
    ] {
        if let Some(v) = labels.get(label) {
            names.push(key, v.as_str());
        }
    }
    for label in wanted_labels {
        if let Some(v) = labels.get(label) {
            names.push(label_key(label), v.as_str());
        }
    }
    names
}

/// Docker and Podman containers, by id.
pub struct EngineLookup {
    settings: EngineSettings,
    client: Mutex<Option<SocketClient>>,
}

impl EngineLookup {
    /// A lookup with `settings`; sockets are opened per request, so an
    /// engine started after the agent is found.
    pub fn new(settings: EngineSettings) -> Self {
        Self {
            settings,
            client: Mutex::new(None),
        }
    }

    fn sockets_for(&self, workload: &Workload) -> Vec<PathBuf> {
        match workload.attribute("runtime") {
            Some("docker") => vec![self.settings.docker_socket.clone()],
            Some("podman") => {
                let uid = workload.attribute("uid");
                self.settings
                    .podman_sockets
                    .iter()
                    .filter_map(|s| match (s.contains("{uid}"), uid) {
                        (false, _) => Some(PathBuf::from(s)),
                        (true, Some(uid)) => Some(PathBuf::from(s.replace("{uid}", uid))),
                        (true, None) => None,
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// A 64-hex container id (what the engines' APIs accept).
fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Lookup for EngineLookup {
    fn name(&self) -> &'static str {
        "container engine"
    }

    fn key(&self, workload: &Workload) -> Option<String> {
        // Kubernetes containers are named by the Kubernetes lookup.
        if workload.attribute("pod_uid").is_some() {
            return None;
        }
        let runtime = workload.attribute("runtime")?;
        let id = workload
            .attribute("container_id")
            .filter(|id| is_container_id(id))?;
        matches!(runtime, "docker" | "podman").then(|| format!("container:{id}"))
    }

    fn lookup(&self, workload: &Workload) -> Result<Found, String> {
        let Some(id) = workload
            .attribute("container_id")
            .filter(|id| is_container_id(id))
        else {
            return Ok(Found::Unknown);
        };
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if client.is_none() {
            *client = Some(SocketClient::new(self.settings.timeout).map_err(|e| e.to_string())?);
        }
        let Some(client) = client.as_ref() else {
            return Ok(Found::Unknown);
        };
        let uri = format!("/containers/{id}/json");
        let mut failure = None;
        for socket in self.sockets_for(workload) {
            match client.get_json::<Inspect>(&socket, &uri) {
                Ok(inspect) => {
                    let mut names = names_of(inspect, &self.settings.labels);
                    // A podman pod's name, from Podman's own API (v4.0.0
                    // is the oldest that Podman 4 and 5 serve).
                    if let Some(pod) = workload
                        .attribute("podman_pod_id")
                        .filter(|p| is_container_id(p))
                    {
                        let uri = format!("/v4.0.0/libpod/pods/{pod}/json");
                        if let Ok(p) = client.get_json::<PodInspect>(&socket, &uri) {
                            names.push("podman_pod", p.name);
                        }
                    }
                    return Ok(Found::Names(names));
                }
                // Not this engine's (another podman socket may have it), or gone.
                Err(e) if e.is_not_found() => {}
                Err(SocketError::Absent { .. }) if failure.is_some() => {}
                Err(e) => failure = Some(e.to_string()),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(Found::Unknown),
        }
    }
}

/// Whether `path` is a Unix socket (for the agent's one line about which
/// engines it can name).
pub fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_an_inspect_document() {
        let doc = r#"{"Id":"x","Name":"/shop-web-1","Config":{"Image":"nginx:1.27","Labels":{"com.docker.compose.project":"shop","com.docker.compose.service":"web","app":"front","secret":"no"}}}"#;
        let inspect: Inspect = serde_json::from_str(doc).unwrap();
        let names = names_of(inspect, &["app".to_owned(), "absent".to_owned()]);
        assert_eq!(names.get("container_name"), Some("shop-web-1"));
        assert_eq!(names.get("image"), Some("nginx:1.27"));
        assert_eq!(names.get("compose_project"), Some("shop"));
        assert_eq!(names.get("compose_service"), Some("web"));
        assert_eq!(names.get("label_app"), Some("front"));
        assert_eq!(names.get("label_secret"), None, "only listed labels");
        // Podman writes null labels.
        let inspect: Inspect =
            serde_json::from_str(r#"{"Name":"probe","Config":{"Image":"i","Labels":null}}"#)
                .unwrap();
        assert_eq!(names_of(inspect, &[]).get("container_name"), Some("probe"));
    }

    #[test]
    fn keys_and_sockets_by_runtime() {
        let lookup = EngineLookup::new(EngineSettings::default());
        let id = "a".repeat(64);
        let w = |runtime: &str, extra: &[(&str, &str)]| Workload {
            kind: "container".to_owned(),
            attributes: [("runtime", runtime), ("container_id", id.as_str())]
                .iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cgroup_dir: PathBuf::new(),
        };
        assert_eq!(
            lookup.key(&w("docker", &[])),
            Some(format!("container:{id}"))
        );
        assert_eq!(lookup.key(&w("containerd", &[])), None);
        assert_eq!(lookup.key(&w("docker", &[("pod_uid", "u")])), None);
        assert_eq!(
            lookup.sockets_for(&w("podman", &[("uid", "1000")])),
            [
                PathBuf::from("/run/podman/podman.sock"),
                PathBuf::from("/run/user/1000/podman/podman.sock")
            ]
        );
        assert_eq!(
            lookup.sockets_for(&w("podman", &[])),
            [PathBuf::from("/run/podman/podman.sock")]
        );
        // No engine listening: a failure of the source (logged once by the resolver).
        let absent = EngineLookup::new(EngineSettings {
            docker_socket: PathBuf::from("/nonexistent/docker.sock"),
            ..EngineSettings::default()
        });
        assert!(absent.lookup(&w("docker", &[])).is_err());
    }
}
