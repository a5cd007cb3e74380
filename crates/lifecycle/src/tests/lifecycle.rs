//! The lifecycle state machine: every (state, command) pair of the table,
//! then the rules that depend on more than the state.

use super::harness::{given, NOW};
use crate::health::RestartPolicy;
use crate::state::*;
use crate::Aggregate;

fn digest(byte: &str) -> String {
    format!("sha256:{}", byte.repeat(32))
}

fn agent() -> Agent {
    Agent::catalogued(
        "scout",
        ["fs:read".to_owned(), "net:http".to_owned()],
        RestartPolicy::default(),
    )
}

/// The facts that bring a fresh agent to `state` (started at 1000, crashed
/// or stopped at 2000, a restart due at 3000).
fn history(state: State) -> Vec<Fact> {
    use State::*;
    let installed = vec![Fact::Installed {
        image_digest: digest("aa"),
    }];
    let enabled = [
        installed.clone(),
        vec![Fact::Enabled {
            approved: vec!["net:http".into()],
        }],
    ]
    .concat();
    let starting = [enabled.clone(), vec![Fact::StartRequested]].concat();
    let running = [
        starting.clone(),
        vec![Fact::Started {
            container_id: "c1".into(),
            at_ms: 1_000,
        }],
    ]
    .concat();
    let stopping = [
        running.clone(),
        vec![Fact::StopRequested {
            reason: StopReason::Operator,
        }],
    ]
    .concat();
    let stopped = [
        stopping.clone(),
        vec![Fact::Stopped {
            exit_code: Some(0),
            at_ms: 2_000,
        }],
    ]
    .concat();
    match state {
        Catalogued => vec![],
        Installed => installed,
        Enabled => enabled,
        Starting => starting,
        Running => running,
        Stopping => stopping,
        Stopped => stopped,
        Crashed => [
            running,
            vec![
                Fact::Crashed {
                    exit_code: Some(1),
                    at_ms: 2_000,
                    healthy_run: false,
                },
                Fact::RestartScheduled {
                    attempt: 1,
                    delay_ms: 1_000,
                    restart_at_ms: 3_000,
                },
            ],
        ]
        .concat(),
        Disabled => [
            stopped,
            vec![Fact::Disabled {
                reason: "incident 7".into(),
                awaiting_exit: false,
            }],
        ]
        .concat(),
    }
}

/// One command of each kind, as the table sends it.
fn command(kind: CommandKind) -> Command {
    match kind {
        CommandKind::Install => Command::Install {
            image_digest: digest("bb"),
        },
        CommandKind::Enable => Command::Enable {
            approved: vec!["net:http".into()],
        },
        CommandKind::Run => Command::Run,
        CommandKind::Started => Command::Started {
            container_id: "c2".into(),
        },
        CommandKind::Stop => Command::Stop,
        CommandKind::Stopped => Command::Stopped { exit_code: Some(0) },
        CommandKind::Crashed => Command::Crashed {
            exit_code: Some(1),
            at_ms: NOW,
        },
        CommandKind::Restart => Command::Restart,
        CommandKind::Disable => Command::Disable {
            reason: "incident 9".into(),
        },
        CommandKind::Uninstall => Command::Uninstall,
    }
}

enum Outcome {
    Ok(Vec<Fact>, State),
    Refused(RefusalKind),
}

fn ok(facts: Vec<Fact>, state: State) -> Outcome {
    Outcome::Ok(facts, state)
}

fn no(kind: RefusalKind) -> Outcome {
    Outcome::Refused(kind)
}

