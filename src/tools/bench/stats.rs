//! Small statistics helpers for the benchmarks: percentiles over recorded samples.

use std::time::Duration;

/// Percentile `p` (0–100) of `samples` in microseconds; 0 when there are none.
pub fn percentile_us(samples: &mut [Duration], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)].as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ranked_sample() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&mut samples, 50.0), 51);
        assert_eq!(percentile_us(&mut samples, 99.0), 99);
        assert_eq!(percentile_us(&mut [], 50.0), 0);
    }
}
