//! The boundary to cgroupfs: the files of one cgroup, kept open and re-read
//! with `pread`, and what they say.
//!
//! | figure | v2 | v1 |
//! | --- | --- | --- |
//! | CPU time | `cpu.stat` `usage_usec` | `cpuacct.usage` (ns) |
//! | its user/system split | `cpu.stat` `user_usec`/`system_usec` | `cpuacct.usage_user`/`usage_sys` (ns); else `cpuacct.stat` ticks |
//! | memory now / peak | `memory.current` / `memory.peak` (5.19+) | `memory.usage_in_bytes` / `memory.max_usage_in_bytes` |
//! | I/O bytes read / written | `io.stat` `rbytes`/`wbytes` summed over devices | `blkio.throttle.io_service_bytes_recursive` `Read`/`Write` |
//!
//! Every figure is hierarchical (a cgroup's includes its descendants'), and
//! includes the processes that have already exited.
//!
//! The total is the scheduler's own, to the nanosecond; the user/system
//! split is sampled at timer ticks (since Linux 5.14 even v1's
//! `cpuacct.usage_user`/`usage_sys`, which no longer sum to
//! `cpuacct.usage`), so it only divides the total: an interval's time is the
//! total's delta, split in the proportion of the split's deltas.

use std::io;
use std::path::{Path, PathBuf};

use alumet_kernelfs::cgroup::{dir_of, Accounting, CgroupVersion};
use alumet_kernelfs::file::{KernelFile, ReadBuf};
use alumet_kernelfs::parse::{self, fields, lines, parse_key_value, parse_u64, trim};

/// CPU time of a cgroup (its descendants' included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// In all, ns (exact).
    pub total_ns: u64,
    /// In user mode, as sampled by the kernel (ns, or ticks): only the
    /// proportion with `system_sampled` counts.
    pub user_sampled: u64,
    /// In kernel mode, as sampled (same unit as `user_sampled`).
    pub system_sampled: u64,
}

impl CpuTime {
    /// Seconds in user and kernel mode since `before`: the total's delta,
    /// split as the samples' deltas (or, with no sample in between, as all
    /// samples so far). `None` when the total went backwards (a cgroup
    /// re-created under the same path).
    pub fn delta_since(&self, before: &CpuTime) -> Option<(f64, f64)> {
        let total_s = self.total_ns.checked_sub(before.total_ns)? as f64 / 1e9;
        let user = self.user_sampled.saturating_sub(before.user_sampled);
        let system = self.system_sampled.saturating_sub(before.system_sampled);
        let (user, system) = if user == 0 && system == 0 {
            (self.user_sampled, self.system_sampled)
        } else {
            (user, system)
        };
        let user_fraction = if user == 0 && system == 0 {
            1.0
        } else {
            user as f64 / (user as f64 + system as f64)
        };
        let user_s = total_s * user_fraction;
        Some((user_s, total_s - user_s))
    }
}

/// One reading of a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupReading {
    /// CPU time.
    pub cpu: CpuTime,
    /// Memory charged now, bytes.
    pub memory_current: Option<u64>,
    /// Highest memory charged so far, bytes.
    pub memory_peak: Option<u64>,
    /// Bytes read from block devices.
    pub io_read: Option<u64>,
    /// Bytes written to block devices.
    pub io_write: Option<u64>,
}

/// Why a cgroup could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Its directory is gone (the cgroup was removed): its series ends.
    Gone,
    /// Anything else (logged, retried at the next poll).
    Other(io::Error),
}

fn classify_error(e: io::Error) -> ReadError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) => ReadError::Gone,
        _ => ReadError::Other(e),
    }
}

enum CpuFiles {
    V2 {
        stat: KernelFile,
    },
    V1Split {
        usage: KernelFile,
        user: KernelFile,
        system: KernelFile,
    },
    V1Ticks {
        usage: KernelFile,
        stat: KernelFile,
    },
}

/// What to read besides CPU time.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// Memory figures.
    pub memory: bool,
    /// I/O figures.
    pub io: bool,
}

/// The open files of one cgroup.
pub struct CgroupFiles {
    cpu: CpuFiles,
    memory_current: Option<KernelFile>,
    memory_peak: Option<KernelFile>,
    io: Option<(KernelFile, CgroupVersion)>,
    /// Descriptors kept open by this cgroup's files.
    kept: usize,
}

fn existing(path: PathBuf, keep: &mut impl FnMut() -> bool) -> Option<KernelFile> {
    path.is_file().then(|| KernelFile::new(path, keep()))
}

