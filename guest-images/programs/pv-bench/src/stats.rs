//! Latency statistics and the JSON lines (the shape of ring-pool's:
//! kind, method, rings, pool_bytes, page, samples, min_us, median_us,
//! p99_us, ...), formatted by hand: numbers and fixed strings only.

use hdrhistogram::Histogram;
pub use ring_pool::stats::Latency;

/// An empty histogram of nanoseconds, 1 ns to 60 s at 3 significant
/// digits, its counts already touched: recording into it never faults a
/// page in (a page fault is a guest kernel entry, which a timed loop must
/// not pay for).
pub fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    // Writes every counter (the allocation's pages come in here).
    h.reset();
    h
}

/// The latency figures of a histogram of nanoseconds (each within the
/// histogram's 0.1 %); `None` when it is empty.
pub fn latency_of(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Some(Latency {
        samples: h.len() as usize,
        min_us: us(h.min()),
        median_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1000.0,
    })
}

/// `"samples":N,"min_us":..,...` of `l` (no braces).
pub fn latency_fields(l: &Latency) -> String {
    format!(
        "\"samples\":{},\"min_us\":{},\"median_us\":{},\"p99_us\":{},\"max_us\":{},\"mean_us\":{}",
        l.samples,
        num(l.min_us),
        num(l.median_us),
        num(l.p99_us),
        num(l.max_us),
        num(l.mean_us)
    )
}

/// `"samples_us":[..]`: every sample in microseconds, in the order
/// measured (no braces).
pub fn samples_field(ns: &[u64]) -> String {
    let v: Vec<String> = ring_pool::stats::samples_us(ns)
        .into_iter()
        .map(num)
        .collect();
    format!("\"samples_us\":[{}]", v.join(","))
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
            latency_fields(&l),
            r#""samples":3,"min_us":1.0,"median_us":2.0,"p99_us":3.0,"max_us":3.0,"mean_us":2.0"#
        );
    }

    #[test]
    fn histogram_figures_match_the_exact_ones() {
        let mut h = histogram();
        assert!(latency_of(&h).is_none());
        // 1 µs to 10 ms, spread like request latencies.
        let ns: Vec<u64> = (1..=10_000u64).map(|i| 1000 + i * i * 100).collect();
        for &v in &ns {
            h.record(v).unwrap();
        }
        let exact = Latency::from_ns(&ns).unwrap();
        let got = latency_of(&h).unwrap();
        assert_eq!(got.samples, exact.samples);
        for (g, e) in [
            (got.min_us, exact.min_us),
            (got.median_us, exact.median_us),
            (got.p99_us, exact.p99_us),
            (got.max_us, exact.max_us),
            (got.mean_us, exact.mean_us),
        ] {
            assert!((g - e).abs() <= e * 0.001, "{g} against {e}");
        }
        // A sample beyond the bounds is kept, at the largest value.
        h.saturating_record(u64::MAX);
        assert_eq!(latency_of(&h).unwrap().samples, ns.len() + 1);
    }

    #[test]
    fn json_bits() {
        assert_eq!(num(7.301), "7.301");
        assert_eq!(num(f64::INFINITY), "null");
        assert_eq!(string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
        assert_eq!(
            samples_field(&[7_301, 2_000, 123_456_789]),
            r#""samples_us":[7.301,2.0,123456.789]"#
        );
        assert_eq!(samples_field(&[]), r#""samples_us":[]"#);
    }
}
