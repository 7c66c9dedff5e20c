//! Percentiles and means of request samples.
//!
//! Percentiles use the nearest-rank method: the `q`th percentile of `n`
//! samples is the smallest sample that has at least `q` percent of the
//! samples at or below it, which is the sample at rank `ceil(q / 100 * n)`
//! of the sorted values. It never interpolates, so every reported
//! percentile is a value that was observed, and it agrees exactly with the
//! error-budget counts in [`super::slo`]: `pq <= T` is true exactly when at
//! most `floor((1 - q / 100) * n)` samples exceed `T`.

/// Rank (1-based) of the `q_percent` percentile among `n` samples, or
/// `None` for no samples.
pub fn nearest_rank(n: usize, q_percent: f64) -> Option<usize> {
    if n == 0 {
        return None;
    }
    // The epsilon keeps ranks such as 0.95 * 20 = 19.000000000000004 at 19.
    let exact = q_percent / 100.0 * n as f64;
    let rank = (exact - 1e-9).ceil().max(1.0) as usize;
    Some(rank.min(n))
}

/// Nearest-rank percentile of samples that are already sorted ascending.
pub fn percentile_sorted(sorted: &[f64], q_percent: f64) -> Option<f64> {
    nearest_rank(sorted.len(), q_percent).map(|rank| sorted[rank - 1])
}

/// Nearest-rank percentile of unsorted samples.
pub fn percentile(values: &[f64], q_percent: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sort_floats(&mut sorted);
    percentile_sorted(&sorted, q_percent)
}

/// Sorts ascending; NaN values, which no SLI produces, sort last.
pub fn sort_floats(values: &mut [f64]) {
    values.sort_by(|a, b| a.total_cmp(b));
}

pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// Smallest number of samples for which the `q_percent` percentile is
/// more than the maximum: 20 for p95, 100 for p99.
pub fn min_samples_for_percentile(q_percent: f64) -> usize {
    let tail = 1.0 - q_percent / 100.0;
    if tail <= 0.0 {
        return usize::MAX;
    }
    (1.0 / tail - 1e-9).ceil() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_definition() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(10.0));
        assert_eq!(percentile(&values, 95.0), Some(19.0));
        assert_eq!(percentile(&values, 99.0), Some(20.0));
        assert_eq!(percentile(&values, 100.0), Some(20.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
    }

    #[test]
    fn percentile_is_an_observed_value() {
        let values = [5.0, 1.0, 3.0];
        assert_eq!(percentile(&values, 50.0), Some(3.0));
        assert_eq!(percentile(&values, 90.0), Some(5.0));
    }

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 95.0), None);
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn rank_agrees_with_budget_count() {
        // pq <= T exactly when at most floor((1 - q) n) samples exceed T.
        for n in 1..200usize {
            for q in [50.0, 90.0, 95.0, 99.0, 99.9] {
                let rank = nearest_rank(n, q).unwrap();
                let allowed_above = ((1.0 - q / 100.0) * n as f64 + 1e-9).floor() as usize;
                assert_eq!(n - rank, allowed_above, "n={n} q={q}");
            }
        }
    }

    #[test]
    fn minimum_samples_per_percentile() {
        assert_eq!(min_samples_for_percentile(95.0), 20);
        assert_eq!(min_samples_for_percentile(99.0), 100);
        assert_eq!(min_samples_for_percentile(50.0), 2);
    }
}
