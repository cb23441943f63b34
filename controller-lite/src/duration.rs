//! Durations as Testkube (Go's `time.ParseDuration`) writes them: `500ms`, `2s`, `1m30s`, `1.5h`.

/// Parses a Go-style duration into milliseconds. Units: `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`;
/// a sequence of `<number><unit>` pairs, decimals allowed. A bare `0` is zero. Sub-millisecond
/// remainders are rounded up so that a non-zero duration never becomes 0 ms.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let bad = || format!("invalid duration {s:?} (use e.g. 500ms, 2s, 1m30s, 1h)");
    let mut rest = t;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_ns += num * factor;
    }
    let ms = (total_ns / 1e6).ceil();
    if !ms.is_finite() || ms > u64::MAX as f64 / 2.0 {
        return Err(format!("duration {s:?} is too long"));
    }
    Ok(ms as u64)
}

/// Formats milliseconds for humans: `850ms`, `2.4s`, `1m30s`.
pub fn human(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        if s < 3600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_ms("2s"), Ok(2000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_ms("1.5h"), Ok(5_400_000));
        assert_eq!(parse_ms("1h2m3s4ms"), Ok(3_723_004));
        assert_eq!(parse_ms("0"), Ok(0));
        assert_eq!(parse_ms("10us"), Ok(1));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "2", "s", "2x", "1m30", "-1s", "abc", "1..2s"] {
            assert!(parse_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(human(12), "12ms");
        assert_eq!(human(2400), "2.4s");
        assert_eq!(human(90_000), "1m30s");
    }
}
