//! The governance ledger: imposing and lifting sanctions, filing and
//! resolving appeals.

use super::harness::{given, NOW};
use super::sanction::sanction;
use crate::appeal::*;
use crate::governance::*;
use crate::sanction::{ActionClass, SanctionKind};

fn ledger() -> Governance {
    Governance::new("agent-a")
}

fn imposed(id: &str, kind: SanctionKind) -> GovernanceFact {
    GovernanceFact::SanctionImposed(sanction(id, kind, 1_000))
}

fn file(id: &str, sanction_id: &str, agent: &str) -> GovernanceCommand {
    GovernanceCommand::FileAppeal(FileAppeal {
        id: id.into(),
        sanction_id: sanction_id.into(),
        agent_id: agent.into(),
        statement: "the spike was a scheduled batch job".into(),
    })
}

fn filed(id: &str, sanction_id: &str) -> GovernanceFact {
    GovernanceFact::AppealFiled(Appeal {
        id: id.into(),
        sanction_id: sanction_id.into(),
        agent_id: "agent-a".into(),
        statement: "the spike was a scheduled batch job".into(),
        filed_at_ms: NOW,
    })
}

fn resolve(id: &str, resolution: Resolution) -> GovernanceCommand {
    GovernanceCommand::ResolveAppeal(ResolveAppeal {
        appeal_id: id.into(),
        resolution,
        operator: "op-1".into(),
        note: "checked the job schedule".into(),
    })
}

fn resolved(id: &str, resolution: Resolution) -> GovernanceFact {
    GovernanceFact::AppealResolved {
        appeal_id: id.into(),
        resolution,
        operator: "op-1".into(),
        note: "checked the job schedule".into(),
        at_ms: NOW,
    }
}

#[test]
fn imposing_records_the_sanction_once() {
    let s = sanction("s1", SanctionKind::Suspend, 1_000);
    let ledger = given(ledger(), [])
        .when(GovernanceCommand::Impose(s.clone()))
        .then(vec![GovernanceFact::SanctionImposed(s.clone())]);
    assert!(!ledger.restrictions(NOW).actions_allowed);
    // Redelivered: nothing new.
    given(ledger.clone(), [])
        .when(GovernanceCommand::Impose(s.clone()))
        .then(vec![]);
    // The same id for a different sanction: refused.
    let mut other = s;
    other.kind = SanctionKind::Warn;
    let refusal = given(ledger, [])
        .when(GovernanceCommand::Impose(other))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::DuplicateSanction);
}

#[test]
fn imposing_refuses_a_malformed_sanction_or_another_agents() {
    let mut wrong_agent = sanction("s", SanctionKind::Warn, 0);
    wrong_agent.agent_id = "agent-b".into();
    let mut zero_rate = sanction("s", SanctionKind::Throttle { per_minute: 0 }, 0);
    zero_rate.agent_id = "agent-a".into();
    let mut backwards = sanction("s", SanctionKind::Warn, 100);
    backwards.expires_at_ms = Some(100);
    let mut no_reason = sanction("s", SanctionKind::Warn, 0);
    no_reason.reason = " ".into();
    for (s, kind) in [
        (wrong_agent, GovernanceRefusalKind::WrongAgent),
        (zero_rate, GovernanceRefusalKind::InvalidSanction),
        (backwards, GovernanceRefusalKind::InvalidSanction),
        (no_reason, GovernanceRefusalKind::InvalidSanction),
    ] {
        let refusal = given(ledger(), [])
            .when(GovernanceCommand::Impose(s))
            .then_refused();
        assert_eq!(refusal.kind(), kind);
    }
}

#[test]
fn lifting_is_refused_for_unknown_lifted_and_expired_sanctions() {
    let lift = |id: &str| GovernanceCommand::Lift {
        sanction_id: id.into(),
        by: "op-1".into(),
        note: "resolved".into(),
    };
    let mut expiring = sanction("exp", SanctionKind::Warn, 0);
    expiring.expires_at_ms = Some(NOW);
    let ledger = given(
        ledger(),
        [
            imposed("s1", SanctionKind::Ban),
            GovernanceFact::SanctionImposed(expiring),
        ],
    )
    .when(lift("s1"))
    .then(vec![GovernanceFact::SanctionLifted {
        sanction_id: "s1".into(),
        by: "op-1".into(),
        note: "resolved".into(),
        appeal_id: None,
        at_ms: NOW,
    }]);
    assert!(ledger.restrictions(NOW).actions_allowed);
    for (id, kind) in [
        ("s1", GovernanceRefusalKind::SanctionLifted),
        ("exp", GovernanceRefusalKind::SanctionExpired),
        ("nope", GovernanceRefusalKind::UnknownSanction),
    ] {
        let refusal = given(ledger.clone(), []).when(lift(id)).then_refused();
        assert_eq!(refusal.kind(), kind, "{id}");
    }
    let refusal = given(ledger, [imposed("s2", SanctionKind::Warn)])
        .when(GovernanceCommand::Lift {
            sanction_id: "s2".into(),
            by: "op-1".into(),
            note: "".into(),
        })
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::InvalidNote);
}