/// The full table: for each state, the outcome of each command in
/// [`ALL_COMMANDS`] order.
fn table() -> Vec<(State, [Outcome; 10])> {
    use RefusalKind::*;
    let installed = || {
        ok(
            vec![Fact::Installed {
                image_digest: digest("bb"),
            }],
            State::Installed,
        )
    };
    let enabled = || {
        ok(
            vec![Fact::Enabled {
                approved: vec!["net:http".into()],
            }],
            State::Enabled,
        )
    };
    let start = || ok(vec![Fact::StartRequested], State::Starting);
    let stop = || {
        ok(
            vec![Fact::StopRequested {
                reason: StopReason::Operator,
            }],
            State::Stopping,
        )
    };
    let stopped = |code| {
        ok(
            vec![Fact::Stopped {
                exit_code: Some(code),
                at_ms: NOW,
            }],
            State::Stopped,
        )
    };
    let crash = || {
        ok(
            vec![
                Fact::Crashed {
                    exit_code: Some(1),
                    at_ms: NOW,
                    healthy_run: false,
                },
                Fact::RestartScheduled {
                    attempt: 1,
                    delay_ms: 1_000,
                    restart_at_ms: NOW + 1_000,
                },
            ],
            State::Crashed,
        )
    };
    let disable = || {
        ok(
            vec![Fact::Disabled {
                reason: "incident 9".into(),
                awaiting_exit: false,
            }],
            State::Disabled,
        )
    };
    let kill = || {
        ok(
            vec![
                Fact::StopRequested {
                    reason: StopReason::Disabled,
                },
                Fact::Disabled {
                    reason: "incident 9".into(),
                    awaiting_exit: true,
                },
            ],
            State::Disabled,
        )
    };
    let uninstall = || ok(vec![Fact::Uninstalled], State::Catalogued);
    let ill = || no(IllegalTransition);
    vec![
        //                 Install      Enable      Run                   Started                 Stop        Stopped      Crashed     Restart     Disable                 Uninstall
        (
            State::Catalogued,
            [
                installed(),
                no(NotInstalled),
                no(NotInstalled),
                no(NotInstalled),
                no(NotInstalled),
                no(NotInstalled),
                no(NotInstalled),
                no(NotInstalled),
                no(NotInstalled),
                no(NotInstalled),
            ],
        ),
        (
            State::Installed,
            [
                installed(),
                enabled(),
                no(NotEnabled),
                ill(),
                ill(),
                ill(),
                ill(),
                ill(),
                disable(),
                uninstall(),
            ],
        ),
        (
            State::Enabled,
            [
                installed(),
                enabled(),
                start(),
                ill(),
                ill(),
                ill(),
                ill(),
                ill(),
                disable(),
                uninstall(),
            ],
        ),
        (
            State::Starting,
            [
                ill(),
                ill(),
                no(AlreadyRunning),
                ok(
                    vec![Fact::Started {
                        container_id: "c2".into(),
                        at_ms: NOW,
                    }],
                    State::Running,
                ),
                stop(),
                ill(),
                crash(),
                ill(),
                kill(),
                ill(),
            ],
        ),
        (
            State::Running,
            [
                ill(),
                ill(),
                no(AlreadyRunning),
                ill(),
                stop(),
                stopped(0),
                crash(),
                ill(),
                kill(),
                ill(),
            ],
        ),
        (
            State::Stopping,
            [
                ill(),
                ill(),
                ill(),
                ill(),
                ill(),
                stopped(0),
                stopped(1),
                ill(),
                kill(),
                ill(),
            ],
        ),
        (
            State::Stopped,
            [
                installed(),
                enabled(),
                start(),
                ill(),
                ill(),
                ill(),
                ill(),
                ill(),
                disable(),
                uninstall(),
            ],
        ),
        (
            State::Crashed,
            [
                ill(),
                ill(),
                ill(),
                ill(),
                ok(vec![Fact::RestartCancelled], State::Stopped),
                ill(),
                ill(),
                ok(vec![Fact::Restarting { attempt: 1 }], State::Starting),
                disable(),
                ill(),
            ],
        ),
        (
            State::Disabled,
            [
                ill(),
                enabled(),
                no(Disabled),
                no(Disabled),
                ill(),
                ill(),
                ill(),
                ill(),
                no(AlreadyDisabled),
                uninstall(),
            ],
        ),
    ]
}

