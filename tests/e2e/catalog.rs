//! The catalogue through the real binary: `amai catalog scan` indexes the
//! manifests of a directory tree (reporting the invalid ones with their JSON
//! paths, never following a symbolic link out of the tree), `sync` imports a
//! registry index without its registry-derived claims, `import-card` maps an
//! A2A Agent Card and shows whether its signature holds, and `search` /
//! `show` find what was indexed.

use std::path::Path;

use serde_json::{json, Value};

use crate::util::*;

fn write(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("json")).expect("write");
}

fn manifest(id: &str, name: &str) -> Value {
    json!({
        "manifest_version": 1,
        "id": id,
        "name": name,
        "version": "1.0.0",
        "description": format!("{name}, for the catalogue test"),
        "publisher": {"name": "Example Labs", "url": "https://example.com"},
        "source": {"image": "busybox"},
        "entrypoint": ["sh", "-c", "echo hi"],
        "capabilities": ["summarize"],
        "keywords": ["papers"]
    })
}

/// Starts `amai worker --role lifecycle` and waits until its role is up.
async fn lifecycle_worker(world: &World) -> Proc {
    let mut a = world.globals();
    a.extend(args(&["worker", "--role", "lifecycle", "--instance", "l1"]));
    let mut p = Proc::spawn("lifecycle-l1", world.path(), &a);
    p.wait_for_log("lifecycle role up", DEADLINE).await;
    p
}