#[test]
fn an_agent_appeals_its_own_sanction_and_a_lift_restores_its_rights() {
    let ledger = given(ledger(), [imposed("ban-1", SanctionKind::Ban)])
        .when(file("ap-1", "ban-1", "agent-a"))
        .then(vec![filed("ap-1", "ban-1")]);
    // Banned, but the appeal went through: it is the one thing allowed.
    assert_eq!(
        crate::sanction::check(&ledger.restrictions(NOW), ActionClass::Appeal),
        Ok(())
    );
    let ledger = given(ledger, [])
        .when(resolve("ap-1", Resolution::Lift))
        .then(vec![
            resolved("ap-1", Resolution::Lift),
            GovernanceFact::SanctionLifted {
                sanction_id: "ban-1".into(),
                by: "op-1".into(),
                note: "checked the job schedule".into(),
                appeal_id: Some("ap-1".into()),
                at_ms: NOW,
            },
        ]);
    let r = ledger.restrictions(NOW);
    assert!(r.actions_allowed && r.runs_allowed);
    assert_eq!(
        ledger.sanction("ban-1").map(|e| e.status(NOW)),
        Some(SanctionStatus::Lifted)
    );
    let refusal = given(ledger, [])
        .when(resolve("ap-1", Resolution::Uphold))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::AlreadyResolved);
}

/// Attacker case: an agent appealing another agent's sanction.
#[test]
fn an_agent_cannot_appeal_someone_elses_sanction() {
    let refusal = given(ledger(), [imposed("s1", SanctionKind::Suspend)])
        .when(file("ap-x", "s1", "agent-b"))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::NotYourSanction);
    // Even for an id that does not exist: no probing of other ledgers.
    let refusal = given(ledger(), [])
        .when(file("ap-x", "whatever", "agent-b"))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::NotYourSanction);
    // A sanction recorded in this ledger but naming another agent (it
    // cannot be imposed, but a corrupted fact must still not be
    // appealable by the ledger's agent).
    let mut foreign = sanction("f", SanctionKind::Ban, 0);
    foreign.agent_id = "agent-b".into();
    let refusal = given(ledger(), [GovernanceFact::SanctionImposed(foreign)])
        .when(file("ap-y", "f", "agent-a"))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::NotYourSanction);
}

#[test]
fn appeals_of_unknown_lifted_or_expired_sanctions_are_refused_precisely() {
    let mut expired = sanction("old", SanctionKind::Warn, 0);
    expired.expires_at_ms = Some(5_000);
    let history = [
        imposed("gone", SanctionKind::Quarantine),
        GovernanceFact::SanctionLifted {
            sanction_id: "gone".into(),
            by: "op-1".into(),
            note: "n".into(),
            appeal_id: None,
            at_ms: 2_000,
        },
        GovernanceFact::SanctionImposed(expired),
    ];
    for (id, kind) in [
        ("nope", GovernanceRefusalKind::UnknownSanction),
        ("gone", GovernanceRefusalKind::SanctionLifted),
        ("old", GovernanceRefusalKind::SanctionExpired),
    ] {
        let refusal = given(ledger(), history.clone())
            .when(file("ap", id, "agent-a"))
            .then_refused();
        assert_eq!(refusal.kind(), kind, "{id}");
    }
}

#[test]
fn one_open_appeal_per_sanction_and_no_second_appeal_after_an_uphold() {
    let history = [imposed("s1", SanctionKind::Suspend), filed("ap-1", "s1")];
    let refusal = given(ledger(), history.clone())
        .when(file("ap-2", "s1", "agent-a"))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::AppealAlreadyOpen);
    let refusal = given(ledger(), history.clone())
        .when(file("ap-1", "s1", "agent-a"))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::DuplicateAppeal);
    let upheld = given(ledger(), history)
        .when(resolve("ap-1", Resolution::Uphold))
        .then(vec![resolved("ap-1", Resolution::Uphold)]);
    assert!(!upheld.restrictions(NOW).actions_allowed);
    let refusal = given(upheld.clone(), [])
        .when(file("ap-2", "s1", "agent-a"))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::AlreadyUpheld);
    let refusal = given(upheld, [])
        .when(resolve("ap-9", Resolution::Lift))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::UnknownAppeal);
}

