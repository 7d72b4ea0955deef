//! What one run saw: every publish, confirm and delivery with its time,
//! and the errors each client reported on the way.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

/// Distinct error texts kept per run (for the notes of the report).
const MAX_NOTES: usize = 12;

/// Shared by the workload's tasks; times are milliseconds since the run
/// started.
pub struct Recorder {
    t0: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// New messages published (ids 0..published).
    published: u64,
    /// Publishes of an id again, after its confirm failed or was a nack.
    republished: u64,
    /// Ids handed to the client and not yet confirmed.
    pending: HashSet<u64>,
    confirmed: Vec<(u64, f64)>,
    delivered: Vec<(u64, f64)>,
    /// Confirms that ended in an error (not a nack).
    confirm_errors: u64,
    nacks: u64,
    /// `publish` calls that failed before a confirm existed.
    publish_errors: u64,
    /// Acks the client refused or failed, for a delivery of a lost
    /// connection.
    stale_acks: u64,
    /// lapin's `wait_for_recovery` returned the error: "recovery not
    /// possible" for that error.
    refused_waits: u64,
    notes: HashMap<String, u64>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since the run started.
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1e3
    }

    /// `id` was handed to the client; `again` if it had been before.
    pub fn published(&self, id: u64, again: bool) {
        let mut i = self.lock();
        if again {
            i.republished += 1;
        } else {
            i.published = i.published.max(id + 1);
        }
        i.pending.insert(id);
    }

    pub fn confirmed(&self, id: u64) {
        let t = self.now();
        let mut i = self.lock();
        i.pending.remove(&id);
        i.confirmed.push((id, t));
    }

    pub fn delivered(&self, id: u64) {
        let t = self.now();
        self.lock().delivered.push((id, t));
    }

    pub fn confirm_error(&self, what: &str) {
        let mut i = self.lock();
        i.confirm_errors += 1;
        note(&mut i, format!("confirm failed: {what}"));
    }

    pub fn nack(&self) {
        let mut i = self.lock();
        i.nacks += 1;
        note(&mut i, "nack".into());
    }

    pub fn publish_error(&self, what: &str) {
        let mut i = self.lock();
        i.publish_errors += 1;
        note(&mut i, format!("publish failed: {what}"));
    }

    pub fn stale_ack(&self) {
        self.lock().stale_acks += 1;
    }

    pub fn refused_wait(&self) {
        self.lock().refused_waits += 1;
    }

    pub fn note(&self, what: String) {
        note(&mut self.lock(), what);
    }

    /// Published ids not confirmed yet.
    pub fn unsettled(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn confirmed_count(&self) -> usize {
        self.lock().confirmed.len()
    }

    pub fn delivered_count(&self) -> usize {
        self.lock().delivered.len()
    }

    /// The time of the first confirm / delivery after `t`.
    pub fn first_after(&self, t: f64) -> (Option<f64>, Option<f64>) {
        let i = self.lock();
        let first = |v: &[(u64, f64)]| v.iter().map(|&(_, at)| at).find(|&at| at > t);
        (first(&i.confirmed), first(&i.delivered))
    }

    /// Whether every confirmed id has been delivered.
    pub fn all_confirmed_delivered(&self) -> bool {
        let i = self.lock();
        let delivered: HashSet<u64> = i.delivered.iter().map(|&(id, _)| id).collect();
        i.confirmed.iter().all(|(id, _)| delivered.contains(id))
    }

    /// The longest time without a confirm between `from` and `to` (both
    /// ends count as confirms), in ms.
    pub fn longest_confirm_gap(&self, from: f64, to: f64) -> f64 {
        let i = self.lock();
        let mut times: Vec<f64> = i
            .confirmed
            .iter()
            .map(|&(_, t)| t)
            .filter(|&t| t > from && t < to)
            .collect();
        times.push(from);
        times.push(to);
        times.sort_by(f64::total_cmp);
        times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
    }

    /// The run's totals, as JSON fields. `leftover` are ids drained from
    /// the queue after the client stopped (not lost: still stored).
    pub fn totals(&self, leftover: &[u64]) -> serde_json::Value {
        let i = self.lock();
        let confirmed: HashSet<u64> = i.confirmed.iter().map(|&(id, _)| id).collect();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut duplicates = 0u64;
        for &(id, _) in &i.delivered {
            if !seen.insert(id) {
                duplicates += 1;
            }
        }
        let client_distinct = seen.len();
        let mut left_duplicates = 0u64;
        for &id in leftover {
            if !seen.insert(id) {
                left_duplicates += 1;
            }
        }
        let lost: Vec<u64> = {
            let mut v: Vec<u64> = confirmed
                .iter()
                .filter(|id| !seen.contains(id))
                .copied()
                .collect();
            v.sort_unstable();
            v
        };
        let mut notes: Vec<(&String, &u64)> = i.notes.iter().collect();
        notes.sort();
        serde_json::json!({
            "published": i.published,
            "republished": i.republished,
            "confirmed": confirmed.len(),
            "never_confirmed": i.pending.len(),
            "delivered": i.delivered.len(),
            "distinct_delivered": client_distinct,
            "duplicates": duplicates,
            "leftover": leftover.len(),
            "leftover_duplicates": left_duplicates,
            "lost": lost.len(),
            "lost_ids": lost.iter().take(20).collect::<Vec<_>>(),
            "confirm_errors": i.confirm_errors,
            "nacks": i.nacks,
            "publish_errors": i.publish_errors,
            "stale_acks": i.stale_acks,
            "refused_waits": i.refused_waits,
            "notes": notes.iter().map(|(k, n)| format!("{n}x {k}")).collect::<Vec<_>>(),
        })
    }
}

fn note(i: &mut Inner, what: String) {
    if let Some(n) = i.notes.get_mut(&what) {
        *n += 1;
    } else if i.notes.len() < MAX_NOTES {
        i.notes.insert(what, 1);
    }
}
