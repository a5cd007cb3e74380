//! Load generation: an open-loop request schedule released by its own thread
//! ([`open_loop`]), the latencies it measures ([`Latency`]), a closed-loop
//! throughput run ([`closed_loop`], [`Throughput`]) and a small PRNG.

use std::future::Future;
use std::time::Duration;

use crate::error::Fail;
use crate::WAIT;

/// Latencies of one open-loop run.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    /// Sorted, in milliseconds, of the successful requests.
    ms: Vec<f64>,
    /// Requests sent.
    pub(crate) sent: usize,
    /// Requests that failed (or timed out).
    pub(crate) errors: usize,
    first_error: Option<String>,
    /// Achieved send rate.
    pub(crate) rate: f64,
}

impl Latency {
    /// Latencies measured one by one (closed loop), in milliseconds; none
    /// failed (a failure stops the phase that measures them).
    pub(crate) fn from_ms(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        Latency {
            sent: ms.len(),
            ms,
            ..Latency::default()
        }
    }

    pub(crate) fn percentile(&self, p: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.ms.len() as f64).ceil() as usize;
        self.ms[rank.clamp(1, self.ms.len()) - 1]
    }

    pub(crate) fn p50(&self) -> f64 {
        self.percentile(50.0)
    }

    pub(crate) fn p99(&self) -> f64 {
        self.percentile(99.0)
    }

    pub(crate) fn max(&self) -> f64 {
        self.ms.last().copied().unwrap_or(f64::NAN)
    }

    /// Whether the p99 is under `goal_ms` with no failed request.
    pub(crate) fn meets(&self, goal_ms: f64) -> bool {
        self.errors == 0 && self.p99() < goal_ms
    }

    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests, {} errors)",
            self.p50(),
            self.p99(),
            self.max(),
            self.sent,
            self.errors
        );
        if let Some(e) = &self.first_error {
            s.push_str(&format!("; first error: {e}"));
        }
        s
    }
}

/// Sends `rate` requests a second for `duration` on a fixed schedule, each in
/// its own task, and measures each from its scheduled send time.
pub(crate) async fn open_loop<F, Fut>(rate: u32, duration: Duration, mut request: F) -> Latency
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), Fail>> + Send + 'static,
{
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs(1) / rate;
    // Requests are built up front (futures are lazy) and released by a dedicated
    // OS thread at their scheduled times: tokio's timer has a 1 ms granularity,
    // which at 2,000 req/s would add up to a millisecond of the generator's own
    // lateness to every measurement, and a generator on the runtime under test
    // would be slowed by the very queueing it must expose.
    let requests: Vec<Fut> = (0..total).map(&mut request).collect();
    let handle = tokio::runtime::Handle::current();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let start = std::time::Instant::now() + Duration::from_millis(5);
        let mut tasks = Vec::with_capacity(requests.len());
        for (i, fut) in requests.into_iter().enumerate() {
            let scheduled = start + period.mul_f64(i as f64);
            if let Some(wait) = scheduled.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
            tasks.push(handle.spawn(async move {
                let result = tokio::time::timeout(WAIT, fut)
                    .await
                    .unwrap_or_else(|_| Err(Fail::msg(format!("timed out after {WAIT:?}"))));
                (
                    std::time::Instant::now().saturating_duration_since(scheduled),
                    result,
                )
            }));
        }
        let _ = release_tx.send((tasks, start.elapsed()));
    });
    let Ok((tasks, elapsed)) = release_rx.await else {
        return Latency {
            first_error: Some("the load generator thread died".into()),
            ..Latency::default()
        };
    };
    let mut out = Latency {
        ms: Vec::with_capacity(tasks.len()),
        sent: tasks.len(),
        rate: total as f64 / elapsed.as_secs_f64(),
        ..Latency::default()
    };
    for t in tasks {
        match t.await {
            Ok((elapsed, Ok(()))) => out.ms.push(elapsed.as_secs_f64() * 1e3),
            Ok((_, Err(e))) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out.ms.sort_by(f64::total_cmp);
    out
}

/// A small PRNG for picking agents (no dependency needed).
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        XorShift(u64::from(nanos) | 1)
    }

    pub(crate) fn pick(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Completions of one closed-loop run.
#[derive(Debug, Default)]
pub(crate) struct Throughput {
    /// Requests in flight at any time.
    pub(crate) concurrency: usize,
    /// Requests that completed successfully.
    pub(crate) completed: u64,
    /// Requests that failed (or timed out).
    pub(crate) errors: u64,
    first_error: Option<String>,
    /// Successful requests per second.
    pub(crate) per_s: f64,
}

impl Throughput {
    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "{:.0}/s ({} requests, {} in flight, {} errors)",
            self.per_s, self.completed, self.concurrency, self.errors
        );
        if let Some(e) = &self.first_error {
            s.push_str(&format!("; first error: {e}"));
        }
        s
    }
}

/// Keeps `concurrency` requests in flight for `duration` (each worker sends its
/// next request as soon as the previous one completes) and counts completions.
pub(crate) async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    request: F,
) -> Throughput
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Fail>> + Send + 'static,
{
    let request = std::sync::Arc::new(request);
    let started = std::time::Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency as u64)
        .map(|w| {
            let request = request.clone();
            tokio::spawn(async move {
                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
                let mut n = w;
                while std::time::Instant::now() < deadline {
                    match tokio::time::timeout(WAIT, request(n)).await {
                        Ok(Ok(())) => ok += 1,
                        Ok(Err(e)) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                        Err(_) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("timed out after {WAIT:?}"));
                        }
                    }
                    n += concurrency as u64;
                }
                (ok, errors, first_error)
            })
        })
        .collect();
    let mut out = Throughput {
        concurrency,
        ..Throughput::default()
    };
    for w in workers {
        match w.await {
            Ok((ok, errors, first_error)) => {
                out.completed += ok;
                out.errors += errors;
                if let Some(e) = first_error {
                    out.first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out.per_s = out.completed as f64 / started.elapsed().as_secs_f64();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_sorted_samples() {
        let l = Latency::from_ms((1..=100).rev().map(f64::from).collect());
        assert_eq!(l.sent, 100);
        assert_eq!(l.p50(), 50.0);
        assert_eq!(l.p99(), 99.0);
        assert_eq!(l.max(), 100.0);
        assert!(l.meets(99.5));
        assert!(!l.meets(99.0));
        let one = Latency::from_ms(vec![3.0]);
        assert_eq!((one.p50(), one.p99()), (3.0, 3.0));
        assert!(Latency::from_ms(Vec::new()).p99().is_nan());
    }
}