#[test]
fn every_state_and_command_pair_is_decided_as_the_table_says() {
    let table = table();
    assert_eq!(table.len(), ALL_STATES.len());
    let mut pairs = 0;
    for (state, outcomes) in table {
        let fixture = given(agent(), history(state));
        assert_eq!(fixture.state().state(), state, "fixture for {state}");
        for (kind, expected) in ALL_COMMANDS.into_iter().zip(outcomes) {
            pairs += 1;
            let (before, result) = given(agent(), history(state)).when(command(kind)).result();
            match (expected, result) {
                (Outcome::Ok(facts, next), Ok(got)) => {
                    assert_eq!(got, facts, "{state} x {kind}: facts");
                    assert!(
                        allowed_from(kind).contains(&state),
                        "{state} x {kind} is legal but not in allowed_from"
                    );
                    let mut after = before;
                    after.apply_all(&got);
                    assert_eq!(after.state(), next, "{state} x {kind}: next state");
                }
                (Outcome::Refused(want), Err(refusal)) => {
                    assert_eq!(refusal.kind(), want, "{state} x {kind}: {refusal}");
                    if let Refusal::IllegalTransition {
                        from,
                        command,
                        allowed_from: listed,
                        ..
                    } = &refusal
                    {
                        assert_eq!((*from, *command), (state, kind));
                        assert_eq!(listed.as_slice(), allowed_from(kind));
                        assert!(!listed.contains(&state));
                    }
                    assert!(
                        refusal.to_string().contains("scout")
                            || refusal.kind() == RefusalKind::InvalidDigest,
                        "{state} x {kind}: the message names the agent: {refusal}"
                    );
                }
                (Outcome::Ok(facts, _), Err(refusal)) => {
                    panic!("{state} x {kind}: refused {refusal}, expected {facts:?}")
                }
                (Outcome::Refused(want), Ok(facts)) => {
                    panic!("{state} x {kind}: produced {facts:?}, expected {want:?}")
                }
            }
        }
    }
    assert_eq!(pairs, 90);
}

#[test]
fn refusals_say_what_to_do() {
    let msg = |state, kind| {
        given(agent(), history(state))
            .when(command(kind))
            .then_refused()
            .to_string()
    };
    assert!(msg(State::Installed, CommandKind::Run)
        .contains("enable it first: amai agent enable scout"));
    assert!(msg(State::Catalogued, CommandKind::Run)
        .contains("install it first: amai agent install scout"));
    assert!(msg(State::Disabled, CommandKind::Run).contains("(incident 7)"));
    assert!(msg(State::Disabled, CommandKind::Run).contains("re-enable it first"));
    assert!(
        msg(State::Running, CommandKind::Install).contains("stop it first: amai agent stop scout")
    );
    assert!(msg(State::Running, CommandKind::Started).contains("stale"));
    assert!(msg(State::Stopped, CommandKind::Restart).contains("amai agent run scout"));
}

#[test]
fn install_refuses_a_malformed_digest_and_ignores_the_pinned_one() {
    for bad in [
        "",
        "sha256:",
        "sha256:ABCD",
        "md5:00",
        &format!("sha256:{}", "g".repeat(64)),
    ] {
        let refusal = given(agent(), [])
            .when(Command::Install {
                image_digest: bad.to_owned(),
            })
            .then_refused();
        assert_eq!(refusal.kind(), RefusalKind::InvalidDigest, "{bad}");
    }
    given(agent(), history(State::Stopped))
        .when(Command::Install {
            image_digest: digest("aa"),
        })
        .then(vec![]);
}

#[test]
fn reinstalling_a_new_image_drops_the_approvals() {
    let agent = given(agent(), history(State::Stopped))
        .when(command(CommandKind::Install))
        .then(vec![Fact::Installed {
            image_digest: digest("bb"),
        }]);
    assert!(agent.approved().is_empty());
    let refusal = given(agent, []).when(Command::Run).then_refused();
    assert_eq!(refusal.kind(), RefusalKind::NotEnabled);
}

#[test]
fn enable_replaces_the_approved_set_sorted_and_unique() {
    let agent = given(agent(), history(State::Enabled))
        .when(Command::Enable {
            approved: vec!["net:http".into(), "fs:read".into(), "net:http".into()],
        })
        .then(vec![Fact::Enabled {
            approved: vec!["fs:read".into(), "net:http".into()],
        }]);
    let agent = given(agent, [])
        .when(Command::Enable { approved: vec![] })
        .then(vec![Fact::Enabled { approved: vec![] }]);
    assert!(agent.approved().is_empty());
}

