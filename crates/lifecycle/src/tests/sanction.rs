//! Sanctions, the restrictions they fold into, lifting and the gateway's
//! check.

use crate::sanction::*;

pub(crate) fn sanction(id: &str, kind: SanctionKind, issued_at_ms: i64) -> Sanction {
    Sanction {
        id: id.into(),
        agent_id: "agent-a".into(),
        kind,
        reason: format!("because {id}"),
        evidence: vec![format!("ev-{id}")],
        policy_id: None,
        issued_at_ms,
        expires_at_ms: None,
    }
}

fn throttle(per_minute: u32) -> SanctionKind {
    SanctionKind::Throttle { per_minute }
}

#[test]
fn each_kind_restricts_what_the_table_says() {
    let fold = |kind| Restrictions::fold([&sanction("s", kind, 0)], 0);
    let r = fold(SanctionKind::Warn);
    assert_eq!(
        (
            r.actions_allowed,
            r.runs_allowed,
            r.network_none,
            r.rate_limit_per_minute,
            r.appeal_allowed
        ),
        (true, true, false, None, true)
    );
    let r = fold(throttle(30));
    assert_eq!(
        (
            r.actions_allowed,
            r.runs_allowed,
            r.network_none,
            r.rate_limit_per_minute
        ),
        (true, true, false, Some(30))
    );
    let r = fold(SanctionKind::Quarantine);
    assert_eq!(
        (
            r.actions_allowed,
            r.runs_allowed,
            r.network_none,
            r.rate_limit_per_minute
        ),
        (true, true, true, None)
    );
    for kind in [SanctionKind::Suspend, SanctionKind::Ban] {
        let r = fold(kind);
        assert_eq!(
            (r.actions_allowed, r.runs_allowed, r.appeal_allowed),
            (false, false, true)
        );
        assert_eq!(r.blocked_by.map(|s| s.kind), Some(kind));
    }
    assert_eq!(Restrictions::fold([], 0), Restrictions::none());
    assert!(!Restrictions::none().appeal_allowed);
}

#[test]
fn the_strictest_throttle_wins_and_the_most_severe_blocker_is_named() {
    let all = [
        sanction("t1", throttle(60), 1),
        sanction("t2", throttle(10), 2),
        sanction("t3", throttle(10), 0),
        sanction("s1", SanctionKind::Suspend, 0),
        sanction("b1", SanctionKind::Ban, 5),
    ];
    let r = Restrictions::fold(&all, 10);
    assert_eq!(r.rate_limit_per_minute, Some(10));
    assert_eq!(r.throttled_by.map(|s| s.id), Some("t3".to_owned()));
    assert_eq!(r.blocked_by.map(|s| s.id), Some("b1".to_owned()));
}

#[test]
fn expired_sanctions_restrict_nothing() {
    let mut s = sanction("q", SanctionKind::Quarantine, 0);
    s.expires_at_ms = Some(100);
    assert!(Restrictions::fold([&s], 99).network_none);
    assert_eq!(Restrictions::fold([&s], 100), Restrictions::none());
    assert_eq!(in_force(std::slice::from_ref(&s), 100).len(), 0);
}

/// A throttle and a quarantine, lifted in either order: each lift restores
/// exactly what that sanction took away.
#[test]
fn a_throttle_and_a_quarantine_lifted_in_either_order() {
    let both = vec![
        sanction("t", throttle(20), 0),
        sanction("q", SanctionKind::Quarantine, 1),
    ];
    let full = Restrictions::fold(&both, 5);
    assert!(full.network_none);
    assert_eq!(full.rate_limit_per_minute, Some(20));

    let (rest, lifted) = lift(&both, "t").expect("known");
    assert_eq!(lifted.id, "t");
    let r = Restrictions::fold(&rest, 5);
    assert_eq!((r.network_none, r.rate_limit_per_minute), (true, None));
    let (rest, _) = lift(&rest, "q").expect("known");
    assert_eq!(Restrictions::fold(&rest, 5), Restrictions::none());

    let (rest, _) = lift(&both, "q").expect("known");
    let r = Restrictions::fold(&rest, 5);
    assert_eq!((r.network_none, r.rate_limit_per_minute), (false, Some(20)));
    let (rest, _) = lift(&rest, "t").expect("known");
    assert_eq!(Restrictions::fold(&rest, 5), Restrictions::none());

    assert_eq!(
        lift(&both, "nope"),
        Err(UnknownSanction {
            sanction_id: "nope".into()
        })
    );
}

/// The restrictions of a set computed without the fold: the oracle.
fn oracle(sanctions: &[Sanction]) -> (bool, bool, Option<u32>, bool) {
    let blocked = sanctions.iter().any(|s| s.kind.blocks());
    let quarantined = sanctions.iter().any(|s| s.kind == SanctionKind::Quarantine);
    let rate = sanctions
        .iter()
        .filter_map(|s| match s.kind {
            SanctionKind::Throttle { per_minute } => Some(per_minute),
            _ => None,
        })
        .min();
    (!blocked, quarantined, rate, !sanctions.is_empty())
}