impl CgroupFiles {
    /// The files of cgroup `rel`; `keep` says, file by file, whether a
    /// descriptor may be kept (the budget). Files that do not exist (a
    /// controller not enabled) are not read.
    pub fn open(
        accounting: &Accounting,
        rel: &str,
        wanted: Wanted,
        mut keep: impl FnMut() -> bool,
    ) -> Self {
        let mut kept = 0usize;
        let mut keep = || {
            let k = keep();
            kept += usize::from(k);
            k
        };
        let cpu_dir = dir_of(&accounting.cpu, rel);
        let cpu = match accounting.version {
            CgroupVersion::V2 => CpuFiles::V2 {
                stat: KernelFile::new(cpu_dir.join("cpu.stat"), keep()),
            },
            CgroupVersion::V1 => {
                let user = cpu_dir.join("cpuacct.usage_user");
                let system = cpu_dir.join("cpuacct.usage_sys");
                let usage = KernelFile::new(cpu_dir.join("cpuacct.usage"), keep());
                if user.is_file() && system.is_file() {
                    CpuFiles::V1Split {
                        usage,
                        user: KernelFile::new(user, keep()),
                        system: KernelFile::new(system, keep()),
                    }
                } else {
                    CpuFiles::V1Ticks {
                        usage,
                        stat: KernelFile::new(cpu_dir.join("cpuacct.stat"), keep()),
                    }
                }
            }
        };
        let (mut memory_current, mut memory_peak, mut io) = (None, None, None);
        if let (true, Some((mount, version))) = (wanted.memory, &accounting.memory) {
            let dir = dir_of(mount, rel);
            let (current, peak) = match version {
                CgroupVersion::V2 => ("memory.current", "memory.peak"),
                CgroupVersion::V1 => ("memory.usage_in_bytes", "memory.max_usage_in_bytes"),
            };
            memory_current = existing(dir.join(current), &mut keep);
            memory_peak = existing(dir.join(peak), &mut keep);
        }
        if let (true, Some((mount, version))) = (wanted.io, &accounting.io) {
            let dir = dir_of(mount, rel);
            let file = match version {
                CgroupVersion::V2 => "io.stat",
                CgroupVersion::V1 => "blkio.throttle.io_service_bytes_recursive",
            };
            io = existing(dir.join(file), &mut keep).map(|f| (f, *version));
        }
        Self {
            cpu,
            memory_current,
            memory_peak,
            io,
            kept,
        }
    }

    /// How many descriptors these files keep open.
    pub fn kept_descriptors(&self) -> usize {
        self.kept
    }

    /// Reads CPU time, and memory and I/O if `details`. CPU time must be
    /// readable (else the cgroup is gone or broken); the other figures are
    /// skipped when they fail.
    pub fn read(&mut self, buf: &mut ReadBuf, details: bool) -> Result<CgroupReading, ReadError> {
        let mut r = CgroupReading {
            cpu: self.read_cpu(buf)?,
            ..CgroupReading::default()
        };
        if details {
            self.read_details(buf, &mut r);
        }
        Ok(r)
    }

    /// Reads CPU time only.
    pub fn read_cpu(&mut self, buf: &mut ReadBuf) -> Result<CpuTime, ReadError> {
        let cpu = match &mut self.cpu {
            CpuFiles::V2 { stat } => {
                stat.read_into(buf).map_err(classify_error)?;
                let figures = parse_cpu_stat(buf.bytes())
                    .ok_or_else(|| ReadError::Other(odd(stat.path())))?;
                CpuTime {
                    total_ns: figures.usage_us.saturating_mul(1000),
                    user_sampled: figures.user_us,
                    system_sampled: figures.system_us,
                }
            }
            CpuFiles::V1Split {
                usage,
                user,
                system,
            } => CpuTime {
                total_ns: read_number(usage, buf)?,
                user_sampled: read_number(user, buf)?,
                system_sampled: read_number(system, buf)?,
            },
            CpuFiles::V1Ticks { usage, stat } => {
                let total_ns = read_number(usage, buf)?;
                stat.read_into(buf).map_err(classify_error)?;
                let (user_ticks, system_ticks) = parse_cpuacct_stat(buf.bytes()).unwrap_or((0, 0));
                CpuTime {
                    total_ns,
                    user_sampled: user_ticks,
                    system_sampled: system_ticks,
                }
            }
        };
        Ok(cpu)
    }

    /// Reads memory and I/O into `r`; a figure that fails stays `None`.
    pub fn read_details(&mut self, buf: &mut ReadBuf, r: &mut CgroupReading) {
        r.memory_current = self
            .memory_current
            .as_mut()
            .and_then(|f| read_number(f, buf).ok());
        r.memory_peak = self
            .memory_peak
            .as_mut()
            .and_then(|f| read_number(f, buf).ok());
        if let Some((file, version)) = &mut self.io {
            if file.read_into(buf).is_ok() {
                let (read, write) = match version {
                    CgroupVersion::V2 => parse_io_stat(buf.bytes()),
                    CgroupVersion::V1 => parse_blkio_bytes(buf.bytes()),
                };
                r.io_read = Some(read);
                r.io_write = Some(write);
            }
        }
    }
}

fn odd(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected content in {}", path.display()),
    )
}

