//! Several `amai worker --role identity` instances and a separate `amai gateway`
//! on one NATS: work is shared through the durable consumer (exactly one
//! `trust.initialized` per agent), queries are answered by any instance, and
//! either instance alone keeps the system working.

use crate::util::*;

/// Asserts every agent is visible through the gateway at its registration
/// position, with trust score 60 once it is initialised.
async fn assert_all_visible(client: &amai_client::AmaiClient, agents: &[Registered]) {
    for a in agents {
        // Retried: right after a worker (re)starts or dies, a query can briefly
        // find no responder (the worker logs "role up" before its query service
        // has subscribed; a killed worker's subscription lingers until the
        // server notices).
        let what = format!("GetIdentity {} at its registration", a.name);
        let ident = wait_until(&what, DEADLINE, || {
            identity_at(client, &a.id, Some(a.position.clone()))
        })
        .await;
        assert_eq!(ident.id, a.id);
        assert_eq!(ident.name, a.name);
    }
    for a in agents {
        wait_until(
            &format!("{} has trust score 60", a.name),
            DEADLINE,
            || async {
                let i = identity_at(client, &a.id, None)
                    .await
                    .map_err(|e| e.to_string())?;
                if i.trust_score == Some(60.0) {
                    Ok(())
                } else {
                    Err(format!("trust score {:?}", i.trust_score))
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_a_gateway_share_work() {
    let world = World::new();
    // The first worker bootstraps the operator and service identities.
    let mut w1 = world.worker("w1").await;
    let mut w2 = world.worker("w2").await;
    let (_gateway, client) = world.gateway().await;
    let js = world.jetstream().await;

    // Both instances are up: 40 registrations, each initialised exactly once.
    let agents = register_many(&client, "agent", 40, 8).await;
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    wait_one_trust_init_each(&js, &ids).await;
    assert_all_visible(&client, &agents).await;
    // The two bootstrap identities (operator, svc-identity) plus the 40, once each.
    assert_eq!(stream_messages(&js, "AMAI_TRUST").await, 42);
    assert!(w1.is_running() && w2.is_running());

    // w1 crashes: w2 alone answers queries and initialises new agents.
    w1.kill9();
    assert_all_visible(&client, &agents[..5]).await;
    let during = register_many(&client, "while-w1-down", 10, 4).await;
    let during_ids: Vec<String> = during.iter().map(|a| a.id.clone()).collect();
    wait_one_trust_init_each(&js, &during_ids).await;
    assert_all_visible(&client, &during).await;

    // w1 comes back with its own state and w2 stops: w1 catches up on what it
    // missed and carries on alone.
    let mut w1 = world.worker("w1").await;
    w2.sigterm();
    let status = w2.wait_exit(DEADLINE).await;
    assert!(status.success(), "w2 exited with {status}");
    assert_all_visible(&client, &during).await;
    let after = register_many(&client, "after", 5, 5).await;
    let after_ids: Vec<String> = after.iter().map(|a| a.id.clone()).collect();
    wait_one_trust_init_each(&js, &after_ids).await;
    assert_all_visible(&client, &after).await;

    // Nothing was initialised twice, by either instance, across the handovers.
    let all: Vec<String> = ids
        .iter()
        .chain(&during_ids)
        .chain(&after_ids)
        .cloned()
        .collect();
    assert_one_trust_init_each(&js, &all).await;
    assert_eq!(stream_messages(&js, "AMAI_TRUST").await, 2 + 55);
    let last = after
        .iter()
        .map(|a| a.position.clone())
        .max_by_key(|p| p.seq);
    let stats = stats_at(&client, last).await.expect("stats from w1");
    assert_eq!(stats.identities, 2 + 55, "{stats:?}");
    assert_eq!(stats.integrity_violations, 0);
    assert_eq!(stream_messages(&js, "AMAI_FAILURES").await, 0);
    assert!(w1.is_running());
}
