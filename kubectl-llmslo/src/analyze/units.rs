//! Human-readable durations, rates and ratios for tables and verdicts.

/// Formats microseconds with a unit that keeps two or three significant
/// digits: `850 µs`, `12.5 ms`, `812 ms`, `1.9 s`.
pub fn duration_us(us: f64) -> String {
    let magnitude = us.abs();
    if magnitude < 1000.0 {
        format!("{us:.0} µs")
    } else if magnitude < 10_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if magnitude < 100_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if magnitude < 1_000_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if magnitude < 100_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else {
        format!("{:.0} s", us / 1e6)
    }
}

/// Like [`duration_us`] with an explicit sign: `+1.90 s`, `-12.0 ms`.
pub fn signed_duration_us(us: f64) -> String {
    if us >= 0.0 {
        format!("+{}", duration_us(us))
    } else {
        format!("-{}", duration_us(-us))
    }
}

/// Formats a ratio from 0 to 1 as a percentage: `0.5%`, `12%`.
pub fn percent(ratio: f64) -> String {
    let percent = ratio * 100.0;
    if percent != 0.0 && percent.abs() < 10.0 {
        format!("{percent:.1}%")
    } else {
        format!("{percent:.0}%")
    }
}

pub fn tokens_per_sec(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1} tok/s")
    } else {
        format!("{rate:.0} tok/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(duration_us(850.0), "850 µs");
        assert_eq!(duration_us(1_234.0), "1.23 ms");
        assert_eq!(duration_us(12_500.0), "12.5 ms");
        assert_eq!(duration_us(812_000.0), "812 ms");
        assert_eq!(duration_us(1_900_000.0), "1.90 s");
        assert_eq!(signed_duration_us(1_900_000.0), "+1.90 s");
        assert_eq!(signed_duration_us(-12_000.0), "-12.0 ms");
    }

    #[test]
    fn percents_keep_small_values_readable() {
        assert_eq!(percent(0.005), "0.5%");
        assert_eq!(percent(0.72), "72%");
        assert_eq!(percent(0.0), "0%");
    }
}
