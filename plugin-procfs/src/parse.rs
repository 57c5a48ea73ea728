//! Parsers for the /proc formats this plugin reads. They work on bytes (no
//! UTF-8 check, no allocation) and return `None` for anything odd, so that
//! the caller can skip the line with a debug log instead of failing. The
//! generic ones (fields, integers, lines) are shared with the other readers
//! of kernel files, in `alumet_kernelfs::parse`.

pub use alumet_kernelfs::parse::{fields, lines, parse_key_value, parse_u32, parse_u64, trim};

/// Number of CPU time states /proc/stat can show, in kernel order.
pub const CPU_STATES: usize = 10;

/// Names of the CPU time states, in /proc/stat order.
pub const CPU_STATE_NAMES: [&str; CPU_STATES] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

/// The tick counters of one `cpu` line of /proc/stat. Old kernels show
/// fewer states; `count` says how many are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    /// Ticks per state, in [`CPU_STATE_NAMES`] order.
    pub ticks: [u64; CPU_STATES],
    /// How many states the line had.
    pub count: usize,
}

/// Which CPU a `cpu` line of /proc/stat is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuLine {
    /// The `cpu` line: every CPU together.
    Total,
    /// A `cpuN` line.
    Core(u32),
}

/// Parses a /proc/stat line starting with `cpu`. `None` if it is not a cpu
/// line or is malformed (fewer than 4 states: user, nice, system, idle).
pub fn parse_cpu_line(line: &[u8]) -> Option<(CpuLine, CpuTicks)> {
    let mut it = fields(line);
    let label = it.next()?;
    let which = match label.strip_prefix(b"cpu")? {
        b"" => CpuLine::Total,
        digits => CpuLine::Core(parse_u32(digits)?),
    };
    let mut ticks = CpuTicks::default();
    for field in it.take(CPU_STATES) {
        ticks.ticks[ticks.count] = parse_u64(field)?;
        ticks.count += 1;
    }
    (ticks.count >= 4).then_some((which, ticks))
}

/// A line of /proc/meminfo: key, value, and whether the value is in kB
/// (the `HugePages_*` lines are counts without unit).
pub fn parse_meminfo_line(line: &[u8]) -> Option<(&[u8], u64, bool)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let key = trim(&line[..colon]);
    let mut it = fields(&line[colon + 1..]);
    let value = parse_u64(it.next()?)?;
    let in_kb = match it.next() {
        None => false,
        Some(b"kB") => true,
        Some(_) => return None,
    };
    (!key.is_empty()).then_some((key, value, in_kb))
}

/// Counters of one interface in /proc/net/dev that this plugin reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetCounters {
    /// Received: bytes, packets, errors, drops.
    pub rx: [u64; 4],
    /// Transmitted: bytes, packets, errors, drops.
    pub tx: [u64; 4],
}

/// A line of /proc/net/dev: interface name and counters. `None` for the two
/// header lines and malformed lines.
pub fn parse_netdev_line(line: &[u8]) -> Option<(&[u8], NetCounters)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = trim(&line[..colon]);
    if name.is_empty() || name.contains(&b'|') {
        return None;
    }
    let mut values = [0u64; 16];
    let mut n = 0;
    for field in fields(&line[colon + 1..]) {
        if n == values.len() {
            break;
        }
        values[n] = parse_u64(field)?;
        n += 1;
    }
    // 8 receive columns then at least the first 4 transmit columns.
    if n < 12 {
        return None;
    }
    let counters = NetCounters {
        rx: [values[0], values[1], values[2], values[3]],
        tx: [values[8], values[9], values[10], values[11]],
    };
    Some((name, counters))
}

