//! The processes of a procfs: every pid, or only those allocated since the
//! previous listing.
//!
//! Listing /proc costs the kernel about 1 µs per process (with 3 000
//! processes, 14 % of the agent's CPU time went to it at one listing per
//! second; BENCHMARKS.md, "Node scale"). Two properties of Linux make most
//! of it avoidable:
//!
//! - pids are allocated cyclically: until the allocator wraps, a new process
//!   has a pid above the last one allocated before it, which /proc/loadavg
//!   prints (in the reader's pid namespace);
//! - the positions in procfs's root directory are pids plus a constant, so
//!   a listing can start at a pid (`lseek`, then `getdents64`).
//!
//! A refresh then lists the pids between the last one allocated before the
//! previous refresh and the last one now, and nothing above (after the
//! allocator wrapped, older processes sit there).
//!
//! A listing is then whole only the first time, after the allocator
//! wrapped, at least every `full_every_ns` (a safety net: a wrap that went
//! all the way round between two listings cannot be seen), and whenever the
//! two properties cannot be checked (a procfs of another pid namespace,
//! e.g. the host's /proc in a container, or a fixture tree). The constant
//! is learnt from a whole listing (each entry's `d_off` is the position of
//! the next one), never assumed.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::file::{KernelFile, ReadBuf};
use crate::parse;

/// What a [`PidLister::list`] call put in its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every process: those absent have ended.
    Whole,
    /// Only the processes whose pid was allocated since the previous
    /// listing (and possibly some already seen); absence says nothing.
    New,
}

/// Lists the pids of a procfs, incrementally where it can.
#[derive(Debug)]
pub struct PidLister {
    root: PathBuf,
    dir: Option<File>,
    loadavg: KernelFile,
    read_buf: ReadBuf,
    dirents: Vec<u8>,
    /// Whether `root` shows the pids of this process's namespace (where
    /// /proc/loadavg's last pid is counted); checked at the first listing.
    same_namespace: Option<bool>,
    /// Position of pid P in the root directory, less P (None: unknown, or
    /// the directory is not a procfs root).
    pid_offset: Option<u64>,
    /// The allocator's last pid read before the previous listing.
    last_pid: Option<u32>,
    last_whole_ns: Option<u64>,
    full_every_ns: u64,
}

/// Size of one `getdents64` request (about 1 300 pid entries).
const DIRENTS_BYTES: usize = 32 * 1024;

/// Largest record of a pid entry: 19 bytes of header, up to 10 digits and
/// a NUL, rounded up to 8.
const MAX_PID_DIRENT_BYTES: usize = 32;

impl PidLister {
    /// A lister of `proc_root` that lists every pid at least every `full_every_ns`.
    pub fn new(proc_root: &Path, full_every_ns: u64) -> Self {
        Self {
            root: proc_root.to_path_buf(),
            dir: None,
            loadavg: KernelFile::new(proc_root.join("loadavg"), true),
            read_buf: ReadBuf::with_capacity(128),
            dirents: vec![0; DIRENTS_BYTES],
            same_namespace: None,
            pid_offset: None,
            last_pid: None,
            last_whole_ns: None,
            full_every_ns,
        }
    }

    /// Whether the next listings can be incremental (for tests and diagnostics).
    pub fn is_incremental(&self) -> bool {
        self.same_namespace == Some(true) && self.pid_offset.is_some()
    }

