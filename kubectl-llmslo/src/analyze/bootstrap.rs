//! Percentile bootstrap confidence intervals over requests, with a seeded
//! generator so that the same input gives the same interval.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::stats;

/// Seed used unless the caller picks another; any fixed value makes runs
/// reproducible.
pub const DEFAULT_SEED: u64 = 0x6c6c_6d73_6c6f;

/// Resamples per interval. 1000 keeps the Monte Carlo error of a 90%
/// interval's ends below the sampling error for the sample sizes of one
/// diagnose window.
pub const DEFAULT_REPLICATES: usize = 1000;

/// Two-sided confidence level of every interval in the report.
pub const DEFAULT_LEVEL: f64 = 0.90;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapConfig {
    pub seed: u64,
    pub replicates: usize,
    /// Two-sided confidence level, such as 0.90.
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            replicates: DEFAULT_REPLICATES,
            level: DEFAULT_LEVEL,
        }
    }
}

/// A confidence interval `[low, high]` at a stated level.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfidenceInterval {
    pub low: f64,
    pub high: f64,
}

impl BootstrapConfig {
    /// Interval of `statistic` over resamples of `n` items.
    ///
    /// `statistic` gets the indices of one resample, drawn with
    /// replacement. It returns `None` when the resample has no value, for
    /// example a tail without requests, and such resamples are left out.
    /// Returns `None` when `n` is zero or no resample had a value.
    pub fn interval<F>(&self, n: usize, salt: u64, mut statistic: F) -> Option<ConfidenceInterval>
    where
        F: FnMut(&[usize]) -> Option<f64>,
    {
        if n == 0 {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ salt);
        let mut indices = vec![0usize; n];
        let mut estimates = Vec::with_capacity(self.replicates);
        for _ in 0..self.replicates {
            for index in indices.iter_mut() {
                *index = rng.random_range(0..n);
            }
            if let Some(value) = statistic(&indices) {
                estimates.push(value);
            }
        }
        self.ends(estimates)
    }

    /// Interval of a statistic that compares two independent samples, such
    /// as the current run and a baseline: each is resampled on its own.
    pub fn interval_two_sample<F>(
        &self,
        n_a: usize,
        n_b: usize,
        salt: u64,
        mut statistic: F,
    ) -> Option<ConfidenceInterval>
    where
        F: FnMut(&[usize], &[usize]) -> Option<f64>,
    {
        if n_a == 0 || n_b == 0 {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ salt);
        let mut a = vec![0usize; n_a];
        let mut b = vec![0usize; n_b];
        let mut estimates = Vec::with_capacity(self.replicates);
        for _ in 0..self.replicates {
            for index in a.iter_mut() {
                *index = rng.random_range(0..n_a);
            }
            for index in b.iter_mut() {
                *index = rng.random_range(0..n_b);
            }
            if let Some(value) = statistic(&a, &b) {
                estimates.push(value);
            }
        }
        self.ends(estimates)
    }

    /// Intervals of `k` statistics computed together on the same
    /// resamples of two independent samples, for statistics that share
    /// expensive steps (such as finding a tail). `statistic` fills one
    /// value per statistic and returns false when the resample has none.
    pub fn intervals_two_sample<F>(
        &self,
        n_a: usize,
        n_b: usize,
        k: usize,
        salt: u64,
        mut statistic: F,
    ) -> Vec<Option<ConfidenceInterval>>
    where
        F: FnMut(&[usize], &[usize], &mut [f64]) -> bool,
    {
        if n_a == 0 || n_b == 0 {
            return vec![None; k];
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ salt);
        let mut a = vec![0usize; n_a];
        let mut b = vec![0usize; n_b];
        let mut values = vec![0.0; k];
        let mut estimates: Vec<Vec<f64>> = vec![Vec::with_capacity(self.replicates); k];
        for _ in 0..self.replicates {
            for index in a.iter_mut() {
                *index = rng.random_range(0..n_a);
            }
            for index in b.iter_mut() {
                *index = rng.random_range(0..n_b);
            }
            if statistic(&a, &b, &mut values) {
                for (list, value) in estimates.iter_mut().zip(&values) {
                    list.push(*value);
                }
            }
        }
        estimates.into_iter().map(|list| self.ends(list)).collect()
    }

