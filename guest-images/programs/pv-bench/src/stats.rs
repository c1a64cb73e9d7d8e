//! Latency statistics and the JSON lines (the shape of ring-pool's:
//! kind, method, rings, pool_bytes, page, samples, min_us, median_us,
//! p99_us, ...), formatted by hand: numbers and fixed strings only.

/// Exact nearest-rank statistics of a set of nanosecond samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub min_us: f64,
    pub median_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The `pct`-th percentile of sorted `v` by nearest rank.
pub fn nearest_rank(v: &[u64], pct: usize) -> u64 {
    let rank = (pct * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

impl Latency {
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

    /// `"samples":N,"min_us":..,...` (no braces).
    pub fn fields(&self) -> String {
        format!(
            "\"samples\":{},\"min_us\":{},\"median_us\":{},\"p99_us\":{},\"max_us\":{},\"mean_us\":{}",
            self.samples,
            num(self.min_us),
            num(self.median_us),
            num(self.p99_us),
            num(self.max_us),
            num(self.mean_us)
        )
    }
}

/// A JSON number (finite; non-finite values become null).
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "null".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// A JSON string literal (escapes quotes, backslashes, control chars).
pub fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        let ns: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let l = Latency::from_ns(&ns).unwrap();
        assert_eq!(
            (l.min_us, l.median_us, l.p99_us, l.max_us, l.mean_us),
            (1.0, 50.0, 99.0, 100.0, 50.5)
        );
        assert!(Latency::from_ns(&[]).is_none());
        let l = Latency::from_ns(&[1000, 2000, 3000]).unwrap();
        assert_eq!(
            l.fields(),
            r#""samples":3,"min_us":1.0,"median_us":2.0,"p99_us":3.0,"max_us":3.0,"mean_us":2.0"#
        );
    }

    #[test]
    fn json_bits() {
        assert_eq!(num(7.301), "7.301");
        assert_eq!(num(f64::INFINITY), "null");
        assert_eq!(string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
