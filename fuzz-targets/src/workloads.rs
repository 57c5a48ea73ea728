//! What the workload managers answer: a container engine's HTTP API,
//! the CRI's gRPC messages, the Kubernetes API's lists and watches, and
//! Slurm's `squeue` lines and job processes' environments. A manager, or
//! whoever can listen on its socket or start a process in a job's cgroup,
//! writes them.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use alumet_workloads::cri::{decode_frame, names_of, ContainerStatusResponse, VersionResponse};
use alumet_workloads::engine::{EngineLookup, EngineSettings};
use alumet_workloads::kubernetes::{read_pod_list, read_watch_body, PodInfo};
use alumet_workloads::names::is_name_key;
use alumet_workloads::resolver::{Found, Lookup, Workload};
use alumet_workloads::slurm::{names_from_environ, parse_squeue};
use alumet_workloads::Names;
use prost::Message;

fn assert_name_keys(names: &Names) {
    for (key, _) in &names.0 {
        assert!(is_name_key(key), "{key} is not a name key");
    }
}

/// An engine API on a Unix socket that answers every request with the
/// current input, then closes the connection.
struct FakeEngine {
    _dir: tempfile::TempDir,
    lookup: EngineLookup,
    response: &'static Mutex<Vec<u8>>,
}

fn fake_engine() -> &'static FakeEngine {
    static ENGINE: OnceLock<FakeEngine> = OnceLock::new();
    static RESPONSE: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    ENGINE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket: PathBuf = dir.path().join("podman.sock");
        let listener = UnixListener::bind(&socket).expect("a Unix socket");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                // The request head (a GET has no body), then the answer.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = RESPONSE
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let _ = stream.write_all(&response);
            }
        });
        let lookup = EngineLookup::new(EngineSettings {
            docker_socket: socket.clone(),
            podman_sockets: vec![socket.to_string_lossy().into_owned()],
            labels: vec!["app".to_owned(), "io.x/team".to_owned()],
            timeout: Duration::from_secs(2),
        });
        FakeEngine {
            _dir: dir,
            lookup,
            response: &RESPONSE,
        }
    })
}

/// A Docker or Podman API's answers (whole HTTP/1.1 responses: status,
/// headers, a container's or a pod's inspect document), through the
/// engine lookup's own client. The names it finds are name keys only, none
/// empty, the container's name first.
pub fn engine_api(data: &[u8]) {
    let engine = fake_engine();
    *engine
        .response
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = data.to_vec();
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let workload = Workload {
        kind: "container".to_owned(),
        attributes: vec![
            ("runtime".to_owned(), "podman".to_owned()),
            ("container_id".to_owned(), id.to_owned()),
            ("podman_pod_id".to_owned(), id.to_owned()),
        ],
        cgroup_dir: PathBuf::from("/nonexistent"),
    };
    if let Ok(Found::Names(names)) = engine.lookup.lookup(&workload) {
        assert_name_keys(&names);
        // Empty values are left out: the name is first when there is one.
        if let Some(i) = names.0.iter().position(|(k, _)| k == "container_name") {
            assert_eq!(i, 0, "{names:?}");
        }
        for (key, value) in &names.0 {
            assert!(!value.is_empty(), "{key} empty");
        }
    }
}

/// A CRI runtime's unary gRPC answers (`ContainerStatus`, `Version`):
/// the frame and the message. A status that decodes is framed again and
/// decodes to the same message; its names are name keys.
pub fn cri_status(data: &[u8]) {
    if let Ok(response) = decode_frame::<ContainerStatusResponse>(data) {
        let body = response.encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&body);
        assert_eq!(
            decode_frame::<ContainerStatusResponse>(&frame).as_ref(),
            Ok(&response)
        );
        if let Some(status) = &response.status {
            assert_name_keys(&names_of(status));
        }
    }
    let _ = decode_frame::<VersionResponse>(data);
}

fn check_pods(pods: &[PodInfo], node: &str, labels: &[String]) {
    for pod in pods {
        assert!(!pod.uid.is_empty());
        if !node.is_empty() {
            assert_eq!(pod.node, node);
        }
        // The labels asked for, in the order asked.
        let mut asked = labels.iter();
        for (label, _) in &pod.labels {
            assert!(asked.any(|l| l == label), "{label} not asked for");
        }
        for (id, _) in &pod.containers {
            assert!(!id.is_empty() && id.trim() == id, "{id:?}");
        }
        assert_name_keys(&pod.names());
    }
}

const NODE: &str = "node-1";

fn labels() -> Vec<String> {
    vec!["app".to_owned(), "app.kubernetes.io/name".to_owned()]
}

/// A PodList (the API server's list, the kubelet's `/pods`): the pods of
/// one node are exactly those of every node whose node is that one.
pub fn kube_pod_list(data: &[u8]) {
    let labels = labels();
    let mine = read_pod_list(data, NODE, &labels);
    let all = read_pod_list(data, "", &labels);
    match (mine, all) {
        (Ok(mine), Ok(all)) => {
            check_pods(&mine.pods, NODE, &labels);
            check_pods(&all.pods, "", &labels);
            let expected: Vec<&PodInfo> = all.pods.iter().filter(|p| p.node == NODE).collect();
            assert_eq!(mine.pods.iter().collect::<Vec<_>>(), expected);
            assert_eq!(mine.resource_version, all.resource_version);
            assert_eq!(
                mine.skipped,
                all.skipped + (all.pods.len() - mine.pods.len()) as u64
            );
        }
        (Err(_), Err(_)) => {}
        (mine, all) => panic!("one node: {mine:?}; every node: {all:?}"),
    }
}

/// A watch's body (one event per line): this node's pods only, and the
/// same events whatever node is asked, less the other nodes' pods.
pub fn kube_watch(data: &[u8]) {
    let labels = labels();
    let mine = read_watch_body(data, NODE, &labels);
    let all = read_watch_body(data, "", &labels);
    for (_, pod) in &mine.changes {
        check_pods(std::slice::from_ref(pod), NODE, &labels);
    }
    let expected: Vec<_> = all.changes.iter().filter(|(_, p)| p.node == NODE).collect();
    assert_eq!(mine.changes.iter().collect::<Vec<_>>(), expected);
    assert_eq!(mine.bookmarks, all.bookmarks);
    assert_eq!(mine.end.is_some(), all.end.is_some());
}

/// A line of `squeue -h -o "%u\t%a\t%P\t%q\t%F\t%K\t%A\t%j"`: names only
/// for the job asked, never an empty or placeholder value.
pub fn slurm_squeue(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // The job id in the line, so that the fuzzer reaches the names.
    let id = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.split('\t').nth(6))
        .map(str::trim)
        .unwrap_or("");
    for job in [id, "48213"] {
        if let Some(names) = parse_squeue(&text, job) {
            assert_name_keys(&names);
            for (key, value) in &names.0 {
                assert!(!value.trim().is_empty(), "{key} empty");
                assert!(value != "(null)" && value != "N/A", "{key}={value}");
            }
        }
    }
}

/// A job process's `/proc/PID/environ`: names only when its
/// `SLURM_JOB_ID` is the job's.
pub fn slurm_environ(data: &[u8]) {
    let id = data
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(b"SLURM_JOB_ID="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    if let Some(names) = names_from_environ(data, &id) {
        assert_name_keys(&names);
    }
    let other = format!("{id}0");
    let theirs = data
        .split(|&b| b == 0)
        .any(|e| e == format!("SLURM_JOB_ID={other}").as_bytes());
    if !theirs {
        assert_eq!(names_from_environ(data, &other), None);
    }
}