/// Exhaustive over every subset of seven sanctions (two throttles, two
/// blockers, a quarantine, a warn, an expired ban) and every member of it:
/// lifting it gives the fold of the others, which matches the oracle, and
/// never loosens what another sanction in force still imposes.
#[test]
fn lifting_restores_exactly_what_the_lifted_sanction_took_away() {
    let mut expired = sanction("x-ban", SanctionKind::Ban, 0);
    expired.expires_at_ms = Some(50);
    let pool = [
        sanction("thr-30", throttle(30), 3),
        sanction("thr-5", throttle(5), 4),
        sanction("quar", SanctionKind::Quarantine, 1),
        sanction("susp", SanctionKind::Suspend, 2),
        sanction("ban", SanctionKind::Ban, 6),
        sanction("warn", SanctionKind::Warn, 0),
        expired,
    ];
    let now = 100;
    let mut checked = 0;
    for mask in 0u32..(1 << pool.len()) {
        let set: Vec<Sanction> = pool
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, s)| s.clone())
            .collect();
        let before = Restrictions::fold(&set, now);
        for s in &set {
            let (rest, lifted) = lift(&set, &s.id).expect("member");
            assert_eq!(&lifted, s);
            assert_eq!(rest.len(), set.len() - 1);
            let after = Restrictions::fold(&rest, now);
            let others: Vec<Sanction> = set.iter().filter(|o| o.id != s.id).cloned().collect();
            assert_eq!(after, Restrictions::fold(&others, now));
            let live: Vec<Sanction> = others
                .iter()
                .filter(|o| o.is_active(now))
                .cloned()
                .collect();
            assert_eq!(
                (
                    after.actions_allowed,
                    after.network_none,
                    after.rate_limit_per_minute,
                    after.appeal_allowed
                ),
                oracle(&live),
                "mask {mask:b}, lifting {}",
                s.id
            );
            // Nothing another sanction in force imposes is given back.
            assert!(after.actions_allowed || !before.actions_allowed);
            if !s.is_active(now) {
                assert_eq!(after, before, "lifting an expired sanction changes nothing");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 7 * (1 << 6));
}

#[test]
fn the_fold_does_not_depend_on_the_order() {
    let set = vec![
        sanction("a", throttle(10), 1),
        sanction("b", throttle(10), 1),
        sanction("c", SanctionKind::Suspend, 1),
        sanction("d", SanctionKind::Suspend, 1),
        sanction("e", SanctionKind::Quarantine, 2),
        sanction("f", SanctionKind::Quarantine, 1),
    ];
    let expected = Restrictions::fold(&set, 5);
    assert_eq!(
        expected.throttled_by.as_ref().map(|s| s.id.as_str()),
        Some("a")
    );
    assert_eq!(
        expected.blocked_by.as_ref().map(|s| s.id.as_str()),
        Some("c")
    );
    assert_eq!(
        expected.quarantined_by.as_ref().map(|s| s.id.as_str()),
        Some("f")
    );
    // Every rotation and the reverse of every rotation.
    for k in 0..set.len() {
        let mut v = set.clone();
        v.rotate_left(k);
        assert_eq!(Restrictions::fold(&v, 5), expected);
        v.reverse();
        assert_eq!(Restrictions::fold(&v, 5), expected);
    }
}

#[test]
fn the_check_refuses_actions_and_runs_under_suspend_and_ban_naming_the_sanction() {
    let r = Restrictions::fold([&sanction("s-1", SanctionKind::Suspend, 0)], 0);
    for class in [ActionClass::Action, ActionClass::Run] {
        let refusal = check(&r, class).expect_err("suspended");
        assert_eq!(refusal.kind(), SanctionRefusalKind::Sanctioned);
        assert_eq!(
            refusal,
            SanctionRefusal::Sanctioned {
                class,
                sanction: SanctionRef {
                    id: "s-1".into(),
                    kind: SanctionKind::Suspend,
                    reason: "because s-1".into(),
                },
            }
        );
        let message = refusal.to_string();
        assert!(
            message.contains("s-1")
                && message.contains("suspend")
                && message.contains("because s-1")
        );
    }
    // The appeal is the one thing still allowed, a ban included.
    let banned = Restrictions::fold([&sanction("b", SanctionKind::Ban, 0)], 0);
    assert_eq!(check(&banned, ActionClass::Appeal), Ok(()));
    // A quarantine or a throttle refuses nothing: the caller applies them.
    let q = Restrictions::fold(
        [
            &sanction("q", SanctionKind::Quarantine, 0),
            &sanction("t", throttle(1), 0),
        ],
        0,
    );
    for class in [ActionClass::Action, ActionClass::Run, ActionClass::Appeal] {
        assert_eq!(check(&q, class), Ok(()));
    }
    assert_eq!(
        check(&Restrictions::none(), ActionClass::Appeal).map_err(|e| e.kind()),
        Err(SanctionRefusalKind::NothingToAppeal)
    );
    assert_eq!(check(&Restrictions::none(), ActionClass::Action), Ok(()));
}