    fn ends(&self, mut estimates: Vec<f64>) -> Option<ConfidenceInterval> {
        if estimates.is_empty() {
            return None;
        }
        stats::sort_floats(&mut estimates);
        let tail_percent = (1.0 - self.level) / 2.0 * 100.0;
        Some(ConfidenceInterval {
            low: stats::percentile_sorted(&estimates, tail_percent.max(f64::MIN_POSITIVE))?,
            high: stats::percentile_sorted(&estimates, 100.0 - tail_percent)?,
        })
    }
}

/// Salt that gives each statistic of a run its own random stream, so that
/// adding a component does not change the intervals of the others.
pub fn salt(label: &str) -> u64 {
    // FNV-1a: stable across platforms and Rust versions, unlike
    // `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in label.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_of(values: &[f64]) -> impl FnMut(&[usize]) -> Option<f64> + '_ {
        move |indices| stats::mean(&indices.iter().map(|&i| values[i]).collect::<Vec<_>>())
    }

    #[test]
    fn same_seed_gives_same_interval() {
        let values: Vec<f64> = (0..50).map(|i| f64::from(i % 7)).collect();
        let config = BootstrapConfig::default();
        let first = config.interval(values.len(), 1, mean_of(&values));
        let second = config.interval(values.len(), 1, mean_of(&values));
        assert_eq!(first, second);
    }

    #[test]
    fn other_seed_gives_other_interval() {
        let values: Vec<f64> = (0..50).map(|i| f64::from(i % 7)).collect();
        let first = BootstrapConfig::default().interval(values.len(), 1, mean_of(&values));
        let other = BootstrapConfig {
            seed: 7,
            ..BootstrapConfig::default()
        }
        .interval(values.len(), 1, mean_of(&values));
        assert_ne!(first, other);
    }

    #[test]
    fn interval_contains_estimate() {
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let ci = BootstrapConfig::default()
            .interval(values.len(), 0, mean_of(&values))
            .unwrap();
        assert!(ci.low < 49.5, "{ci:?}");
        assert!(ci.high > 49.5, "{ci:?}");
    }

    #[test]
    fn empty_sample_has_no_interval() {
        assert!(
            BootstrapConfig::default()
                .interval(0, 0, |_| Some(1.0))
                .is_none()
        );
    }

    /// Draws exponential samples with a generator independent of the
    /// bootstrap's and checks how often the 90% interval of the mean covers
    /// the true mean 1.0.
    #[test]
    fn coverage_of_mean_is_near_level() {
        let mut data_rng = ChaCha8Rng::seed_from_u64(42);
        let config = BootstrapConfig {
            replicates: 400,
            ..BootstrapConfig::default()
        };
        let trials = 200;
        let mut covered = 0;
        for trial in 0..trials {
            let values: Vec<f64> = (0..60)
                .map(|_| -(1.0 - data_rng.random::<f64>()).ln())
                .collect();
            let ci = config
                .interval(values.len(), trial, mean_of(&values))
                .unwrap();
            if ci.low <= 1.0 && 1.0 <= ci.high {
                covered += 1;
            }
        }
        let coverage = f64::from(covered) / f64::from(trials as u32);
        assert!((0.80..=0.97).contains(&coverage), "coverage {coverage}");
    }

    #[test]
    fn two_sample_difference_excludes_zero_for_shift() {
        let a: Vec<f64> = (0..40).map(|i| 100.0 + f64::from(i % 5)).collect();
        let b: Vec<f64> = (0..40).map(|i| 50.0 + f64::from(i % 5)).collect();
        let ci = BootstrapConfig::default()
            .interval_two_sample(a.len(), b.len(), 0, |ia, ib| {
                let ma = stats::mean(&ia.iter().map(|&i| a[i]).collect::<Vec<_>>())?;
                let mb = stats::mean(&ib.iter().map(|&i| b[i]).collect::<Vec<_>>())?;
                Some(ma - mb)
            })
            .unwrap();
        assert!(ci.low > 0.0, "{ci:?}");
        assert!(ci.low > 45.0, "{ci:?}");
        assert!(ci.high < 55.0, "{ci:?}");
    }

    #[test]
    fn salt_is_stable() {
        assert_eq!(salt(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(salt("provider"), salt("retrieval"));
    }
}
