//! The process's own resources, from /proc (Linux).

use serde_json::json;

/// RSS, the heap in use, open file descriptors, threads, and the tokio
/// tasks alive.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub rss_kib: u64,
    /// What malloc has handed out and not had back: growth here is a
    /// leak; RSS growth without it is memory malloc keeps for reuse.
    pub heap_kib: u64,
    pub fds: u64,
    pub threads: u64,
    pub tasks: u64,
}

impl Usage {
    pub fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let tasks = tokio::runtime::Handle::try_current()
            .map_or(0, |h| h.metrics().num_alive_tasks() as u64);
        // SAFETY: mallinfo2 only reads malloc's own statistics.
        let heap = unsafe { libc::mallinfo2() };
        Self {
            rss_kib: field("VmRSS:"),
            heap_kib: ((heap.uordblks + heap.hblkhd) / 1024) as u64,
            // read_dir holds one descriptor of its own while it counts.
            fds: fds.saturating_sub(1),
            threads: field("Threads:"),
            tasks,
        }
    }

    pub fn json(&self, at_s: f64) -> serde_json::Value {
        json!({
            "t_s": (at_s * 10.0).round() / 10.0,
            "rss_kib": self.rss_kib,
            "heap_kib": self.heap_kib,
            "fds": self.fds,
            "threads": self.threads,
            "tasks": self.tasks,
        })
    }
}
