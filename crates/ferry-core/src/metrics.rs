//! In-process metrics rendered as Prometheus text. Counters and histograms
//! are fed by the worker and intake; gauges that come from the database are
//! passed in at render time so scraping never races a cached value.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, String), u64>,
    histograms: BTreeMap<(&'static str, String), Histogram>,
    gauges: BTreeMap<(&'static str, String), f64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// `{a="x",b="y"}` with values escaped. Written into one string: it is
/// called for every run and every webhook.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let len: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = String::with_capacity(len + 2);
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn inc(&self, name: &'static str, labels: String, by: u64) {
        *self.lock().counters.entry((name, labels)).or_default() += by;
    }

    pub fn set(&self, name: &'static str, labels: String, value: f64) {
        self.lock().gauges.insert((name, labels), value);
    }

    pub fn observe(&self, name: &'static str, labels: String, value: f64) {
        let mut inner = self.lock();
        let h = inner.histograms.entry((name, labels)).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if value <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += value;
        h.count += 1;
    }

    /// A finished attempt of a run.
    /// One attempt of a run ended with `outcome`, on connector `version`
    /// (the exact version that ran; empty if none could be resolved).
    /// `connector` and `outcome` come first, so a series still begins
    /// `ferry_runs_total{connector="…",outcome="…"`.
    pub fn run_finished(&self, connector: &str, version: &str, outcome: &str, seconds: f64) {
        self.inc(
            "ferry_runs_total",
            labels(&[
                ("connector", connector),
                ("outcome", outcome),
                ("version", version),
            ]),
            1,
        );
        self.observe(
            "ferry_run_duration_seconds",
            labels(&[("connector", connector), ("version", version)]),
            seconds,
        );
    }

    pub fn counter_value(&self, name: &'static str, labels: &str) -> u64 {
        self.lock()
            .counters
            .get(&(name, labels.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text exposition; `extra` are gauges read just now.
    pub fn render(&self, extra: &[(&'static str, String, f64)]) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let mut typed = std::collections::BTreeSet::new();
        let mut ty = |out: &mut String, name: &str, kind: &str| {
            if typed.insert(name.to_string()) {
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
        };
        for ((name, l), v) in &inner.counters {
            ty(&mut out, name, "counter");
            let _ = writeln!(out, "{name}{l} {v}");
        }
        let mut gauges: Vec<(&str, &String, f64)> =
            inner.gauges.iter().map(|((n, l), v)| (*n, l, *v)).collect();
        gauges.extend(extra.iter().map(|(n, l, v)| (*n, l, *v)));
        gauges.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (name, l, v) in gauges {
            ty(&mut out, name, "gauge");
            let _ = writeln!(out, "{name}{l} {v}");
        }
        for ((name, l), h) in &inner.histograms {
            ty(&mut out, name, "histogram");
            let inner_labels = l.trim_start_matches('{').trim_end_matches('}');
            let sep = if inner_labels.is_empty() { "" } else { "," };
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{inner_labels}{sep}le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{inner_labels}{sep}le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{l} {}", h.sum);
            let _ = writeln!(out, "{name}_count{l} {}", h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_histograms() {
        let m = Metrics::default();
        m.run_finished("webhook", "1.0.0", "succeeded", 0.02);
        m.run_finished("webhook", "1.0.0", "succeeded", 2.0);
        let text = m.render(&[("ferry_store_up", String::new(), 1.0)]);
        assert!(
            text.contains(
                "ferry_runs_total{connector=\"webhook\",outcome=\"succeeded\",version=\"1.0.0\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ferry_run_duration_seconds_bucket{connector=\"webhook\",version=\"1.0.0\",le=\"0.025\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "ferry_run_duration_seconds_count{connector=\"webhook\",version=\"1.0.0\"} 2"
        ));
        assert!(text.contains("# TYPE ferry_store_up gauge\nferry_store_up 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[]), "");
        assert_eq!(labels(&[("a", "x")]), r#"{a="x"}"#);
        assert_eq!(
            labels(&[("a", r#"q"u\o"#), ("b", "two\nlines")]),
            r#"{a="q\"u\\o",b="two\nlines"}"#
        );
    }
}
