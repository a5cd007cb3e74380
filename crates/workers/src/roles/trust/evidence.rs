//! What each feed event means to the trust model: which agent it is about and
//! which [`Observation`]s it makes, plus the attributions the feed teaches on
//! the way (which agent requested a jail, which agent owns an LLM session).
//!
//! | feed event | observations |
//! |---|---|
//! | any action on `agent/<a>` | `Action` for `a` (type, peers it addressed) |
//! | `agent.message_sent` to `b` | also `Contacted { by: a }` for `b` |
//! | `agent.endorsed` of `b` | also `Endorsed` for `b`, when `b` is a registered, unrevoked agent `a` has not endorsed before |
//! | `jail.run_finished` | `JailPolicyViolation`, `JailNetworkDenied`, `JailLimitHit` (memory, timeout, output), or else `JailClean`, for the requester |
//! | `jail.reproducibility_checked` (DIFFERENT) | `JailNotReproducible` for the original run's requester |
//! | `llm.replay_missed` | `LlmReplayMiss` for the session owner |
//! | `llm.interaction_recorded` (TRUNCATED) | `LlmTruncated` for the session owner |
//! | `lifecycle.changed` to CRASHED | `Crash` for the managed agent (`lifecycle/<agent>`) |
//!
//! A non-zero exit code is no signal: failing is not misbehaving. Jail runs
//! that fail for infrastructure reasons (`jail.run_failed`) are no signal
//! either. A crash is: the lifecycle role records it only for a managed
//! agent's run that died unasked (not a stop, not a disable).

use amai_bus::proto::{self, payload::Kind};
use amai_trust::{LimitKind, Signal};

/// Who requested a jail (learnt from `jail.requested`, before the jail's events).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct JailOwner {
    pub(crate) owner: String,
    pub(crate) request_id: String,
    pub(crate) reproduces: String,
}

/// Who owns an LLM session (learnt from `llm.session_opened`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SessionOwner {
    pub(crate) owner: String,
}

/// The peers an action addresses.
pub(crate) fn peers_of(payload: &Kind) -> Vec<String> {
    match payload {
        Kind::AgentMessageSent(m) => vec![m.to.clone()],
        Kind::AgentEndorsed(e) => vec![e.endorsee.clone()],
        _ => Vec::new(),
    }
}

/// The signals a finished jail run gives about its requester, in a fixed
/// order; `JailClean` only when there is nothing else.
pub(crate) fn jail_run_signals(run: &proto::JailRunFinished) -> Vec<Signal> {
    let mut signals = Vec::new();
    if !run.violations.is_empty() {
        signals.push(Signal::JailPolicyViolation {
            violations: u32::try_from(run.violations.len()).unwrap_or(u32::MAX),
        });
    }
    if run.connections_denied > 0 {
        signals.push(Signal::JailNetworkDenied {
            attempts: run.connections_denied,
        });
    }
    if run.oom_killed {
        signals.push(Signal::JailLimitHit {
            limit: LimitKind::Memory,
        });
    }
    if run.timed_out {
        signals.push(Signal::JailLimitHit {
            limit: LimitKind::Timeout,
        });
    }
    if run.output_truncated {
        signals.push(Signal::JailLimitHit {
            limit: LimitKind::Output,
        });
    }
    if signals.is_empty() {
        signals.push(Signal::JailClean);
    }
    signals
}

/// Whether a reproduction found the run different.
pub(crate) fn not_reproducible(check: &proto::JailReproducibilityChecked) -> bool {
    check.verdict == proto::JailVerdict::Different as i32
}

/// The evidence an LLM record gives about the session owner.
pub(crate) fn llm_signal(payload: &Kind) -> Option<Signal> {
    match payload {
        Kind::LlmReplayMissed(_) => Some(Signal::LlmReplayMiss),
        Kind::LlmInteractionRecorded(r) if r.outcome == proto::LlmOutcome::Truncated as i32 => {
            Some(Signal::LlmTruncated)
        }
        _ => None,
    }
}

/// The evidence a lifecycle record gives about its agent.
pub(crate) fn lifecycle_signal(payload: &Kind) -> Option<Signal> {
    match payload {
        Kind::LifecycleChanged(c)
            if matches!(c.detail, Some(proto::lifecycle_changed::Detail::Crashed(_))) =>
        {
            Some(Signal::Crash)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> proto::JailRunFinished {
        proto::JailRunFinished::default()
    }

    #[test]
    fn a_run_with_nothing_wrong_is_clean_and_a_failing_exit_code_is_no_signal() {
        let mut r = run();
        assert_eq!(jail_run_signals(&r), vec![Signal::JailClean]);
        r.exit_code = 3;
        assert_eq!(jail_run_signals(&r), vec![Signal::JailClean]);
    }

    #[test]
    fn every_kind_of_misbehaviour_is_its_own_signal_in_a_fixed_order() {
        let mut r = run();
        r.violations = vec![proto::JailPolicyViolation::default(); 2];
        r.connections_denied = 5;
        r.oom_killed = true;
        r.timed_out = true;
        r.output_truncated = true;
        assert_eq!(
            jail_run_signals(&r),
            vec![
                Signal::JailPolicyViolation { violations: 2 },
                Signal::JailNetworkDenied { attempts: 5 },
                Signal::JailLimitHit {
                    limit: LimitKind::Memory
                },
                Signal::JailLimitHit {
                    limit: LimitKind::Timeout
                },
                Signal::JailLimitHit {
                    limit: LimitKind::Output
                },
            ]
        );
    }

    #[test]
    fn only_truncated_recordings_and_misses_are_llm_evidence() {
        let mut rec = proto::LlmInteractionRecorded {
            outcome: proto::LlmOutcome::Completed as i32,
            ..Default::default()
        };
        assert_eq!(llm_signal(&Kind::LlmInteractionRecorded(rec.clone())), None);
        rec.outcome = proto::LlmOutcome::Truncated as i32;
        assert_eq!(
            llm_signal(&Kind::LlmInteractionRecorded(rec)),
            Some(Signal::LlmTruncated)
        );
        assert_eq!(
            llm_signal(&Kind::LlmReplayMissed(Default::default())),
            Some(Signal::LlmReplayMiss)
        );
    }

    #[test]
    fn a_recorded_crash_is_a_crash_and_other_transitions_are_no_signal() {
        let crashed = proto::LifecycleChanged {
            detail: Some(proto::lifecycle_changed::Detail::Crashed(Default::default())),
            ..Default::default()
        };
        assert_eq!(
            lifecycle_signal(&Kind::LifecycleChanged(crashed)),
            Some(Signal::Crash)
        );
        let stopped = proto::LifecycleChanged {
            detail: Some(proto::lifecycle_changed::Detail::Stopped(Default::default())),
            ..Default::default()
        };
        assert_eq!(lifecycle_signal(&Kind::LifecycleChanged(stopped)), None);
        assert_eq!(
            lifecycle_signal(&Kind::SanctionImposed(Default::default())),
            None
        );
    }
}
