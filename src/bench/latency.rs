//! Latency samples (microseconds) and their summary.

use std::time::Duration;

/// Average and percentiles of a run's transaction latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub avg: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LatencySummary {
    /// Summarises samples in microseconds (sorted in place); None when empty.
    pub fn of(samples: &mut [u32]) -> Option<LatencySummary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let us = |v: u32| Duration::from_micros(u64::from(v));
        let at = |q: f64| {
            // nearest rank: the smallest sample with at least q of them at or below it
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        let sum: u64 = samples.iter().map(|&v| u64::from(v)).sum();
        Some(LatencySummary {
            avg: Duration::from_micros(sum / samples.len() as u64),
            p50: us(at(0.50)),
            p99: us(at(0.99)),
            max: us(samples[samples.len() - 1]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s: Vec<u32> = (1..=100).rev().collect();
        let l = LatencySummary::of(&mut s).expect("samples");
        assert_eq!(l.p50, Duration::from_micros(50));
        assert_eq!(l.p99, Duration::from_micros(99));
        assert_eq!(l.max, Duration::from_micros(100));
        assert_eq!(l.avg, Duration::from_micros(50)); // 5050 / 100, truncated
        assert_eq!(LatencySummary::of(&mut []), None);
    }
}
