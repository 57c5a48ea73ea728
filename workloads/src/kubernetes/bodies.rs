//! The API's response bodies read from bytes exactly as the watcher reads
//! them from the network, so that the parsers that meet a server's input
//! can be tested and fuzzed without a server (`fuzz-targets`).

use super::api::PodFilter;
use super::index::PodInfo;
use super::requests::{read_list, read_watch, Change, WatchEnd, WatchMsg};

/// A PodList as read: the pods kept, the list's version, the pods skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodList {
    /// `metadata.resourceVersion`, where a watch starts.
    pub resource_version: String,
    /// The pods of the node asked for, with the labels asked for.
    pub pods: Vec<PodInfo>,
    /// Pods of other nodes, or without a uid.
    pub skipped: u64,
}

/// A watch's body as read: the events applied to the index, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchBody {
    /// `ADDED`, `MODIFIED` or `DELETED` with the pod, for this node's pods.
    pub changes: Vec<(&'static str, PodInfo)>,
    /// The versions of `BOOKMARK` events.
    pub bookmarks: Vec<String>,
    /// Events read and not applied: other nodes' pods, pods without a
    /// uid, objects that are not pods.
    pub skipped: u64,
    /// How the watch ended: `None` at the end of the body (the server
    /// closed it), else why (`410 Gone` and its message, or the failure).
    pub end: Option<String>,
}

fn filter(node: &str, labels: &[String]) -> PodFilter {
    PodFilter {
        node: node.to_owned(),
        labels: labels.to_vec(),
    }
}

/// Reads a PodList body (the API server's list, or the kubelet's `/pods`)
/// keeping the pods of `node` (every pod where `node` is empty) and the
/// `labels` listed; `Err` with the parser's message for what the watcher
/// would count as a failed list.
pub fn read_pod_list(body: &[u8], node: &str, labels: &[String]) -> Result<PodList, String> {
    let listed = read_list(body, &filter(node, labels)).map_err(|e| e.to_string())?;
    Ok(PodList {
        resource_version: listed.resource_version,
        pods: listed.pods,
        skipped: listed.ignored,
    })
}

/// Reads the body of an accepted watch (one event per line) for the pods
/// of `node` (every pod where `node` is empty) and the `labels` listed.
pub fn read_watch_body(body: &[u8], node: &str, labels: &[String]) -> WatchBody {
    let mut out = WatchBody::default();
    let end = read_watch(body, &filter(node, labels), "watch", |msg| {
        match msg {
            WatchMsg::Pod { change, pod, .. } => match pod {
                Ok(pod) => {
                    let change = match change {
                        Change::Added => "ADDED",
                        Change::Modified => "MODIFIED",
                        Change::Deleted => "DELETED",
                    };
                    out.changes.push((change, pod));
                }
                Err(_) => out.skipped += 1,
            },
            WatchMsg::Bookmark(version) => out.bookmarks.push(version),
            WatchMsg::Undecodable(_) => out.skipped += 1,
            WatchMsg::Accepted | WatchMsg::End(_) => {}
        }
        true
    });
    out.end = match end {
        WatchEnd::Closed => None,
        WatchEnd::Gone(message) => Some(format!("410 Gone: {message}")),
        WatchEnd::Failed(failure) => Some(failure.message),
    };
    out
}
