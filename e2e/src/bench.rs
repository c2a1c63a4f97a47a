//! Small helpers shared by the benchmark programs under `e2e/examples/` (run by the scripts in
//! `e2e/bench/`): the `--smoke` switch, medians and percentiles, one JSON object per measurement,
//! and an aligned text table.
//!
//! Must not: decide pass or fail. Benchmarks report; a slow machine is not an error.

use serde_json::{Map, Value};

/// True when `--smoke` is among the program's arguments (small sizes, for CI).
pub fn smoke() -> bool {
    std::env::args().any(|a| a == "--smoke")
}

/// The median of `values` (the mean of the two middle ones for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `p`-th percentile (0..=100) of `values`, nearest-rank; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// `a / b`, or NaN when either is missing or `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// A JSON number rounded to 3 decimals, or `null` for NaN (not measured).
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        serde_json::json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// Prints one measurement as a JSON line: `{"bench":BENCH,"case":CASE, ...fields}`.
pub fn json_line(bench: &str, case: &str, fields: &[(&str, Value)]) {
    let mut m = Map::new();
    m.insert("bench".into(), Value::from(bench));
    m.insert("case".into(), Value::from(case));
    for (k, v) in fields {
        m.insert((*k).into(), v.clone());
    }
    println!("{}", Value::Object(m));
}

/// Formats a number for the table: `-` when not measured.
pub fn cell(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "-".into()
    }
}

/// Prints `rows` under `header` with every column padded to its widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width.get(i).copied().unwrap_or(0)))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|h| (*h).to_string()).collect());
    line(width.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        line(r.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(ratio(1.0, 0.0).is_nan());
        assert_eq!(num(1.23456), serde_json::json!(1.235));
        assert_eq!(num(f64::NAN), Value::Null);
    }
}
