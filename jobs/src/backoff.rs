//! When a failed job runs again.

use std::time::Duration;

use rand::Rng;

/// Sidekiq's default: `count⁴ + 15 + rand(30)·(count + 1)` seconds after the failure, `count`
/// being the number of failures before this one (0 after the first). 25 attempts span about
/// 20 days.
pub fn sidekiq_backoff(count: i32) -> Duration {
    let count = u64::from(count.max(0).unsigned_abs());
    let jitter = rand::rng().random_range(0..30u64) * (count + 1);
    Duration::from_secs(count.saturating_pow(4) + 15 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_as_sidekiqs_does() {
        for _ in 0..100 {
            let first = sidekiq_backoff(0).as_secs();
            assert!((15..=44).contains(&first), "{first}");
            let third = sidekiq_backoff(2).as_secs();
            assert!((31..=31 + 29 * 3).contains(&third), "{third}");
        }
        assert!(sidekiq_backoff(24).as_secs() >= 24u64.pow(4));
    }
}
