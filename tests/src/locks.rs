//! The file locks that keep test suites from disturbing each other on the
//! shared test broker and cluster.
//!
//! Suites that only use the broker run under a shared lock on
//! [`BROKER_LOCK`]; whatever stops, restarts or force-closes connections
//! on it needs that lock exclusively, and whatever stops cluster nodes
//! needs [`CLUSTER_LOCK`] exclusively (`scripts/test` holds it around the
//! whole `cargo test`). [`ExclusiveLock::take`] takes one from inside a
//! test, unless the process running the tests already holds it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};

/// Held shared by suites using the single test broker, exclusively by
/// those that restart it or close connections that are not theirs.
pub const BROKER_LOCK: &str = "/tmp/carehare-broker.lock";
/// Held exclusively by suites that stop cluster nodes.
pub const CLUSTER_LOCK: &str = "/tmp/carehare-cluster.lock";

/// How long [`ExclusiveLock::take`] waits for other suites to finish.
const WAIT_SECS: &str = "1200";

/// An exclusive `flock` on a lock file, held until dropped.
///
/// It is held by a `flock` child process (`sh -c 'cat'` under `flock`),
/// which lets go when its stdin closes: when this is dropped, or when the
/// test process dies, however it dies. Processes the test starts later
/// (a broker started by `start.sh`) never inherit it.
pub struct ExclusiveLock {
    holder: Option<Child>,
}

impl ExclusiveLock {
    /// Takes the lock on `path`, waiting up to 20 minutes for the suites
    /// that hold it. If an ancestor of this process (`flock -o PATH cargo
    /// test`) holds it exclusively, there is nothing to take.
    ///
    /// # Panics
    /// If the lock can't be had within 20 minutes, or if an ancestor holds
    /// it shared: this process could never get it then.
    pub fn take(path: &str) -> Self {
        match held_by_an_ancestor(path) {
            Some(Held::Exclusive) => {
                println!("{path}: held by the process that runs the tests");
                return Self { holder: None };
            }
            Some(Held::Shared) => panic!(
                "{path} is held shared by the process that runs the tests, and this test needs it \
                 exclusively: run it without that lock (it takes it), or under `flock -o {path}`"
            ),
            None => {}
        }
        println!("{path}: taking it (exclusive; other suites may hold it for a while)");
        let started = std::time::Instant::now();
        let mut child = Command::new("flock")
            .args([
                "-w",
                WAIT_SECS,
                path,
                "sh",
                "-c",
                "echo locked && exec cat >/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock runs");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "locked" {
            let _ = child.wait();
            panic!("could not take {path} within {WAIT_SECS} s");
        }
        println!("{path}: taken after {:.1?}", started.elapsed());
        Self {
            holder: Some(child),
        }
    }
}

impl Drop for ExclusiveLock {
    fn drop(&mut self) {
        if let Some(mut child) = self.holder.take() {
            // EOF on its stdin ends `cat`, and with it the lock.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

enum Held {
    Exclusive,
    Shared,
}

/// How an ancestor of this process holds a `flock` on `path`, from
/// `/proc/locks` (which names the holder's pid and the file's inode).
fn held_by_an_ancestor(path: &str) -> Option<Held> {
    let inode = std::fs::metadata(path).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let ancestors = ancestors();
    for line in locks.lines() {
        // `1: FLOCK  ADVISORY  WRITE 2015 fe:00:10010681 0 EOF`; a waiter
        // has `->` after the number.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, kind, pid, file, ..] = fields.as_slice() else {
            continue;
        };
        let same_file = file.rsplit(':').next().and_then(|i| i.parse::<u64>().ok()) == Some(inode);
        let by_ancestor = pid.parse::<u32>().is_ok_and(|p| ancestors.contains(&p));
        if same_file && by_ancestor {
            return Some(if *kind == "WRITE" {
                Held::Exclusive
            } else {
                Held::Shared
            });
        }
    }
    None
}

/// The pids of this process's parent, grandparent, ... up to init.
fn ancestors() -> Vec<u32> {
    let mut out = Vec::new();
    let mut pid = std::process::id();
    while pid > 1 {
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            break;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            break;
        };
        out.push(ppid);
        pid = ppid;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_reach_init() {
        let chain = ancestors();
        assert!(!chain.is_empty());
        assert!(!chain.contains(&std::process::id()));
    }

    #[test]
    fn take_holds_the_lock_until_dropped() {
        let path = std::env::temp_dir().join(format!("carehare-lock-test-{}", std::process::id()));
        let path = path.to_str().unwrap().to_string();
        let held = |pid: u32| {
            let inode = std::fs::metadata(&path).unwrap().ino();
            std::fs::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .any(|l| {
                    l.contains(&format!(" {pid} "))
                        && l.contains(&format!(":{inode} "))
                        && l.contains("WRITE")
                })
        };
        let lock = ExclusiveLock::take(&path);
        let holder = lock.holder.as_ref().unwrap().id();
        assert!(held(holder));
        // Nobody above this process holds it.
        assert!(held_by_an_ancestor(&path).is_none());
        drop(lock);
        assert!(!held(holder));
        let _ = std::fs::remove_file(&path);
    }
}
