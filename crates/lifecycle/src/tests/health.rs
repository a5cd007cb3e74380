//! Restart backoff, crash loops and heartbeats.

use crate::health::*;

#[test]
fn the_defaults_are_one_second_to_a_minute_and_five_crashes_in_ten_minutes() {
    let p = RestartPolicy::default();
    assert_eq!(
        (
            p.base_ms(),
            p.max_ms(),
            p.crash_loop_limit(),
            p.crash_loop_window_ms(),
            p.healthy_after_ms()
        ),
        (1_000, 60_000, 5, 600_000, 60_000)
    );
    assert_eq!(RestartPolicy::builder().build(), Ok(p));
    let h = HeartbeatPolicy::default();
    assert_eq!((h.interval_ms, h.missed_limit), (10_000, 3));
}

#[test]
fn the_builder_refuses_nonsense() {
    let kind = |b: RestartPolicyBuilder| b.build().map_err(|e| e.kind());
    assert_eq!(
        kind(RestartPolicy::builder().base_ms(0)),
        Err(RestartPolicyErrorKind::ZeroBase)
    );
    assert_eq!(
        kind(RestartPolicy::builder().base_ms(5_000).max_ms(4_000)),
        Err(RestartPolicyErrorKind::MaxBelowBase)
    );
    assert_eq!(
        kind(RestartPolicy::builder().crash_loop_limit(0)),
        Err(RestartPolicyErrorKind::ZeroCrashLoopLimit)
    );
    assert_eq!(
        kind(RestartPolicy::builder().crash_loop_window_ms(0)),
        Err(RestartPolicyErrorKind::ZeroWindow)
    );
}

#[test]
fn the_delay_doubles_from_the_base_up_to_the_cap_without_overflow() {
    let p = RestartPolicy::default();
    let delays: Vec<u64> = (0..=9).map(|a| p.delay_ms(a)).collect();
    assert_eq!(
        delays,
        [1_000, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
    );
    assert_eq!(p.delay_ms(63), 60_000);
    assert_eq!(p.delay_ms(64), 60_000);
    assert_eq!(p.delay_ms(u32::MAX), 60_000);
    let huge = RestartPolicy::builder()
        .base_ms(u64::MAX / 2)
        .max_ms(u64::MAX)
        .build()
        .expect("valid");
    assert_eq!(huge.delay_ms(3), u64::MAX);
}

fn history(times: &[i64]) -> CrashHistory {
    let mut h = CrashHistory::new();
    for &t in times {
        h.record(t);
    }
    h
}

#[test]
fn the_attempt_is_the_number_of_crashes_in_the_half_open_window() {
    let p = RestartPolicy::default();
    let now = 1_000_000;
    // 400_000 is exactly 10 minutes old: outside.
    let h = history(&[400_000, 400_001, 999_000, now]);
    assert_eq!(h.count_within(600_000, now), 3);
    assert_eq!(
        p.after_crash(&h, now),
        CrashDecision::RestartAfter {
            delay_ms: 4_000,
            attempt: 3,
        }
    );
    // A crash recorded long ago is still attempt 1.
    assert_eq!(
        p.after_crash(&history(&[0]), now),
        CrashDecision::RestartAfter {
            delay_ms: 1_000,
            attempt: 1,
        }
    );
}

#[test]
fn the_limit_th_crash_in_the_window_is_a_crash_loop() {
    let p = RestartPolicy::default();
    let h = history(&[1, 2, 3, 4]);
    assert!(matches!(
        p.after_crash(&h, 10),
        CrashDecision::RestartAfter { attempt: 4, .. }
    ));
    let h = history(&[1, 2, 3, 4, 5]);
    assert_eq!(
        p.after_crash(&h, 10),
        CrashDecision::DisableCrashLoop {
            crashes: 5,
            window_ms: 600_000,
        }
    );
    let once = RestartPolicy::builder()
        .crash_loop_limit(1)
        .build()
        .expect("valid");
    assert!(matches!(
        once.after_crash(&history(&[5]), 5),
        CrashDecision::DisableCrashLoop { crashes: 1, .. }
    ));
}

#[test]
fn crash_times_recorded_out_of_order_are_kept_sorted() {
    let h = history(&[30, 10, 20, 10, 40]);
    assert_eq!(h.crashes_ms(), [10, 10, 20, 30, 40]);
    assert_eq!(history(&[40, 30, 20, 10, 10]), h);
}

#[test]
fn the_history_is_bounded() {
    let mut h = CrashHistory::new();
    for t in 0..(MAX_CRASH_HISTORY as i64 + 10) {
        h.record(t);
    }
    assert_eq!(h.crashes_ms().len(), MAX_CRASH_HISTORY);
    assert_eq!(h.crashes_ms()[0], 10);
}

#[test]
fn a_run_is_healthy_after_healthy_after_ms() {
    let p = RestartPolicy::default();
    assert!(!p.was_healthy(1_000, 60_999));
    assert!(p.was_healthy(1_000, 61_000));
    assert!(!p.was_healthy(61_000, 1_000));
}

#[test]
fn an_agent_is_unhealthy_after_missed_limit_intervals_of_silence() {
    let h = HeartbeatPolicy {
        interval_ms: 10_000,
        missed_limit: 3,
    };
    assert!(!h.is_unhealthy(0, 30_000));
    assert!(h.is_unhealthy(0, 30_001));
    assert!(!h.is_unhealthy(50_000, 30_000));
    assert!(!h.is_unhealthy(i64::MIN + 1, i64::MIN + 1));
    assert!(h.is_unhealthy(i64::MIN, i64::MAX));
}