fn read_number(file: &mut KernelFile, buf: &mut ReadBuf) -> Result<u64, ReadError> {
    file.read_into(buf).map_err(classify_error)?;
    parse_u64(trim(buf.bytes())).ok_or_else(|| ReadError::Other(odd(file.path())))
}

/// The CPU figures of a v2 `cpu.stat`, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuStat {
    /// `usage_usec` (user + system where the kernel omits it).
    pub usage_us: u64,
    /// `user_usec`.
    pub user_us: u64,
    /// `system_usec`.
    pub system_us: u64,
}

/// The figures of a v2 `cpu.stat`; `None` without `user_usec` and `system_usec`.
pub fn parse_cpu_stat(content: &[u8]) -> Option<CpuStat> {
    let (mut usage, mut user, mut system) = (None, None, None);
    for line in lines(content) {
        match parse_key_value(line) {
            Some((b"usage_usec", v)) => usage = Some(v),
            Some((b"user_usec", v)) => user = Some(v),
            Some((b"system_usec", v)) => system = Some(v),
            _ => {}
        }
    }
    let (user_us, system_us) = (user?, system?);
    Some(CpuStat {
        usage_us: usage.unwrap_or(user_us.saturating_add(system_us)),
        user_us,
        system_us,
    })
}

/// `(user, system)` ticks of a v1 `cpuacct.stat`.
pub fn parse_cpuacct_stat(content: &[u8]) -> Option<(u64, u64)> {
    let (mut user, mut system) = (None, None);
    for line in lines(content) {
        match parse_key_value(line) {
            Some((b"user", v)) => user = Some(v),
            Some((b"system", v)) => system = Some(v),
            _ => {}
        }
    }
    Some((user?, system?))
}

/// Bytes read and written, summed over the devices of a v2 `io.stat`
/// (`8:0 rbytes=1 wbytes=2 rios=...`).
pub fn parse_io_stat(content: &[u8]) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in lines(content) {
        for field in fields(line).skip(1) {
            if let Some(v) = field.strip_prefix(b"rbytes=").and_then(parse::parse_u64) {
                read = read.saturating_add(v);
            } else if let Some(v) = field.strip_prefix(b"wbytes=").and_then(parse::parse_u64) {
                write = write.saturating_add(v);
            }
        }
    }
    (read, write)
}

/// Bytes read and written, summed over the devices of a v1
/// `blkio.throttle.io_service_bytes*` (`8:0 Read 123`, ..., `Total 579`).
pub fn parse_blkio_bytes(content: &[u8]) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in lines(content) {
        let mut f = fields(line);
        let (Some(_device), Some(op), Some(value)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some(v) = parse_u64(value) else { continue };
        match op {
            b"Read" => read = read.saturating_add(v),
            b"Write" => write = write.saturating_add(v),
            _ => {}
        }
    }
    (read, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_formats() {
        let stat = b"usage_usec 171358\nuser_usec 163388\nsystem_usec 7970\nnice_usec 0\n";
        assert_eq!(
            parse_cpu_stat(stat),
            Some(CpuStat {
                usage_us: 171358,
                user_us: 163388,
                system_us: 7970
            })
        );
        assert_eq!(parse_cpu_stat(b"usage_usec 5\n"), None);
        assert_eq!(parse_cpuacct_stat(b"user 12\nsystem 3\n"), Some((12, 3)));
        let io = b"8:0 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n253:0 rbytes=100 wbytes=4 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(io), (1459300, 314773508));
        let blkio = b"8:0 Read 10\n8:0 Write 20\n8:0 Sync 30\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 30\n8:16 Read 1\n8:16 Write 2\nTotal 33\n";
        assert_eq!(parse_blkio_bytes(blkio), (11, 22));
    }

    #[test]
    fn an_interval_is_the_totals_delta_split_as_the_samples() {
        let cpu = |total_ns, user_sampled, system_sampled| CpuTime {
            total_ns,
            user_sampled,
            system_sampled,
        };
        // The samples (ticks) say 3 parts user to 1 system; the total is exact.
        let (u, s) = cpu(2_000_000_000, 130, 40)
            .delta_since(&cpu(1_000_000_000, 100, 30))
            .unwrap();
        assert!(
            (u - 0.75).abs() < 1e-9 && (s - 0.25).abs() < 1e-9,
            "{u} {s}"
        );
        // No tick in between: the proportion of everything so far.
        let (u, s) = cpu(1_010_000_000, 100, 100)
            .delta_since(&cpu(1_000_000_000, 100, 100))
            .unwrap();
        assert!(
            (u - 0.005).abs() < 1e-12 && (s - 0.005).abs() < 1e-12,
            "{u} {s}"
        );
        // Nothing sampled yet: user.
        assert_eq!(cpu(5, 0, 0).delta_since(&cpu(0, 0, 0)), Some((5e-9, 0.0)));
        // Backwards: a re-created cgroup.
        assert_eq!(cpu(5, 9, 9).delta_since(&cpu(6, 0, 0)), None);
    }
}