#[test]
fn enable_refuses_permissions_the_manifest_does_not_request() {
    let refusal = given(agent(), history(State::Installed))
        .when(Command::Enable {
            approved: vec!["net:http".into(), "shell:root".into(), "docker:sock".into()],
        })
        .then_refused();
    assert_eq!(refusal.kind(), RefusalKind::NotRequested);
    assert_eq!(
        refusal,
        Refusal::NotRequested {
            agent: "scout".into(),
            permissions: vec!["docker:sock".into(), "shell:root".into()],
        }
    );
}

#[test]
fn disable_needs_a_reason() {
    for reason in ["", "   ", &"x".repeat(MAX_REASON_BYTES + 1)] {
        let refusal = given(agent(), history(State::Running))
            .when(Command::Disable {
                reason: reason.to_owned(),
            })
            .then_refused();
        assert_eq!(refusal.kind(), RefusalKind::InvalidReason);
    }
}

#[test]
fn disabling_a_running_agent_stops_it_now_and_waits_for_its_exit() {
    let disabled = given(agent(), history(State::Running))
        .when(command(CommandKind::Disable))
        .then(vec![
            Fact::StopRequested {
                reason: StopReason::Disabled,
            },
            Fact::Disabled {
                reason: "incident 9".into(),
                awaiting_exit: true,
            },
        ]);
    assert!(disabled.awaiting_exit());
    // Until the container exits, the operator cannot re-enable or uninstall.
    for command in [command(CommandKind::Enable), Command::Uninstall] {
        let refusal = given(disabled.clone(), []).when(command).then_refused();
        assert_eq!(refusal.kind(), RefusalKind::StillStopping);
        assert!(refusal.is_retryable());
    }
    // The runtime's exit report is accepted once, as the container's exit.
    let exited = given(disabled.clone(), [])
        .when(Command::Stopped {
            exit_code: Some(137),
        })
        .then(vec![Fact::ContainerExited {
            exit_code: Some(137),
            at_ms: NOW,
        }]);
    assert_eq!(exited.state(), State::Disabled);
    assert!(!exited.awaiting_exit());
    assert_eq!(exited.container_id(), None);
    let refusal = given(exited.clone(), [])
        .when(Command::Stopped { exit_code: Some(0) })
        .then_refused();
    assert_eq!(refusal.kind(), RefusalKind::IllegalTransition);
    // A crash report counts as the exit too.
    given(disabled, [])
        .when(Command::Crashed {
            exit_code: None,
            at_ms: NOW,
        })
        .then(vec![Fact::ContainerExited {
            exit_code: None,
            at_ms: NOW,
        }]);
    given(exited, [])
        .when(command(CommandKind::Enable))
        .then(vec![Fact::Enabled {
            approved: vec!["net:http".into()],
        }]);
}

#[test]
fn disabling_a_starting_agent_refuses_its_late_start_report() {
    let disabled = given(agent(), history(State::Starting))
        .when(command(CommandKind::Disable))
        .then(vec![
            Fact::StopRequested {
                reason: StopReason::Disabled,
            },
            Fact::Disabled {
                reason: "incident 9".into(),
                awaiting_exit: true,
            },
        ]);
    let refusal = given(disabled, [])
        .when(command(CommandKind::Started))
        .then_refused();
    assert_eq!(refusal.kind(), RefusalKind::Disabled);
}

/// Attacker case: a disabled agent gets no run by any path but an
/// operator's explicit re-enable.
#[test]
fn a_disabled_agent_runs_only_after_an_explicit_reenable() {
    let disabled = given(agent(), history(State::Disabled)).state().clone();
    for command in [
        Command::Run,
        Command::Restart,
        Command::Started {
            container_id: "forged".into(),
        },
        Command::Install {
            image_digest: digest("cc"),
        },
        Command::Stop,
    ] {
        let refusal = given(disabled.clone(), [])
            .when(command.clone())
            .then_refused();
        assert!(
            matches!(
                refusal.kind(),
                RefusalKind::Disabled | RefusalKind::IllegalTransition
            ),
            "{command:?}: {refusal}"
        );
        assert_eq!(given(disabled.clone(), []).state().state(), State::Disabled);
    }
    // Uninstalling and reinstalling does not bring it back either: it needs
    // an Enable.
    let reinstalled = given(disabled.clone(), [Fact::Uninstalled])
        .when(Command::Install {
            image_digest: digest("cc"),
        })
        .then(vec![Fact::Installed {
            image_digest: digest("cc"),
        }]);
    let refusal = given(reinstalled, []).when(Command::Run).then_refused();
    assert_eq!(refusal.kind(), RefusalKind::NotEnabled);
    // The approval is the re-enable; then it runs.
    let enabled = given(disabled, [])
        .when(command(CommandKind::Enable))
        .then(vec![Fact::Enabled {
            approved: vec!["net:http".into()],
        }]);
    assert_eq!(enabled.disabled_reason(), None);
    given(enabled, [])
        .when(Command::Run)
        .then(vec![Fact::StartRequested]);
}