#[test]
fn the_statement_is_one_to_2048_bytes() {
    let with = |statement: String| {
        GovernanceCommand::FileAppeal(FileAppeal {
            id: "ap".into(),
            sanction_id: "s1".into(),
            agent_id: "agent-a".into(),
            statement,
        })
    };
    let history = [imposed("s1", SanctionKind::Warn)];
    given(ledger(), history.clone())
        .when(with("é".repeat(MAX_STATEMENT_BYTES / 2)))
        .then(vec![GovernanceFact::AppealFiled(Appeal {
            id: "ap".into(),
            sanction_id: "s1".into(),
            agent_id: "agent-a".into(),
            statement: "é".repeat(MAX_STATEMENT_BYTES / 2),
            filed_at_ms: NOW,
        })]);
    let refusal = given(ledger(), history.clone())
        .when(with("x".repeat(MAX_STATEMENT_BYTES + 1)))
        .then_refused();
    assert_eq!(
        refusal,
        GovernanceRefusal::StatementTooLong { bytes: 2_049 }
    );
    let refusal = given(ledger(), history)
        .when(with(" \n".into()))
        .then_refused();
    assert_eq!(refusal.kind(), GovernanceRefusalKind::EmptyStatement);
}

#[test]
fn lifting_directly_answers_the_open_appeal() {
    let ledger = given(
        ledger(),
        [imposed("s1", SanctionKind::Suspend), filed("ap-1", "s1")],
    )
    .when(GovernanceCommand::Lift {
        sanction_id: "s1".into(),
        by: "op-2".into(),
        note: "false positive".into(),
    })
    .then(vec![
        GovernanceFact::AppealResolved {
            appeal_id: "ap-1".into(),
            resolution: Resolution::Lift,
            operator: "op-2".into(),
            note: "false positive".into(),
            at_ms: NOW,
        },
        GovernanceFact::SanctionLifted {
            sanction_id: "s1".into(),
            by: "op-2".into(),
            note: "false positive".into(),
            appeal_id: Some("ap-1".into()),
            at_ms: NOW,
        },
    ]);
    assert!(ledger.appeals().all(|a| !a.is_open()));
}

#[test]
fn a_lift_resolution_of_a_sanction_that_expired_meanwhile_records_only_the_resolution() {
    let mut s = sanction("s1", SanctionKind::Suspend, 1_000);
    s.expires_at_ms = Some(NOW);
    given(
        ledger(),
        [
            GovernanceFact::SanctionImposed(s),
            GovernanceFact::AppealFiled(Appeal {
                id: "ap-1".into(),
                sanction_id: "s1".into(),
                agent_id: "agent-a".into(),
                statement: "x".into(),
                filed_at_ms: 2_000,
            }),
        ],
    )
    .when(resolve("ap-1", Resolution::Lift))
    .then(vec![resolved("ap-1", Resolution::Lift)]);
}

/// A throttle and a quarantine in one ledger, lifted in either order.
#[test]
fn lifting_in_the_ledger_restores_exactly_the_lifted_restriction() {
    let history = [
        imposed("thr", SanctionKind::Throttle { per_minute: 12 }),
        imposed("quar", SanctionKind::Quarantine),
    ];
    let lift = |id: &str| GovernanceCommand::Lift {
        sanction_id: id.into(),
        by: "op".into(),
        note: "ok".into(),
    };
    for order in [["thr", "quar"], ["quar", "thr"]] {
        let mut state = given(ledger(), history.clone()).state().clone();
        for id in order {
            let (s, result) = given(state, []).when(lift(id)).result();
            state = s;
            let facts = result.expect("lift");
            crate::Aggregate::apply_all(&mut state, &facts);
            let r = state.restrictions(NOW);
            let remaining: Vec<_> = state
                .in_force(NOW)
                .into_iter()
                .map(|s| s.id.clone())
                .collect();
            assert_eq!(r.network_none, remaining.contains(&"quar".to_owned()));
            assert_eq!(
                r.rate_limit_per_minute,
                remaining.contains(&"thr".to_owned()).then_some(12)
            );
        }
        assert_eq!(
            state.restrictions(NOW),
            crate::sanction::Restrictions::none()
        );
    }
}
