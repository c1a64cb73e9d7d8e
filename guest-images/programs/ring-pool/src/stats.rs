//! Latency statistics and the JSON lines the workload prints.

use serde::Serialize;

/// Min, median, p99, max and mean of a set of latencies, in microseconds,
/// all exact: percentiles are nearest-rank over the sorted samples. (There
/// are N-1 samples, tens at most; an HDR histogram's 0.1 % buckets would
/// only blur them, e.g. report a p99 above the maximum.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub min_us: f64,
    pub median_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// Nanoseconds to microseconds (exact to the nanosecond for any latency
/// below 2^53 ns).
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Latency {
    /// `None` for an empty set: no figure is made up.
    pub fn from_ns(samples: &[u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_unstable();
        let sum: u128 = v.iter().map(|&s| s as u128).sum();
        Some(Latency {
            samples: v.len(),
            min_us: us(v[0]),
            median_us: us(nearest_rank(&v, 50)),
            p99_us: us(nearest_rank(&v, 99)),
            max_us: us(v[v.len() - 1]),
            mean_us: us((sum / v.len() as u128) as u64),
        })
    }
}

/// The `pct`-th percentile of sorted `v` by nearest rank: the smallest
/// sample with at least `pct` % of the samples at or below it.
pub fn nearest_rank(v: &[u64], pct: usize) -> u64 {
    let rank = (pct * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// The pool every record describes.
#[derive(Debug, Clone, Serialize)]
pub struct PoolDesc {
    pub rings: usize,
    pub pool_bytes: u64,
    pub buf_bytes: u64,
    pub bufs: usize,
    pub page: &'static str,
    pub page_requested: &'static str,
}

/// Every sample in microseconds, in the order measured (ring 1 first).
pub fn samples_us(ns: &[u64]) -> Vec<f64> {
    ns.iter().map(|&n| us(n)).collect()
}

/// One method's line: `{"kind":"ring-pool","method":...}`, its statistics
/// and every raw sample (`samples_us`, in the order measured; one per
/// ring, so a line stays around 12 bytes a ring).
#[derive(Debug, Serialize)]
pub struct MethodRecord<'a> {
    pub kind: &'static str,
    pub method: &'static str,
    #[serde(flatten)]
    pub pool: &'a PoolDesc,
    #[serde(flatten)]
    pub latency: Latency,
    pub samples_us: Vec<f64>,
}

/// The closing line: `{"kind":"ring-pool-summary",...}`.
#[derive(Debug, Serialize)]
pub struct SummaryRecord<'a> {
    pub kind: &'static str,
    #[serde(flatten)]
    pub pool: &'a PoolDesc,
    pub kernel: String,
    pub populate_s: f64,
    pub first_register_us: f64,
    /// `None` (null) with one ring: nothing was registered again.
    pub register_median_us: Option<f64>,
    pub clone_median_us: Option<f64>,
    pub ratio_register_over_clone: Option<f64>,
}

/// A failure line: `{"kind":"ring-pool-error",...}`.
#[derive(Debug, Serialize)]
pub struct ErrorRecord {
    pub kind: &'static str,
    pub error: &'static str,
    pub errno: Option<i32>,
    pub detail: String,
    pub kernel: String,
}

/// Median register / median clone, rounded to 0.1.
pub fn ratio(register: &Latency, clone: &Latency) -> f64 {
    if clone.median_us <= 0.0 {
        return f64::INFINITY;
    }
    (register.median_us / clone.median_us * 10.0).round() / 10.0
}

/// One JSON line.
pub fn line<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records are plain data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_of_samples() {
        let ns: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let l = Latency::from_ns(&ns).unwrap();
        assert_eq!(l.samples, 100);
        assert_eq!(l.min_us, 1.0);
        assert_eq!(l.max_us, 100.0);
        assert_eq!(l.median_us, 50.0);
        assert_eq!(l.p99_us, 99.0);
        assert_eq!(l.mean_us, 50.5);
        assert!(Latency::from_ns(&[]).is_none());
    }

    #[test]
    fn nearest_ranks() {
        let v: Vec<u64> = (1..=7).collect();
        assert_eq!(nearest_rank(&v, 50), 4);
        assert_eq!(nearest_rank(&v, 99), 7);
        assert_eq!(nearest_rank(&[5, 9], 50), 5);
        assert_eq!(nearest_rank(&[5], 99), 5);
        let v: Vec<u64> = (1..=200).collect();
        assert_eq!(nearest_rank(&v, 99), 198);
    }

    #[test]
    fn latency_precision() {
        let l = Latency::from_ns(&[7_300, 7_301, 123_456_789]).unwrap();
        assert_eq!(l.min_us, 7.3);
        assert_eq!(l.median_us, 7.301);
        assert_eq!(l.p99_us, 123_456.789);
        assert_eq!(l.max_us, 123_456.789);
    }

    #[test]
    fn json_lines() {
        let pool = PoolDesc {
            rings: 8,
            pool_bytes: 16 << 20,
            buf_bytes: 16 << 20,
            bufs: 1,
            page: "4K",
            page_requested: "2M",
        };
        let l = Latency::from_ns(&[1000, 2000, 3000]).unwrap();
        let s = line(&MethodRecord {
            kind: "ring-pool",
            method: "clone",
            pool: &pool,
            latency: l,
            samples_us: samples_us(&[3000, 1000, 2000]),
        });
        assert_eq!(
            s,
            r#"{"kind":"ring-pool","method":"clone","rings":8,"pool_bytes":16777216,"buf_bytes":16777216,"bufs":1,"page":"4K","page_requested":"2M","samples":3,"min_us":1.0,"median_us":2.0,"p99_us":3.0,"max_us":3.0,"mean_us":2.0,"samples_us":[3.0,1.0,2.0]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["median_us"], 2.0);
        let r = Latency::from_ns(&[30_000]).unwrap();
        assert_eq!(ratio(&r, &l), 15.0);
    }
}