    /// Puts the pids into `out` (cleared first, then sorted): every pid, or
    /// only those allocated since the previous call, as the result says.
    /// `now_ns` is on any monotonic clock (it times the whole listings).
    pub fn list(&mut self, out: &mut Vec<u32>, now_ns: u64) -> io::Result<Listing> {
        out.clear();
        if self.same_namespace.is_none() {
            self.same_namespace = Some(shows_own_namespace(&self.root));
        }
        // Read before listing: a process created during this listing has a
        // pid above it, so the next listing sees it even if this one did not.
        let last_pid = if self.same_namespace == Some(true) {
            self.read_last_pid()
        } else {
            None
        };
        let previous = std::mem::replace(&mut self.last_pid, last_pid);
        let whole_due = self
            .last_whole_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= self.full_every_ns);
        if let (false, Some(offset), Some(prev), Some(now)) =
            (whole_due, self.pid_offset, previous, last_pid)
        {
            if now >= prev {
                if self.list_range(prev.saturating_add(1), now, offset, out)? {
                    out.sort_unstable();
                    return Ok(Listing::New);
                }
                out.clear();
            }
        }
        self.list_whole(out)?;
        self.last_whole_ns = Some(now_ns);
        out.sort_unstable();
        Ok(Listing::Whole)
    }

    fn read_last_pid(&mut self) -> Option<u32> {
        self.loadavg.read_into(&mut self.read_buf).ok()?;
        // "0.20 0.18 0.12 1/80 11206": the last field.
        parse::parse_u32(parse::fields(self.read_buf.bytes()).last()?)
    }

    /// The kept directory descriptor, taken out while it is used (put
    /// back with [`Self::put_dir`] unless the listing failed).
    fn take_dir(&mut self) -> io::Result<File> {
        match self.dir.take() {
            Some(d) => Ok(d),
            None => File::open(&self.root),
        }
    }

    fn put_dir(&mut self, dir: File) {
        self.dir = Some(dir);
    }

    /// Lists the whole directory and learns the pid offset from it.
    fn list_whole(&mut self, out: &mut Vec<u32>) -> io::Result<()> {
        let mut dir = self.take_dir()?;
        dir.seek(SeekFrom::Start(0))?;
        // Consecutive pid entries (a, b) give d_off(a) - b; on a procfs
        // root every pair gives the same constant.
        let mut offset: Option<Option<u64>> = None;
        let mut previous_off: Option<u64> = None;
        loop {
            let n = getdents(&dir, &mut self.dirents)?;
            if n == 0 {
                break;
            }
            for entry in Entries::new(&self.dirents[..n]) {
                let Some(pid) = parse::parse_u32(entry.name) else {
                    previous_off = None;
                    continue;
                };
                if let Some(off) = previous_off {
                    let this = off.checked_sub(u64::from(pid));
                    offset = match offset {
                        None => Some(this),
                        Some(known) if known == this => Some(known),
                        Some(_) => Some(None),
                    };
                }
                previous_off = Some(entry.d_off);
                out.push(pid);
            }
        }
        self.pid_offset = offset.flatten();
        self.put_dir(dir);
        Ok(())
    }

    /// Lists the pids from `first` to `last`; false (and nothing trusted
    /// in `out`) when the directory did not behave as a procfs root.
    /// Processes older than the last wrap of the allocator can sit above
    /// `first` (all of them, after it wrapped below them): the listing
    /// stops at `last`, and each request is sized for the pids of the
    /// range, so that the kernel does not produce entries beyond it.
    fn list_range(
        &mut self,
        first: u32,
        last: u32,
        offset: u64,
        out: &mut Vec<u32>,
    ) -> io::Result<bool> {
        if first > last {
            return Ok(true);
        }
        let request = (usize::try_from(last - first).unwrap_or(usize::MAX))
            .saturating_add(2)
            .saturating_mul(MAX_PID_DIRENT_BYTES)
            .min(self.dirents.len());
        let mut dir = self.take_dir()?;
        dir.seek(SeekFrom::Start(u64::from(first) + offset))?;
        loop {
            let n = getdents(&dir, &mut self.dirents[..request])?;
            if n == 0 {
                self.put_dir(dir);
                return Ok(true);
            }
            for entry in Entries::new(&self.dirents[..n]) {
                match parse::parse_u32(entry.name) {
                    Some(pid) if pid > last => {
                        self.put_dir(dir);
                        return Ok(true);
                    }
                    Some(pid) if pid >= first => out.push(pid),
                    _ => {
                        log::debug!(
                            "{}: listing from pid {first} gave {:?}; listing it whole from now on",
                            self.root.display(),
                            String::from_utf8_lossy(entry.name)
                        );
                        self.pid_offset = None;
                        self.put_dir(dir);
                        return Ok(false);
                    }
                }
            }
        }
    }
}

/// Whether `root/self` names this process: then `root` is a procfs of this
/// process's pid namespace.
fn shows_own_namespace(root: &Path) -> bool {
    std::fs::read_link(root.join("self")).is_ok_and(|target| {
        target
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
            .is_some_and(|pid| pid == std::process::id())
    })
}

fn getdents(dir: &File, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
    // is ours and stays borrowed for the call; the descriptor is open.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

struct Entry<'a> {
    d_off: u64,
    name: &'a [u8],
}

/// The records of a `getdents64` answer (`struct linux_dirent64`: inode
/// u64, d_off i64, record length u16, type u8, then the NUL-terminated name).
struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let d_off = u64::from_ne_bytes(self.rest.get(8..16)?.try_into().ok()?);
        let reclen = usize::from(u16::from_ne_bytes(self.rest.get(16..18)?.try_into().ok()?));
        // A record holds at least its header; a shorter length would never advance.
        let record = self.rest.get(..reclen).filter(|_| reclen > 19)?;
        let name = record.get(19..)?;
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        self.rest = &self.rest[reclen..];
        Some(Entry { d_off, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_and_a_short_one_ends_the_walk() {
        let mut bytes = Vec::new();
        for (off, name) in [(300u64, "12"), (301, "self")] {
            let reclen = 24u16;
            bytes.extend_from_slice(&7u64.to_ne_bytes());
            bytes.extend_from_slice(&off.to_ne_bytes());
            bytes.extend_from_slice(&reclen.to_ne_bytes());
            bytes.push(4);
            let mut n = name.as_bytes().to_vec();
            n.resize(5, 0);
            bytes.extend_from_slice(&n);
        }
        bytes.extend_from_slice(&[1, 2, 3]);
        let got: Vec<(u64, Vec<u8>)> = Entries::new(&bytes)
            .map(|e| (e.d_off, e.name.to_vec()))
            .collect();
        assert_eq!(got, vec![(300, b"12".to_vec()), (301, b"self".to_vec())]);
    }
}