/// The first field of /proc/uptime, in seconds.
pub fn parse_uptime_seconds(content: &[u8]) -> Option<f64> {
    let first = fields(content).next()?;
    let text = std::str::from_utf8(first).ok()?;
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// What this plugin uses of /proc/PID/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStat<'a> {
    /// Field 2, without its parentheses: the process name, up to 15 bytes,
    /// which may itself contain spaces and parentheses.
    pub comm: &'a [u8],
    /// Field 3: R, S, D, Z...
    pub state: u8,
    /// Field 4.
    pub ppid: u32,
    /// Field 14, in clock ticks.
    pub utime_ticks: u64,
    /// Field 15, in clock ticks.
    pub stime_ticks: u64,
    /// Fields 16 + 17 (`cutime` + `cstime`), in clock ticks: the CPU time of
    /// the children this process has reaped (and of theirs, recursively).
    pub children_ticks: u64,
    /// Field 20: threads in the process (0 when unreadable).
    pub num_threads: u64,
    /// Field 22, in clock ticks after boot: with the pid, identifies a process.
    pub start_ticks: u64,
    /// Field 23, in bytes.
    pub vsize_bytes: u64,
    /// Field 24, in pages.
    pub rss_pages: u64,
}

/// Parses /proc/PID/stat. The name is delimited by the first `(` and the
/// LAST `)`, since a name can contain `) ` itself.
pub fn parse_pid_stat(content: &[u8]) -> Option<PidStat<'_>> {
    let open = content.iter().position(|&b| b == b'(')?;
    let close = content.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = &content[open + 1..close];
    // Fields from 3 on; index i holds field i + 3.
    let mut rest = fields(&content[close + 1..]);
    let state = *rest.next()?.first()?;
    let ppid = parse_u32(rest.next()?)?;
    // Skip fields 5..=13 (9 fields) to reach utime (14).
    let mut rest = rest.skip(9);
    let utime_ticks = parse_u64(rest.next()?)?;
    let stime_ticks = parse_u64(rest.next()?)?;
    // cutime, cstime are signed in the kernel's format; negative is nonsense, read as 0.
    let cutime = rest.next()?;
    let cstime = rest.next()?;
    let children_ticks = parse_u64(cutime)
        .unwrap_or(0)
        .saturating_add(parse_u64(cstime).unwrap_or(0));
    // Skip fields 18..=19 (priority, nice) to reach num_threads (20), then
    // itrealvalue (21) to reach starttime (22).
    let mut rest = rest.skip(2);
    // Unreadable: 0, which makes the caller re-read this file at every poll.
    let num_threads = parse_u64(rest.next()?).unwrap_or(0);
    let mut rest = rest.skip(1);
    let start_ticks = parse_u64(rest.next()?)?;
    let vsize_bytes = parse_u64(rest.next()?)?;
    let rss_pages = parse_u64(rest.next()?)?;
    Some(PidStat {
        comm,
        state,
        ppid,
        utime_ticks,
        stime_ticks,
        children_ticks,
        num_threads,
        start_ticks,
        vsize_bytes,
        rss_pages,
    })
}

