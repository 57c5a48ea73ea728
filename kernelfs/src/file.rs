//! Kernel pseudo-files (procfs, sysfs, cgroupfs) kept open and re-read from
//! offset 0 with `pread`, re-opened when a read fails.
//!
//! Re-reading a kept descriptor costs a fraction of open/read/close, and
//! the kernel regenerates the content at every read from offset 0. A file that
//! refuses positioned reads (`ESPIPE`) is re-opened at every read instead of
//! being rewound.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A reusable read buffer that grows to fit the largest content seen.
#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    /// A buffer with `capacity` bytes to start with.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            data: vec![0; capacity.max(64)],
            len: 0,
        }
    }

    /// The bytes of the last read.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Makes sure some room is free after the content.
    fn reserve_room(&mut self) {
        if self.len == self.data.len() {
            let grown = self.data.len() * 2;
            self.data.resize(grown, 0);
        }
    }

    fn room(&mut self) -> &mut [u8] {
        &mut self.data[self.len..]
    }
}

/// Reads the whole content with positioned reads from offset 0. One large
/// read is the common case: seq_file fills the caller's buffer in one call,
/// which also keeps the content consistent. A read that leaves room in the
/// buffer has reached the end: seq_file stops short only there, and asking
/// again at the end offset would make the kernel generate the whole content
/// once more just to skip it (measured: a poll of 1 000 real cgroups took
/// 4.1 ms with the extra read, 3.2 ms without; BENCHMARKS.md).
fn read_all_at(file: &File, buf: &mut ReadBuf) -> io::Result<()> {
    buf.clear();
    loop {
        buf.reserve_room();
        let offset = buf.len as u64;
        let room = buf.room().len();
        let n = file.read_at(buf.room(), offset)?;
        buf.len += n;
        if n == 0 || n < room {
            return Ok(());
        }
    }
}

fn read_all_stream(file: &mut File, buf: &mut ReadBuf) -> io::Result<()> {
    buf.clear();
    loop {
        buf.reserve_room();
        let n = match file.read(buf.room()) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        buf.len += n;
    }
}

/// How a successful read was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// Through the descriptor kept from before: same kernel object as last time.
    Kept,
    /// Through a new descriptor: for /proc/PID files, possibly a new process
    /// that reuses the pid.
    Opened,
}

/// A /proc file read again and again.
#[derive(Debug)]
pub struct KernelFile {
    path: PathBuf,
    file: Option<File>,
    /// Keep the descriptor between reads (false when the fd budget is spent).
    keep_open: bool,
    /// False once the file refused a positioned read.
    pread: bool,
}

impl KernelFile {
    /// A file at `path`, opened at the first read.
    pub fn new(path: PathBuf, keep_open: bool) -> Self {
        Self {
            path,
            file: None,
            keep_open,
            pread: true,
        }
    }

    /// Adopts a descriptor already opened on `path` (kept only if `keep_open`).
    pub fn with_file(path: PathBuf, file: File, keep_open: bool) -> Self {
        Self {
            path,
            file: keep_open.then_some(file),
            keep_open,
            pread: true,
        }
    }

    /// The path this file reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a descriptor is held now.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Drops the kept descriptor (it will be re-opened at the next read).
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Reads the whole file into `buf`. A failed read on the kept descriptor
    /// is retried once on a fresh one; the error of that retry is returned.
    pub fn read_into(&mut self, buf: &mut ReadBuf) -> io::Result<ReadKind> {
        if let Some(file) = &self.file {
            match read_all_at(file, buf) {
                Ok(()) => return Ok(ReadKind::Kept),
                Err(e) => {
                    if e.raw_os_error() == Some(libc::ESPIPE) {
                        self.pread = false;
                    }
                    log::debug!(
                        "re-opening {} after a failed read: {e}",
                        self.path.display()
                    );
                    self.file = None;
                }
            }
        }
        let mut file = File::open(&self.path)?;
        if self.pread {
            match read_all_at(&file, buf) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => {
                    self.pread = false;
                    // A positioned read that failed read nothing, so the
                    // stream is still at its start.
                    read_all_stream(&mut file, buf)?;
                }
                Err(e) => return Err(e),
            }
        } else {
            read_all_stream(&mut file, buf)?;
        }
        if self.keep_open && self.pread {
            self.file = Some(file);
        }
        Ok(ReadKind::Opened)
    }
}

/// How many descriptors a source may keep open: half of the file
/// limit, after raising the soft limit to the hard one (so that a machine
/// with thousands of processes keeps the cheap pread path).
pub fn open_file_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 256;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    usize::try_from(limit.rlim_cur / 2)
        .unwrap_or(usize::MAX)
        .min(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_new_content_through_the_kept_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        std::fs::write(&path, "first").unwrap();
        let mut f = KernelFile::new(path.clone(), true);
        let mut buf = ReadBuf::with_capacity(2);
        assert_eq!(f.read_into(&mut buf).unwrap(), ReadKind::Opened);
        assert_eq!(buf.bytes(), b"first");
        std::fs::write(&path, "second, longer than the buffer").unwrap();
        assert_eq!(f.read_into(&mut buf).unwrap(), ReadKind::Kept);
        assert_eq!(buf.bytes(), b"second, longer than the buffer");
    }

    #[test]
    fn missing_file_is_an_error_and_is_retried_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let mut f = KernelFile::new(path.clone(), true);
        let mut buf = ReadBuf::with_capacity(64);
        assert!(f.read_into(&mut buf).is_err());
        std::fs::write(&path, "now here").unwrap();
        assert_eq!(f.read_into(&mut buf).unwrap(), ReadKind::Opened);
        assert_eq!(buf.bytes(), b"now here");
    }

    #[test]
    fn without_keep_open_every_read_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, "a").unwrap();
        let mut f = KernelFile::new(path, false);
        let mut buf = ReadBuf::with_capacity(64);
        assert_eq!(f.read_into(&mut buf).unwrap(), ReadKind::Opened);
        assert_eq!(f.read_into(&mut buf).unwrap(), ReadKind::Opened);
        assert!(!f.is_open());
    }

    #[test]
    fn real_proc_stat_reads_through_pread() {
        let mut f = KernelFile::new(PathBuf::from("/proc/stat"), true);
        let mut buf = ReadBuf::with_capacity(64);
        f.read_into(&mut buf).unwrap();
        assert!(buf.bytes().starts_with(b"cpu "));
        assert_eq!(f.read_into(&mut buf).unwrap(), ReadKind::Kept);
        assert!(buf.bytes().starts_with(b"cpu "));
    }
}