#[tokio::test]
async fn scan_sync_and_card_import_index_manifests_without_running_anything() {
    let world = World::new();
    let _identity = world.worker("w1").await;
    let _lifecycle = lifecycle_worker(&world).await;
    let (_gw, _client) = world.gateway().await;
    let (alice_key, alice_id) = gen_keys(&world, "alice").await;
    world
        .cli(&["agent", "register", "--keys", &alice_key, "--name", "alice"])
        .await
        .ok();

    // A tree: one agent built from a Dockerfile (never built by a scan), one
    // broken manifest, and a symbolic link out of the tree.
    let tree = world.path().join("agents");
    let mut built = manifest("com.example.summarizer", "Summariser");
    built["source"] = json!({"build": {"context": "src"}});
    write(&tree.join("summarizer/amai-manifest.json"), &built);
    std::fs::create_dir_all(tree.join("summarizer/src")).expect("mkdir");
    std::fs::write(
        tree.join("summarizer/src/Dockerfile"),
        "FROM busybox\nRUN touch /scan-ran-me\n",
    )
    .expect("dockerfile");
    let mut broken = manifest("com.example.broken", "Broken");
    broken["version"] = json!("one");
    broken["permissions"] = json!(["network:egress:*"]);
    write(&tree.join("broken/amai-manifest.json"), &broken);
    let outside = world.path().join("outside");
    write(
        &outside.join("amai-manifest.json"),
        &manifest("com.example.outside", "Outside"),
    );
    std::os::unix::fs::symlink(&outside, tree.join("link")).expect("symlink");

    let tree_arg = tree.display().to_string();
    let scan = world
        .cli(&["catalog", "scan", "--keys", &alice_key, &tree_arg, "--json"])
        .await;
    assert_eq!(
        scan.status.code(),
        Some(1),
        "an invalid manifest fails the scan"
    );
    let scan: Value = serde_json::from_str(scan.stdout.trim()).expect("json");
    let published = &scan["manifests"][0]["published"];
    assert_eq!(published["manifest_id"], "com.example.summarizer", "{scan}");
    assert_eq!(published["source"], "scan");
    assert_eq!(published["publisher_verified"], false);
    let context = std::fs::canonicalize(tree.join("summarizer/src")).expect("canonical");
    assert_eq!(published["build_context"], context.display().to_string());
    assert_eq!(
        scan["manifests"].as_array().map(Vec::len),
        Some(1),
        "{scan}"
    );
    let errors = scan["invalid"][0]["errors"].as_array().expect("errors");
    let paths: Vec<&str> = errors.iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(
        paths.contains(&"version") && paths.contains(&"permissions[0]"),
        "{paths:?}"
    );
    assert!(
        scan["skipped"].to_string().contains("link"),
        "the symbolic link is reported, not followed: {scan}"
    );

    // A registry index: wrapper fields are the registry's claims, not imported.
    let index = world.path().join("index.json");
    write(
        &index,
        &json!({"manifests": [
            {"manifest": manifest("org.registry.translator", "Translator"), "verified": true, "downloads": 1000000},
            {"manifest": {"manifest_version": 1, "id": "org.registry.bad"}},
        ]}),
    );
    let sync = world
        .cli(&[
            "catalog",
            "sync",
            "--keys",
            &alice_key,
            &index.display().to_string(),
            "--json",
        ])
        .await;
    assert_eq!(sync.status.code(), Some(1), "one bad entry is reported");
    let sync: Value = serde_json::from_str(sync.stdout.trim()).expect("json");
    assert_eq!(
        sync["manifests"][0]["published"]["manifest_id"],
        "org.registry.translator"
    );
    assert_eq!(sync["manifests"][0]["published"]["source"], "sync");
    assert!(sync["invalid"][0]["origin"]
        .as_str()
        .is_some_and(|o| o.ends_with("#manifests[1]")));

    // An A2A Agent Card signed by its agent's key; then the same card with
    // its description changed after signing.
    let agent_key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let m = amai_manifest::Manifest::from_value(&manifest("dev.cards.helper", "Card helper"))
        .expect("manifest")
        .manifest;
    let card = amai_manifest::agent_card(
        &m,
        &agent_key.verifying_key(),
        Some(61.5),
        "https://cards.example/a2a",
    )
    .expect("card");
    let signed = serde_json::to_value(amai_manifest::sign_card(&card, &agent_key)).expect("json");
    let card_file = world.path().join("card.json");
    write(&card_file, &signed);
    let imported = world
        .cli(&[
            "catalog",
            "import-card",
            "--keys",
            &alice_key,
            &card_file.display().to_string(),
            "--image",
            "busybox",
            "--json",
            "--",
            "sh",
            "-c",
            "echo card",
        ])
        .await
        .json();
    assert!(
        imported["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("verified")),
        "{imported}"
    );
    assert_eq!(imported["published"]["source"], "card");
    // An imported card's id comes from its URL's host and its name, never
    // from an id the card claims (docs/manifest.md).
    assert_eq!(
        imported["published"]["manifest_id"],
        "example.cards.card-helper"
    );
    assert!(
        imported["published"]["permissions"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "a card never grants permissions"
    );
    let mut tampered = signed.clone();
    tampered["description"] = json!("Now wants your keys.");
    let tampered_file = world.path().join("tampered.json");
    write(&tampered_file, &tampered);
    let flagged = world
        .cli(&[
            "catalog",
            "import-card",
            "--keys",
            &alice_key,
            &tampered_file.display().to_string(),
            "--image",
            "busybox",
            "--dry-run",
            "--json",
            "--",
            "sh",
        ])
        .await
        .json();
    assert!(
        flagged["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("bad_signature")),
        "{flagged}"
    );

    // Everything indexed is found; the broken, the outside and the bad
    // registry entry are not.
    let all = world.cli(&["catalog", "search", "--json"]).await.json();
    let ids: Vec<&str> = all["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["manifest_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "com.example.summarizer",
            "example.cards.card-helper",
            "org.registry.translator"
        ]
    );
    let found = world
        .cli(&["catalog", "search", "translat", "--json"])
        .await
        .json();
    assert_eq!(
        found["entries"][0]["manifest_id"],
        "org.registry.translator"
    );
    let shown = world
        .cli(&["catalog", "show", "org.registry.translator", "--json"])
        .await
        .json();
    assert_eq!(shown["owner_id"], alice_id.as_str());
    assert!(shown["manifest"].get("verified").is_none(), "{shown}");

    // An invalid manifest is refused by `publish` with its JSON paths.
    let bad_file = world.path().join("bad.json");
    write(&bad_file, &broken);
    let refused = world
        .cli(&[
            "catalog",
            "publish",
            "--keys",
            &alice_key,
            &bad_file.display().to_string(),
        ])
        .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused.stdout.contains("version") && refused.stdout.contains("permissions[0]"),
        "{}",
        refused.stdout
    );
}