/// The first field of /proc/PID/schedstat: the time the process's main
/// thread has run on a CPU, in ns (exact, unlike the ticks of /proc/PID/stat).
pub fn parse_schedstat_runtime_ns(content: &[u8]) -> Option<u64> {
    parse_u64(fields(content).next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b""), None);
    }

    #[test]
    fn cpu_lines() {
        let (which, t) = parse_cpu_line(b"cpu  8510 0 2761 142458 231 0 79 16 0 0").unwrap();
        assert_eq!(which, CpuLine::Total);
        assert_eq!(t.count, 10);
        assert_eq!(t.ticks[3], 142458);
        let (which, t) = parse_cpu_line(b"cpu7 1 2 3 4").unwrap();
        assert_eq!(which, CpuLine::Core(7));
        assert_eq!(t.count, 4);
        assert!(parse_cpu_line(b"cpu1 1 2").is_none());
        assert!(parse_cpu_line(b"cpux 1 2 3 4").is_none());
        assert!(parse_cpu_line(b"ctxt 5").is_none());
        assert!(parse_cpu_line(b"cpu 1 2 x 4").is_none());
    }

    #[test]
    fn meminfo_lines() {
        assert_eq!(
            parse_meminfo_line(b"MemTotal:       24683656 kB"),
            Some((&b"MemTotal"[..], 24683656, true))
        );
        assert_eq!(
            parse_meminfo_line(b"HugePages_Total:       0"),
            Some((&b"HugePages_Total"[..], 0, false))
        );
        assert!(parse_meminfo_line(b"MemFree: lots kB").is_none());
        assert!(parse_meminfo_line(b"no colon 12").is_none());
    }

    #[test]
    fn netdev_lines() {
        assert!(parse_netdev_line(b" face |bytes    packets errs drop").is_none());
        assert!(parse_netdev_line(b"Inter-|   Receive  |  Transmit").is_none());
        let (name, c) = parse_netdev_line(
            b"  eth0: 95826559    3902    1    2    0     0          0         0   259279    2855    3    4    0     0       0          0",
        )
        .unwrap();
        assert_eq!(name, b"eth0");
        assert_eq!(c.rx, [95826559, 3902, 1, 2]);
        assert_eq!(c.tx, [259279, 2855, 3, 4]);
        // Old kernels glued the first number to the colon.
        let (_, c) = parse_netdev_line(b"lo:123 1 0 0 0 0 0 0 456 2 0 0 0 0 0 0").unwrap();
        assert_eq!(c.rx[0], 123);
        assert!(parse_netdev_line(b"eth1: 1 2 3").is_none());
    }

    #[test]
    fn pid_stat_with_plain_and_tricky_names() {
        let line = b"8693 (cat) R 8690 8690 5061 0 -1 4194304 95 0 0 0 7 3 0 0 20 0 1 0 77353 3133440 382 18446744073709551615 0 0";
        let s = parse_pid_stat(line).unwrap();
        assert_eq!(s.comm, b"cat");
        assert_eq!(s.state, b'R');
        assert_eq!(s.ppid, 8690);
        assert_eq!((s.utime_ticks, s.stime_ticks), (7, 3));
        assert_eq!(s.start_ticks, 77353);
        assert_eq!(s.vsize_bytes, 3133440);
        assert_eq!(s.rss_pages, 382);
        assert_eq!(s.num_threads, 1);

        let line = b"42 (a) b (c)) S 1 42 42 0 -1 0 0 0 0 0 11 12 0 0 20 0 1 0 500 4096 2 0";
        let s = parse_pid_stat(line).unwrap();
        assert_eq!(s.comm, b"a) b (c)");
        assert_eq!(s.state, b'S');
        assert_eq!((s.utime_ticks, s.stime_ticks, s.start_ticks), (11, 12, 500));
    }

    #[test]
    fn truncated_pid_stat_is_rejected() {
        assert!(parse_pid_stat(b"1 (init) S 0 1 1 0 -1 0 0 0 0 0 5").is_none());
        assert!(parse_pid_stat(b"1 (init").is_none());
        assert!(parse_pid_stat(b"").is_none());
        assert!(parse_pid_stat(b"1 )x( S").is_none());
    }

    #[test]
    fn schedstat_runtime() {
        assert_eq!(
            parse_schedstat_runtime_ns(b"1630297 229372 12\n"),
            Some(1630297)
        );
        assert_eq!(parse_schedstat_runtime_ns(b"x 1 2\n"), None);
        assert_eq!(parse_schedstat_runtime_ns(b""), None);
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime_seconds(b"773.53 1427.48\n"), Some(773.53));
        assert_eq!(parse_uptime_seconds(b"garbage"), None);
        assert_eq!(parse_uptime_seconds(b""), None);
    }

    #[test]
    fn trimming() {
        assert_eq!(trim(b"  eth0 "), b"eth0");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
    }
}
