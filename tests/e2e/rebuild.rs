//! `amai projections rebuild`: a stopped worker's projection is cleared, and on
//! restart it is rebuilt from the streams into exactly the state it had live.

use std::collections::BTreeMap;

use amai_bus::proto;
use amai_bus::IdentityKeys;
use amai_client::AmaiClient;

use crate::util::*;

/// Everything the identity read model answers for the given identities.
#[derive(Debug, PartialEq)]
struct Snapshot {
    stats: proto::Stats,
    identities: BTreeMap<String, proto::Identity>,
    keys: BTreeMap<String, proto::Keys>,
    inboxes: BTreeMap<String, Vec<String>>,
}

async fn snapshot(
    client: &AmaiClient,
    last: &proto::Position,
    ids: &[String],
    readers: &[Registered],
) -> Result<Snapshot, String> {
    let e = |what: &str, err: &dyn std::fmt::Display| format!("{what}: {err}");
    let stats = stats_at(client, Some(last.clone()))
        .await
        .map_err(|x| e("GetStats", &x))?;
    let mut identities = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for id in ids {
        let i = identity_at(client, id, Some(last.clone()))
            .await
            .map_err(|x| e("GetIdentity", &x))?;
        identities.insert(id.clone(), i);
        let k = client.get_keys(id).await.map_err(|x| e("GetKeys", &x))?;
        keys.insert(id.clone(), k);
    }
    let mut inboxes = BTreeMap::new();
    for r in readers {
        let inbox = client
            .agent(r.keys.clone())
            .inbox(0, 1000)
            .await
            .map_err(|x| e("inbox", &x))?;
        let seen = inbox
            .iter()
            .map(|m| {
                format!(
                    "{}:{}:{}",
                    m.position.seq,
                    m.from,
                    String::from_utf8_lossy(&m.plaintext)
                )
            })
            .collect();
        inboxes.insert(r.id.clone(), seen);
    }
    Ok(Snapshot {
        stats,
        identities,
        keys,
        inboxes,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_rebuild_equals_live() {
    let world = World::new();
    let mut worker = world.worker("w1").await;
    let (_gateway, client) = world.gateway().await;

    // History: registrations, messages, a key rotation (and a message signed
    // with the new key), a revocation.
    let agents = register_many(&client, "agent", 8, 4).await;
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    for a in &agents {
        identity_at(&client, &a.id, Some(a.position.clone()))
            .await
            .expect("registered agent visible");
    }
    let talkers = &agents[2..];
    for m in 0..12 {
        let (from, to) = (
            &talkers[m % talkers.len()],
            &talkers[(m + 2) % talkers.len()],
        );
        client
            .agent(from.keys.clone())
            .send_message(&to.id, format!("message {m}").as_bytes())
            .await
            .expect("send");
    }
    let mut rotated = client.agent(agents[0].keys.clone());
    rotated
        .rotate_key(IdentityKeys::generate(), "scheduled rotation")
        .await
        .expect("rotate");
    let r = rotated
        .send_message(&agents[2].id, b"signed with the new key")
        .await
        .expect("send after rotation");
    assert_eq!(r.aggregate_seq, 3);
    let r = client
        .agent(agents[1].keys.clone())
        .revoke("retired")
        .await
        .expect("revoke");
    // The last append to AMAI_AGENTS: the consistency token of every snapshot.
    let last = r.position.expect("position");

    // The live state, once the trust scores (AMAI_TRUST) are all in too.
    for a in &agents {
        wait_until("trust initialised", DEADLINE, || async {
            let i = identity_at(&client, &a.id, None)
                .await
                .map_err(|e| e.to_string())?;
            i.trust_score
                .ok_or_else(|| "no trust score yet".to_string())
        })
        .await;
    }
    let operator = client.get_identity("operator").await.expect("operator");
    let service = client.get_identity("svc-identity").await.expect("service");
    let mut all_ids = ids.clone();
    all_ids.extend([operator.id.clone(), service.id.clone()]);
    let live = snapshot(&client, &last, &all_ids, talkers)
        .await
        .expect("live snapshot");
    assert_eq!(live.stats.identities, 10, "{:?}", live.stats);
    assert_eq!(live.stats.messages, 13, "{:?}", live.stats);
    assert_eq!(live.stats.revoked, 1, "{:?}", live.stats);
    assert!(live.identities[&agents[1].id].revoked);
    assert_eq!(
        live.keys[&agents[0].id].history.len(),
        2,
        "rotation recorded"
    );
    assert_eq!(live.inboxes[&agents[2].id].len(), 3);

    // Stop the worker, clear its projection, check it is really empty.
    worker.sigterm();
    let status = worker.wait_exit(DEADLINE).await;
    assert!(status.success(), "worker exited with {status}");
    let data = world.data_dir().display().to_string();
    let out = run_cli(&args(&[
        "--data-dir",
        &data,
        "projections",
        "rebuild",
        "--state",
        "identity-w1",
    ]))
    .await;
    assert!(out.status.success(), "rebuild failed: {}", out.stderr);
    assert!(out.stderr.contains("cleared"), "{}", out.stderr);
    {
        let path = world.data_dir().join("state/identity-w1/identity.sled");
        let db = sled::open(&path).expect("open the cleared projection");
        let tree = db.open_tree("identity").expect("identity tree");
        assert!(tree.is_empty(), "rebuild leaves the projection empty");
    }

    // Restart: rebuilt from sequence 1, it answers exactly as before. (The
    // worker logs "role up" before its query service has subscribed, so the
    // first queries may find no responder.)
    let _worker = world.worker("w1").await;
    let rebuilt = wait_until(
        "the rebuilt projection matches the live one",
        DEADLINE,
        || async {
            let s = snapshot(&client, &last, &all_ids, talkers).await?;
            if s.stats.events == live.stats.events {
                Ok(s)
            } else {
                Err(format!(
                    "events {} of {}",
                    s.stats.events, live.stats.events
                ))
            }
        },
    )
    .await;
    assert_eq!(rebuilt, live);
}
