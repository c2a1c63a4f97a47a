//! Go's `time.ParseDuration` syntax (`90s`, `1m30s`, `1.5s`, `300ms`), which MetalLB uses for
//! `hold-time` and `keepalive-time`, and MetalLB's rounding down to whole seconds.
//!
//! Must not: apply any BGP rule (the peer validator does).

use std::time::Duration;

/// Parses a Go duration into signed nanoseconds. The error says what is wrong.
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, r) = rest.split_at(int_len);
        rest = r;
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number such as 90s or 1m30s".to_string());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let (unit, r) = rest.split_at(unit_len);
        rest = r;
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit (use ns, us, ms, s, m or h)".to_string()),
            other => {
                return Err(format!(
                    "unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ))
            }
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse::<i128>()
                .ok()
                .filter(|v| *v < 1i128 << 64)
                .ok_or_else(|| "number too large".to_string())?
        };
        let mut part = int * scale;
        // Fraction: digits beyond nanosecond precision are dropped, as Go does.
        let mut frac_scale = scale;
        for d in frac_part.bytes() {
            frac_scale /= 10;
            if frac_scale == 0 {
                break;
            }
            part += i128::from(d - b'0') * frac_scale;
        }
        total += part;
        if total > i128::from(i64::MAX) {
            return Err("duration too large".to_string());
        }
    }
    Ok(if neg { -total } else { total })
}

/// MetalLB's `time.Duration(int(d.Seconds())) * time.Second`: truncate toward zero to whole
/// seconds. Returns the signed number of seconds.
pub fn whole_seconds(nanos: i128) -> i64 {
    // |nanos| <= i64::MAX, so the quotient fits.
    i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX)
}

/// A non-negative whole number of seconds as a `Duration`.
pub fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        assert_eq!(parse_go_duration("90s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_go_duration("2µs"), Ok(2_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-3s"), Ok(-3_000_000_000));
        assert!(parse_go_duration("90").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("3x").is_err());
        assert!(parse_go_duration("99999999999999999999h").is_err());
        assert!(parse_go_duration("3000000h").is_err());
    }

    #[test]
    fn rounding_truncates() {
        assert_eq!(whole_seconds(1_500_000_000), 1);
        assert_eq!(whole_seconds(3_999_999_999), 3);
        assert_eq!(whole_seconds(-2_500_000_000), -2);
    }
}
