//! The process's own limits and usage.

use carehare_benches::e2e::{cpu_time, rss_anon_kib, rss_kib, threads};

use crate::alloc::Heap;

/// Raises the soft limit of open files to at least `want` (the hard limit
/// stays; only root could raise it).
pub fn raise_nofile(want: u64) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    if lim.rlim_max < want {
        return Err(format!(
            "{want} open files needed, and the hard limit is {} (raise it as root: ulimit -Hn, or limits.conf)",
            lim.rlim_max
        ));
    }
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct we pass; the soft limit is within the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The machine's available memory (`MemAvailable`), in KiB.
pub fn mem_available_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The user + system CPU time of another process so far, from
/// `/proc/PID/stat`; `None` if it isn't on this machine.
pub fn process_cpu(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, which may hold
    // spaces): state is field 3, utime 14 and stime 15, in clock ticks.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_s > 0).then(|| std::time::Duration::from_secs_f64(ticks as f64 / per_s as f64))
}

/// How contended the machine's cores were, so far: `/proc/stat`'s steal
/// and `/proc/pressure/cpu`'s stall time. (Its busy and idle ticks are
/// not used: they are sampled at the timer tick, which an idle core
/// skips, so short bursts of work on a quiet machine count as idle.)
#[derive(Clone, Copy, Debug)]
pub struct MachineCpu {
    /// Ticks the host gave other guests while this one wanted to run, and
    /// all ticks, summed over the cores.
    steal: u64,
    ticks: u64,
    /// µs in which some runnable task waited for a core.
    waited_us: u64,
    at: std::time::Instant,
}

impl MachineCpu {
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal guest guest_nice;
        // guest time is already in user.
        let pressure = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
        let waited_us = pressure
            .lines()
            .find_map(|l| l.strip_prefix("some "))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse()
            .ok()?;
        Some(Self {
            steal: v.get(7).copied().unwrap_or(0),
            ticks: v.iter().take(8).sum(),
            waited_us,
            at: std::time::Instant::now(),
        })
    }

    /// Since `earlier`: the share of the time some task waited for a core,
    /// and the share of the cores the host took, in %.
    pub fn since(&self, earlier: &Self) -> (f64, f64) {
        let wall_us = self.at.duration_since(earlier.at).as_micros().max(1) as f64;
        let waited = self.waited_us.saturating_sub(earlier.waited_us) as f64 / wall_us;
        let ticks = self.ticks.saturating_sub(earlier.ticks).max(1) as f64;
        let steal = self.steal.saturating_sub(earlier.steal) as f64 / ticks;
        (waited * 100.0, steal * 100.0)
    }
}

/// What the process holds at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub rss_kib: u64,
    /// The anonymous part of `rss_kib`: heap and stacks.
    pub rss_anon_kib: u64,
    pub threads: u64,
    pub heap: Heap,
    pub cpu: std::time::Duration,
}

impl Usage {
    pub fn now() -> Self {
        Self {
            rss_kib: rss_kib(),
            rss_anon_kib: rss_anon_kib(),
            threads: threads(),
            heap: Heap::now(),
            cpu: cpu_time(),
        }
    }
}
