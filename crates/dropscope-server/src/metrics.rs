//! Prometheus metrics, kept in atomics and rendered as text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dropscope_store::StoreStats;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let l = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{l} {sum}");
        let _ = writeln!(out, "{name}_count{l} {n}");
    }
}

/// Every counter the server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub capture_requests: AtomicU64,
    /// Rejected requests and the events they carried, by reason (error code).
    rejected: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    /// Time of `Store::append` (WAL write + fsync, group commit + apply).
    pub append_latency: Histogram,
    /// Whole capture request, body read to ack.
    pub capture_latency: Histogram,
    queries: Mutex<BTreeMap<String, (std::sync::Arc<Histogram>, u64)>>,
}

impl Metrics {
    pub fn reject(&self, reason: &'static str, events: usize) {
        let mut m = self.rejected.lock().expect("metrics lock");
        let e = m.entry(reason).or_default();
        e.0 += 1;
        e.1 += events as u64;
    }

    pub fn query(&self, kind: &str, d: Duration, ok: bool) {
        let h = {
            let mut m = self.queries.lock().expect("metrics lock");
            let e = m.entry(kind.to_string()).or_default();
            if !ok {
                e.1 += 1;
            }
            e.0.clone()
        };
        h.observe(d);
    }

    /// Prometheus text exposition format.
    pub fn render(&self, stats: Option<&StoreStats>) -> String {
        let mut o = String::with_capacity(4096);
        let c = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        c(
            &mut o,
            "dropscope_events_accepted_total",
            "Events captured and stored durably.",
            self.events_accepted.load(Ordering::Relaxed),
        );
        c(
            &mut o,
            "dropscope_events_duplicate_total",
            "Captured events dropped as duplicates (uuid seen before).",
            self.events_duplicate.load(Ordering::Relaxed),
        );
        c(
            &mut o,
            "dropscope_capture_requests_total",
            "Capture requests received.",
            self.capture_requests.load(Ordering::Relaxed),
        );
        {
            let m = self.rejected.lock().expect("metrics lock");
            o.push_str("# HELP dropscope_capture_rejected_requests_total Capture requests refused, by reason.\n# TYPE dropscope_capture_rejected_requests_total counter\n");
            for (r, (n, _)) in m.iter() {
                let _ = writeln!(
                    o,
                    "dropscope_capture_rejected_requests_total{{reason=\"{r}\"}} {n}"
                );
            }
            o.push_str("# HELP dropscope_events_rejected_total Events in refused capture requests (as far as they were counted), by reason.\n# TYPE dropscope_events_rejected_total counter\n");
            for (r, (_, e)) in m.iter() {
                let _ = writeln!(o, "dropscope_events_rejected_total{{reason=\"{r}\"}} {e}");
            }
        }
        o.push_str("# HELP dropscope_append_seconds Store append time per capture request: WAL write and fsync (group commit) plus apply.\n# TYPE dropscope_append_seconds histogram\n");
        self.append_latency
            .render(&mut o, "dropscope_append_seconds", "");
        o.push_str("# HELP dropscope_capture_seconds Capture request time from first byte read to durable ack.\n# TYPE dropscope_capture_seconds histogram\n");
        self.capture_latency
            .render(&mut o, "dropscope_capture_seconds", "");
        {
            let m = self.queries.lock().expect("metrics lock");
            o.push_str("# HELP dropscope_query_seconds Query latency by kind.\n# TYPE dropscope_query_seconds histogram\n");
            for (k, (h, _)) in m.iter() {
                h.render(&mut o, "dropscope_query_seconds", &format!("kind=\"{k}\""));
            }
            o.push_str("# HELP dropscope_query_errors_total Refused or failed queries by kind.\n# TYPE dropscope_query_errors_total counter\n");
            for (k, (_, e)) in m.iter() {
                let _ = writeln!(o, "dropscope_query_errors_total{{kind=\"{k}\"}} {e}");
            }
        }
        if let Some(s) = stats {
            let g = |o: &mut String, name: &str, help: &str, v: u64| {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
            };
            g(
                &mut o,
                "dropscope_store_events",
                "Events in the store.",
                s.events as u64,
            );
            g(
                &mut o,
                "dropscope_store_unflushed_events",
                "Events only in the WAL, not yet in a segment.",
                s.unflushed_events as u64,
            );
            g(
                &mut o,
                "dropscope_store_segments",
                "Segment files.",
                s.segments as u64,
            );
            g(
                &mut o,
                "dropscope_store_bytes_on_disk",
                "Bytes of the data directory.",
                s.bytes_on_disk,
            );
            g(
                &mut o,
                "dropscope_store_bytes_in_memory",
                "Approximate heap bytes of event columns.",
                s.bytes_in_memory as u64,
            );
            g(
                &mut o,
                "dropscope_store_flush_failing",
                "1 while the last flush of the WAL into a segment failed (events stay in the WAL; retried every second), else 0.",
                u64::from(s.flush_error.is_some()),
            );
            g(
                &mut o,
                "dropscope_store_background_error",
                "1 while a background compaction has failed (see /healthz), else 0.",
                u64::from(s.background_error.is_some()),
            );
            if let Some(w) = &s.wal {
                c(
                    &mut o,
                    "dropscope_wal_syncs_total",
                    "WAL fsyncs (group commits) since open.",
                    w.syncs,
                );
                c(
                    &mut o,
                    "dropscope_wal_appends_total",
                    "WAL appends since open (appends per sync = group commit factor).",
                    w.appends,
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.events_accepted.fetch_add(3, Ordering::Relaxed);
        m.reject("max_body_bytes", 0);
        m.query("funnel", Duration::from_millis(3), true);
        m.append_latency.observe(Duration::from_micros(700));
        let t = m.render(None);
        assert!(t.contains("dropscope_events_accepted_total 3"));
        assert!(
            t.contains("dropscope_capture_rejected_requests_total{reason=\"max_body_bytes\"} 1")
        );
        assert!(t.contains("dropscope_query_seconds_bucket{kind=\"funnel\",le=\"0.005\"} 1"));
        assert!(t.contains("dropscope_append_seconds_bucket{le=\"0.001\"} 1"));
        assert!(t.contains("dropscope_query_seconds_count{kind=\"funnel\"} 1"));
    }

    #[test]
    fn a_failing_flush_shows() {
        let stats = StoreStats {
            flush_error: Some("disk full".into()),
            ..Default::default()
        };
        let t = Metrics::default().render(Some(&stats));
        assert!(t.contains("dropscope_store_flush_failing 1"), "{t}");
        assert!(t.contains("dropscope_store_background_error 0"), "{t}");
    }
}