#[test]
fn a_restart_waits_for_its_backoff() {
    let refusal = given(agent(), history(State::Crashed))
        .at(2_500)
        .when(Command::Restart)
        .then_refused();
    assert_eq!(
        refusal,
        Refusal::BackoffPending {
            agent: "scout".into(),
            restart_at_ms: 3_000,
            remaining_ms: 500,
        }
    );
    assert!(refusal.is_retryable());
    given(agent(), history(State::Crashed))
        .at(3_000)
        .when(Command::Restart)
        .then(vec![Fact::Restarting { attempt: 1 }]);
}

/// Crashes `n` times, each run failing 100 ms after its start, restarting
/// as soon as allowed; returns the agent and the facts of the last crash.
fn crash_repeatedly(n: usize) -> (Agent, Vec<Fact>) {
    let mut agent = given(agent(), history(State::Running)).state().clone();
    let mut now = 1_100;
    let mut last = Vec::new();
    for _ in 0..n {
        let facts = agent
            .decide(
                &Command::Crashed {
                    exit_code: Some(2),
                    at_ms: now,
                },
                now,
            )
            .expect("crash accepted");
        agent.apply_all(&facts);
        last = facts;
        if let Some(pending) = agent.pending_restart() {
            now = pending.restart_at_ms;
            for command in [
                Command::Restart,
                Command::Started {
                    container_id: format!("c{now}"),
                },
            ] {
                let facts = agent.decide(&command, now).expect("restart");
                agent.apply_all(&facts);
            }
            now += 100;
        }
    }
    (agent, last)
}

#[test]
fn restarts_back_off_exponentially() {
    let (agent, _) = crash_repeatedly(4);
    assert_eq!(agent.state(), State::Running);
    let (_, facts) = crash_repeatedly(3);
    assert_eq!(
        facts[1],
        Fact::RestartScheduled {
            attempt: 3,
            delay_ms: 4_000,
            restart_at_ms: facts_crash_time(&facts) + 4_000,
        }
    );
}

fn facts_crash_time(facts: &[Fact]) -> i64 {
    match facts.first() {
        Some(Fact::Crashed { at_ms, .. }) => *at_ms,
        other => panic!("not a crash: {other:?}"),
    }
}

#[test]
fn the_fifth_crash_in_ten_minutes_disables_the_agent() {
    let (agent, facts) = crash_repeatedly(5);
    assert_eq!(agent.state(), State::Disabled);
    assert_eq!(
        facts[1..],
        [
            Fact::CrashLoopDetected {
                crashes: 5,
                window_ms: 600_000,
            },
            Fact::Disabled {
                reason: "crash loop: 5 crashes within 10m".into(),
                awaiting_exit: false,
            },
        ]
    );
    assert_eq!(agent.pending_restart(), None);
    // The restart timer that fires late is refused.
    let refusal = given(agent.clone(), [])
        .when(Command::Restart)
        .then_refused();
    assert_eq!(refusal.kind(), RefusalKind::IllegalTransition);
    // Re-enabling clears the crash history.
    let enabled = given(agent, [])
        .when(command(CommandKind::Enable))
        .then(vec![Fact::Enabled {
            approved: vec!["net:http".into()],
        }]);
    assert!(enabled.crashes().crashes_ms().is_empty());
}

