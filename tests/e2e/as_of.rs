//! Point-in-time replay through the real binary: `amai agent show --as-of`
//! and `amai trust show --as-of` answer from projections rebuilt from the
//! streams as of a time or of stream positions, while the live answers move
//! on; `amai replay --as-of` reports the positions it rebuilt to.

use crate::util::*;

async fn cli_nats(world: &World, list: &[&str]) -> CliOutput {
    let mut a = world.globals();
    a.extend(args(list));
    run_cli(&a).await
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

#[tokio::test]
async fn answers_as_of_a_time_or_positions_stay_put_while_the_live_ones_move() {
    let world = World::new();
    let _identity = world.worker("w1").await;
    let (_gw, _client) = world.gateway().await;
    let before_alice = now_rfc3339();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (alice_key, alice_id) = gen_keys(&world, "alice").await;
    let reg = world
        .cli(&[
            "agent", "register", "--keys", &alice_key, "--name", "alice", "--json",
        ])
        .await
        .json();
    let genesis_seq = reg["position"]["seq"].as_u64().expect("seq").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let registered = now_rfc3339();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    world
        .cli(&[
            "agent",
            "revoke",
            "--keys",
            &alice_key,
            "--reason",
            "compromised",
        ])
        .await
        .ok();

    // Live: revoked, two events.
    let live = world
        .cli(&["agent", "show", &alice_id, "--json"])
        .await
        .json();
    assert_eq!(live["revoked"], true, "{live}");
    assert_eq!(live["chain_length"], 2, "{live}");

    // As of the time between registration and revocation: not revoked, one event.
    let then = cli_nats(
        &world,
        &["agent", "show", "alice", "--as-of", &registered, "--json"],
    )
    .await
    .json();
    assert_eq!(then["id"], alice_id.as_str(), "{then}");
    assert_eq!(then["revoked"], false, "{then}");
    assert_eq!(then["chain_length"], 1, "{then}");

    // As of the genesis's stream position: the same.
    let at = format!("AMAI_AGENTS:{genesis_seq},AMAI_NAMES:1000,AMAI_TRUST:1000");
    let pos = cli_nats(
        &world,
        &["agent", "show", &alice_id, "--as-of", &at, "--json"],
    )
    .await
    .json();
    assert_eq!(pos["revoked"], false, "{pos}");

    // Before alice existed: not found, and the command says so.
    let none = cli_nats(
        &world,
        &["agent", "show", &alice_id, "--as-of", &before_alice],
    )
    .await;
    assert!(!none.status.success(), "{}", none.stdout);

    // The trust projection as of the registration: alice at 60.0.
    let trust = cli_nats(
        &world,
        &["trust", "show", &alice_id, "--as-of", &registered, "--json"],
    )
    .await
    .json();
    assert_eq!(trust["score"], 60.0, "{trust}");

    // `amai replay` says which positions it rebuilt to.
    let r = cli_nats(
        &world,
        &["replay", "--as-of", &at, "--role", "identity", "--json"],
    )
    .await
    .json();
    assert_eq!(
        r["roles"][0]["positions"]["AMAI_AGENTS"],
        genesis_seq.parse::<u64>().expect("n"),
        "{r}"
    );

    // A malformed point is refused with what to give instead.
    let bad = cli_nats(&world, &["replay", "--as-of", "yesterday"]).await;
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
}
