//! The pid lister on this machine's /proc (incremental listings) and on a
//! fixture tree (always whole).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use alumet_kernelfs::pids::{Listing, PidLister};

const MINUTE_NS: u64 = 60_000_000_000;

#[test]
fn on_proc_a_second_listing_holds_the_new_processes_only() {
    let mut lister = PidLister::new(Path::new("/proc"), MINUTE_NS);
    let mut pids = Vec::new();
    assert_eq!(lister.list(&mut pids, 0).unwrap(), Listing::Whole);
    assert!(pids.contains(&std::process::id()), "{pids:?}");
    assert!(pids.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert!(
        lister.is_incremental(),
        "/proc of our own namespace lists from a pid"
    );

    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let child_pid = child.id();
    assert_eq!(lister.list(&mut pids, 1).unwrap(), Listing::New);
    let _ = child.kill();
    let _ = child.wait();
    assert!(pids.contains(&child_pid), "{child_pid} in {pids:?}");
    assert!(
        !pids.contains(&std::process::id()) && !pids.contains(&1),
        "old processes are not listed again: {pids:?}"
    );

    // Nothing new (the killed child is gone): at most processes other
    // tests or the machine started meanwhile, none of them old.
    assert_eq!(lister.list(&mut pids, 2).unwrap(), Listing::New);
    assert!(!pids.contains(&child_pid), "{pids:?}");

    // The safety net: a whole listing once `full_every_ns` has passed.
    assert_eq!(lister.list(&mut pids, MINUTE_NS).unwrap(), Listing::Whole);
    assert!(pids.contains(&1) && pids.contains(&std::process::id()));
}

#[test]
fn a_fixture_tree_is_always_listed_whole() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["17", "3", "250", "self", "stat", "4294967296"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("loadavg"), "0.00 0.00 0.00 1/3 250\n").unwrap();
    let mut lister = PidLister::new(dir.path(), MINUTE_NS);
    let mut pids = Vec::new();
    for now in 0..3 {
        assert_eq!(lister.list(&mut pids, now).unwrap(), Listing::Whole);
        assert_eq!(pids, vec![3, 17, 250]);
    }
    assert!(!lister.is_incremental());
    std::fs::create_dir(dir.path().join("12")).unwrap();
    assert_eq!(lister.list(&mut pids, 3).unwrap(), Listing::Whole);
    assert_eq!(pids, vec![3, 12, 17, 250]);
}

#[test]
fn a_missing_root_is_an_error() {
    let mut lister = PidLister::new(Path::new("/nonexistent/proc"), MINUTE_NS);
    assert!(lister.list(&mut Vec::new(), 0).is_err());
}