#[test]
fn a_healthy_run_resets_the_attempt_count() {
    let (agent, _) = crash_repeatedly(3);
    assert_eq!(agent.crashes().crashes_ms().len(), 3);
    let started = agent.started_at_ms().expect("running");
    let at = started + 60_000;
    let agent = given(agent, [])
        .at(at)
        .when(Command::Crashed {
            exit_code: Some(1),
            at_ms: at,
        })
        .then(vec![
            Fact::Crashed {
                exit_code: Some(1),
                at_ms: at,
                healthy_run: true,
            },
            Fact::RestartScheduled {
                attempt: 1,
                delay_ms: 1_000,
                restart_at_ms: at + 1_000,
            },
        ]);
    assert_eq!(agent.crashes().crashes_ms(), [at]);
}

/// Attacker case: crash reports out of order, or from the future, cannot
/// escape the crash-loop count or push the window.
#[test]
fn crash_times_out_of_order_are_counted_and_future_ones_clamped() {
    let mut agent = given(agent(), history(State::Running)).state().clone();
    let now = 100_000;
    // Reports arrive newest first.
    for (i, at) in [90_000, 80_000, 70_000, 60_000].into_iter().enumerate() {
        let facts = agent
            .decide(
                &Command::Crashed {
                    exit_code: Some(1),
                    at_ms: at,
                },
                now,
            )
            .expect("crash");
        agent.apply_all(&facts);
        let attempt = u32::try_from(i + 1).expect("small");
        assert!(
            facts.contains(&Fact::RestartScheduled {
                attempt,
                delay_ms: 1_000 << (attempt - 1),
                restart_at_ms: now + (1_000 << (attempt - 1)),
            }),
            "{facts:?}"
        );
        for command in [
            Command::Restart,
            Command::Started {
                container_id: "c".into(),
            },
        ] {
            let facts = agent.decide(&command, now + 60_000).expect("restart");
            agent.apply_all(&facts);
        }
    }
    assert_eq!(
        agent.crashes().crashes_ms(),
        [60_000, 70_000, 80_000, 90_000]
    );
    // A report from the far future is recorded at `now`.
    let facts = agent
        .decide(
            &Command::Crashed {
                exit_code: Some(1),
                at_ms: i64::MAX,
            },
            now + 60_000,
        )
        .expect("crash");
    assert_eq!(facts_crash_time(&facts), now + 60_000);
    assert!(facts.contains(&Fact::CrashLoopDetected {
        crashes: 5,
        window_ms: 600_000,
    }));
}

#[test]
fn lost_heartbeats_are_a_crash_without_an_exit_code() {
    given(agent(), history(State::Running))
        .when(Command::Crashed {
            exit_code: None,
            at_ms: NOW,
        })
        .then(vec![
            Fact::Crashed {
                exit_code: None,
                at_ms: NOW,
                healthy_run: false,
            },
            Fact::RestartScheduled {
                attempt: 1,
                delay_ms: 1_000,
                restart_at_ms: NOW + 1_000,
            },
        ]);
}

#[test]
fn uninstall_forgets_the_installation() {
    let agent = given(agent(), history(State::Disabled))
        .when(Command::Uninstall)
        .then(vec![Fact::Uninstalled]);
    assert_eq!(agent.image_digest(), None);
    assert!(agent.approved().is_empty());
    assert_eq!(agent.disabled_reason(), None);
}

#[test]
fn replaying_the_facts_gives_the_same_state_and_serialized_facts_round_trip() {
    let mut log = history(State::Running);
    let mut live = given(self::agent(), log.clone()).state().clone();
    for (now, command) in [
        (
            5_000,
            Command::Crashed {
                exit_code: Some(3),
                at_ms: 4_000,
            },
        ),
        (6_000, Command::Restart),
        (
            6_100,
            Command::Started {
                container_id: "c9".into(),
            },
        ),
        (
            7_000,
            Command::Disable {
                reason: "manual".into(),
            },
        ),
        (
            7_500,
            Command::Stopped {
                exit_code: Some(137),
            },
        ),
    ] {
        let facts = live.decide(&command, now).expect("legal");
        live.apply_all(&facts);
        log.extend(facts);
    }
    let json = serde_json::to_string(&log).expect("serialize");
    let back: Vec<Fact> = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, log);
    let replayed = given(self::agent(), back).state().clone();
    assert_eq!(replayed, live);
    assert_eq!(
        serde_json::to_vec(&replayed).expect("state"),
        serde_json::to_vec(&live).expect("state")
    );
}
