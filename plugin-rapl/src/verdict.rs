//! The start-up check's verdict on a virtual machine, kept for the rest of
//! the boot.
//!
//! On a VM whose RAPL counters open and never count, the check watches them
//! for its whole window (100 ms) at every start: `exec -- true` would take
//! ten times longer than it does without RAPL. A hypervisor does not start
//! passing RAPL through within a boot, so the verdict "these counters do not
//! count" is written to the runtime directory (`/run/alumet` for root,
//! `$XDG_RUNTIME_DIR/alumet` otherwise) with the boot id, and reused while the
//! same counters are opened under the host's own sysfs in the same boot. A
//! counter that counts is never cached (the check ends in a millisecond or
//! two anyway), nor anything read under another sysfs root (a container's
//! view of another host, a test fixture), nor anything on bare metal, where
//! a dead counter is a fault and is checked again at every start.

use std::path::{Path, PathBuf};

use alumet::measurement::Resource;

use crate::check::SilentCounter;
use crate::domain::Domain;

/// The only sysfs root whose verdicts are kept.
pub const HOST_SYSFS: &str = "/sys";

/// File name of the verdict in the runtime directory.
const FILE_NAME: &str = "rapl-not-counting";

/// Where the verdict is kept for this user, if anywhere.
pub fn default_path() -> Option<PathBuf> {
    // SAFETY: geteuid(2) has no failure mode and no side effect.
    let root = unsafe { libc::geteuid() } == 0;
    let dir = if root {
        PathBuf::from("/run/alumet")
    } else {
        PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("alumet")
    };
    Some(dir.join(FILE_NAME))
}

/// The kernel's id of this boot.
pub fn boot_id(proc_root: &Path) -> Option<String> {
    let id = std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id")).ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The verdict kept at `path` for `boot_id` and these counters (by origin,
/// in order), if it matches them exactly.
pub fn load(path: &Path, boot_id: &str, origins: &[&str]) -> Option<Vec<SilentCounter>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != boot_id {
        return None;
    }
    let mut silent = Vec::new();
    for line in lines {
        let mut fields = line.split('\t');
        let (domain, origin, seen) = (fields.next()?, fields.next()?, fields.next()?);
        let domain = Domain::ALL.into_iter().find(|d| d.as_str() == domain)?;
        silent.push(SilentCounter {
            domain,
            resource: Resource::LocalMachine,
            origin: origin.to_owned(),
            seen: seen.to_owned(),
        });
    }
    let same =
        silent.len() == origins.len() && silent.iter().zip(origins).all(|(s, o)| s.origin == *o);
    same.then_some(silent)
}

/// Keeps the verdict that `silent` (every counter opened) do not count.
/// Failing to write only costs the next start its check: logged at debug.
pub fn store(path: &Path, boot_id: &str, silent: &[SilentCounter]) {
    let mut text = format!("{boot_id}\n");
    for s in silent {
        let clean = |v: &str| v.replace(['\t', '\n'], " ");
        text.push_str(&format!(
            "{}\t{}\t{}\n",
            s.domain.as_str(),
            clean(&s.origin),
            clean(&s.seen)
        ));
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            // Written beside and renamed: a reader never sees half a file.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = written {
        log::debug!(
            "rapl: cannot keep the counting check's verdict in {}: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silent(origin: &str) -> SilentCounter {
        SilentCounter {
            domain: Domain::Psys,
            resource: Resource::LocalMachine,
            origin: origin.to_owned(),
            seen: "stayed at 0".to_owned(),
        }
    }

    #[test]
    fn a_verdict_is_reused_for_the_same_boot_and_counters_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/alumet").join(FILE_NAME);
        assert!(load(&path, "boot-1", &["a"]).is_none());
        store(
            &path,
            "boot-1",
            &[silent("perf event power/energy-psys/ on CPU 0")],
        );
        let got = load(&path, "boot-1", &["perf event power/energy-psys/ on CPU 0"]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].to_string(),
            "perf event power/energy-psys/ on CPU 0 (stayed at 0)"
        );
        assert_eq!(got[0].domain, Domain::Psys);
        // another boot, or other counters: checked again
        assert!(load(&path, "boot-2", &["perf event power/energy-psys/ on CPU 0"]).is_none());
        assert!(load(&path, "boot-1", &["perf event power/energy-pkg/ on CPU 0"]).is_none());
        assert!(load(&path, "boot-1", &[]).is_none());
    }

    #[test]
    fn a_corrupt_file_is_no_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "boot-1\nnot a line\n").unwrap();
        assert!(load(&path, "boot-1", &["x"]).is_none());
        std::fs::write(&path, "boot-1\nwatts\tx\ty\n").unwrap();
        assert!(load(&path, "boot-1", &["x"]).is_none());
    }
}
