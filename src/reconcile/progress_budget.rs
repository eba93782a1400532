//! The budget of progress writes: status writes that only show progress (see
//! [`crate::status::is_milestone`]) share one budget across all AppBundles, a token bucket that
//! refills at [`RATE`] per second while the API server answers status writes within [`FAST`],
//! and more slowly as it answers slower or throttles (a 429). Milestones (Ready turning True or
//! leaving it, Stalled, a new revision) never wait for it.
//!
//! So one AppBundle on an idle cluster shows its progress as soon as its own pacing allows (the
//! bucket is full), while a burst of a thousand new AppBundles, in which nobody watches each
//! one's replica counts, writes about one status each (the one that says Ready) instead of two:
//! kstatus (Flux, Helm) and Argo CD already read an AppBundle whose status lags its generation
//! as in progress.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Progress writes per second while the API server is fast.
pub const RATE: f64 = 5.0;
/// How many may go at once after a quiet spell.
pub const BURST: f64 = 10.0;
/// A status write answered within this is fast.
pub const FAST: Duration = Duration::from_millis(50);
/// The slowest the budget refills (one write in 2 s).
const MIN_RATE: f64 = 0.5;
/// The smoothed latency halves every this long without a status write to measure it by: a budget
/// slowed by an outage recovers once the writes stop, not only when the next ones are fast.
const LATENCY_HALF_LIFE: Duration = Duration::from_secs(5);
/// For how long a 429 quarters the rate.
const THROTTLED_FOR: Duration = Duration::from_secs(30);
/// The longest a progress write is put off for at a time.
const MAX_WAIT: Duration = Duration::from_secs(30);

struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Smoothed latency of status writes (exponentially weighted, 1/8 per sample), as of
    /// `measured`.
    latency: Duration,
    measured: Instant,
    throttled_until: Option<Instant>,
    /// Writes put off in the current second, to spread their next tries.
    waiting: u32,
    waiting_since: Instant,
}

pub struct ProgressBudget(Mutex<Bucket>);

impl Default for ProgressBudget {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl ProgressBudget {
    pub fn new(now: Instant) -> ProgressBudget {
        ProgressBudget(Mutex::new(Bucket {
            tokens: BURST,
            refilled: now,
            latency: Duration::ZERO,
            measured: now,
            throttled_until: None,
            waiting: 0,
            waiting_since: now,
        }))
    }

    /// The rate now: [`RATE`] while writes are fast, less in proportion as they are slower, a
    /// quarter of that after a 429; never below [`MIN_RATE`].
    fn rate(b: &Bucket, now: Instant) -> f64 {
        let mut rate = RATE;
        let latency = Self::latency(b, now);
        if latency > FAST {
            rate *= FAST.as_secs_f64() / latency.as_secs_f64();
        }
        if b.throttled_until.is_some_and(|t| now < t) {
            rate /= 4.0;
        }
        rate.max(MIN_RATE)
    }

    /// The smoothed latency, decayed for the time since it was last measured.
    fn latency(b: &Bucket, now: Instant) -> Duration {
        let idle = now.saturating_duration_since(b.measured).as_secs_f64();
        b.latency
            .mul_f64(0.5f64.powf(idle / LATENCY_HALF_LIFE.as_secs_f64()))
    }

    /// Takes one progress write from the budget: Ok when it may go now, or how long to put it
    /// off for (the writes put off meanwhile are spread over the time the budget needs for them).
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut b = self.0.lock().unwrap();
        let rate = Self::rate(&b, now);
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(BURST);
        b.refilled = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        if now.saturating_duration_since(b.waiting_since) >= Duration::from_secs(1) {
            b.waiting = 0;
            b.waiting_since = now;
        }
        b.waiting += 1;
        let ahead = f64::from(b.waiting) + (1.0 - b.tokens);
        Err(Duration::from_secs_f64(ahead / rate)
            .max(crate::status::PROGRESS_INTERVAL)
            .min(MAX_WAIT))
    }

    /// What a status write (any, milestones too) told of the API server: how long it took to
    /// answer, and whether it was throttled (429).
    pub fn observed(&self, latency: Duration, throttled: bool, now: Instant) {
        let mut b = self.0.lock().unwrap();
        let before = Self::latency(&b, now);
        b.latency = if before.is_zero() {
            latency
        } else {
            (before * 7 + latency) / 8
        };
        b.measured = now;
        if throttled {
            b.throttled_until = Some(now + THROTTLED_FOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(budget: &ProgressBudget, now: Instant, n: usize) -> usize {
        (0..n).filter(|_| budget.take(now).is_ok()).count()
    }

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let budget = ProgressBudget::new(t0);
        assert_eq!(taken(&budget, t0, 100), BURST as usize);
        // One second later: RATE more.
        assert_eq!(
            taken(&budget, t0 + Duration::from_secs(1), 100),
            RATE as usize
        );
    }

    #[test]
    fn one_appbundle_on_an_idle_cluster_never_waits() {
        let t0 = Instant::now();
        let budget = ProgressBudget::new(t0);
        for i in 0..100 {
            let now = t0 + Duration::from_secs(2 * i);
            assert_eq!(budget.take(now), Ok(()));
            budget.observed(Duration::from_millis(10), false, now);
        }
    }

    #[test]
    fn a_thousand_at_once_are_put_off_and_spread() {
        let t0 = Instant::now();
        let budget = ProgressBudget::new(t0);
        let waits: Vec<Duration> = (0..1000).filter_map(|_| budget.take(t0).err()).collect();
        assert_eq!(waits.len(), 1000 - BURST as usize);
        assert!(waits.iter().all(|w| *w >= crate::status::PROGRESS_INTERVAL));
        assert_eq!(*waits.last().unwrap(), MAX_WAIT, "spread up to the cap");
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn slow_answers_and_throttling_shrink_the_rate() {
        let t0 = Instant::now();
        let budget = ProgressBudget::new(t0);
        assert_eq!(taken(&budget, t0, 100), BURST as usize);
        // Answers at 500 ms: a tenth of the rate; 4 s later the average has decayed to 287 ms
        // (0.87 writes/s).
        for _ in 0..50 {
            budget.observed(Duration::from_millis(500), false, t0);
        }
        assert_eq!(taken(&budget, t0 + Duration::from_secs(4), 100), 3);
        // Fast again, but throttled: a quarter.
        for _ in 0..100 {
            budget.observed(Duration::from_millis(5), false, t0);
        }
        budget.observed(Duration::from_millis(5), true, t0);
        assert_eq!(taken(&budget, t0 + Duration::from_secs(8), 100), 5);
        // Slow answers, then none: the average decays, and the rate comes back without them.
        for _ in 0..50 {
            budget.observed(
                Duration::from_millis(500),
                false,
                t0 + Duration::from_secs(8),
            );
        }
        assert!(
            ProgressBudget::latency(&budget.0.lock().unwrap(), t0 + Duration::from_secs(8)) > FAST
        );
        assert!(
            ProgressBudget::latency(&budget.0.lock().unwrap(), t0 + Duration::from_secs(40)) < FAST
        );
        // The throttling is forgotten after 30 s.
        assert_eq!(
            taken(&budget, t0 + Duration::from_secs(40), 100),
            BURST as usize
        );
    }
}
