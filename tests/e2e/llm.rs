//! `amai llm ...` end to end: the real binary's client commands against
//! `amai worker --role identity`, `amai worker --role llm` (its HTTP API on a
//! free port) and `amai gateway` processes.

use crate::util::*;

/// Starts `amai worker --role llm` with its HTTP API on a free port.
async fn llm_worker(world: &World) -> Proc {
    llm_worker_at(
        world,
        &format!("127.0.0.1:{}", amai_testkit::free_port()),
        &[],
    )
    .await
}

/// Starts `amai worker --role llm` on `addr` with extra environment variables.
async fn llm_worker_at(world: &World, addr: &str, env: &[(&str, &str)]) -> Proc {
    let mut a = world.globals();
    let addr = addr.to_string();
    a.extend(args(&[
        "--llm-addr",
        &addr,
        "worker",
        "--role",
        "llm",
        "--instance",
        "llm1",
    ]));
    let mut p = Proc::spawn_with_env("worker-llm", world.path(), &a, env);
    p.wait_for_log("llm role up", DEADLINE).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_sessions_through_the_cli() {
    let world = World::new();
    let _worker = world.worker("w1").await;
    let (_gateway, _client) = world.gateway().await;
    let _llm = llm_worker(&world).await;

    let (alice_key, alice_id) = gen_keys(&world, "alice").await;
    let (bob_key, _) = gen_keys(&world, "bob").await;
    for (key, name) in [(&alice_key, "alice"), (&bob_key, "bob")] {
        world
            .cli(&["agent", "register", "--keys", key, "--name", name])
            .await
            .ok();
    }

    // Create: the id and the key, once.
    let created = world
        .cli(&[
            "llm",
            "session",
            "create",
            "--keys",
            &alice_key,
            "--mode",
            "record",
            "--upstream",
            "openai",
            "--ignore-field",
            "temperature",
            "--order",
            "any",
            "--json",
        ])
        .await
        .json();
    let sid = created["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    let key = created["key"].as_str().expect("key").to_string();
    assert!(key.starts_with("amai-sk-"), "{key}");

    let shown = world
        .cli(&[
            "llm", "session", "show", "--keys", &alice_key, &sid, "--json",
        ])
        .await
        .json();
    assert_eq!(shown["owner"], alice_id.as_str());
    assert_eq!(shown["mode"], "record");
    assert_eq!(shown["upstreams"], serde_json::json!(["openai"]));
    assert_eq!(
        shown["options"]["ignore_fields"],
        serde_json::json!(["temperature"])
    );
    assert_eq!(
        shown["keys"][0]["key_sha256"],
        hex::encode(amai_bus::llm::key_sha256(&key)).as_str()
    );

    world
        .cli(&["llm", "session", "replay", "--keys", &alice_key, &sid])
        .await
        .ok();
    let listed = world
        .cli(&["llm", "session", "ls", "--keys", &alice_key, "--json"])
        .await
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["mode"], "replay");
    let recordings = world
        .cli(&["llm", "recordings", "--keys", &alice_key, &sid, "--json"])
        .await
        .json();
    assert_eq!(recordings, serde_json::json!([]));

    // Another key, then revoked by the key itself.
    let issued = world
        .cli(&["llm", "key", "issue", "--keys", &alice_key, &sid, "--json"])
        .await
        .json();
    let second = issued["key"].as_str().expect("second key").to_string();
    world
        .cli(&["llm", "key", "revoke", "--keys", &alice_key, &sid, &second])
        .await
        .ok();

    // A stranger is refused, and told why.
    let denied = world
        .cli(&["llm", "session", "show", "--keys", &bob_key, &sid])
        .await;
    assert!(!denied.status.success());
    assert!(denied.stderr.contains("owner"), "{}", denied.stderr);

    // Export, then import the cassette as a new session.
    let cassette = world.path().join("cassette.json");
    let cassette = cassette.display().to_string();
    world
        .cli(&[
            "llm", "export", "--keys", &alice_key, &sid, "--out", &cassette,
        ])
        .await
        .ok();
    let text = std::fs::read(&cassette).expect("cassette written");
    amai_llm::cassette::Cassette::from_json(&text).expect("a valid cassette");
    let imported = world
        .cli(&["llm", "import", "--keys", &alice_key, &cassette, "--json"])
        .await
        .json();
    let imported_id = imported["session_id"].as_str().expect("imported id");
    assert_ne!(imported_id, sid);

    let diff = world
        .cli(&[
            "llm",
            "diff",
            "--keys",
            &alice_key,
            &sid,
            imported_id,
            "--json",
        ])
        .await
        .json();
    assert_eq!(diff["diverged"], false);

    // Two recordings that differ in one request field: diff names the step
    // and the field.
    let mut ids = Vec::new();
    for (name, content) in [("a", "hello"), ("b", "hullo")] {
        let path = world.path().join(format!("{name}.json"));
        std::fs::write(&path, one_interaction(content)).expect("write cassette");
        let out = world
            .cli(&[
                "llm",
                "import",
                "--keys",
                &alice_key,
                &path.display().to_string(),
                "--json",
            ])
            .await
            .json();
        let id = out["session_id"].as_str().expect("id").to_string();
        wait_until("the import is recorded", DEADLINE, || {
            let (world, key, id) = (&world, &alice_key, id.clone());
            async move {
                let shown = world
                    .cli(&["llm", "session", "show", "--keys", key, &id, "--json"])
                    .await
                    .json();
                if shown["recordings"] == 1 {
                    Ok(())
                } else {
                    Err(format!("{shown}"))
                }
            }
        })
        .await;
        ids.push(id);
    }
    let diff = world
        .cli(&[
            "llm", "diff", "--keys", &alice_key, &ids[0], &ids[1], "--json",
        ])
        .await;
    assert!(!diff.status.success(), "a divergence exits 1");
    let diff: serde_json::Value = serde_json::from_str(diff.stdout.trim()).expect("json");
    assert_eq!(diff["diverged"], true);
    assert_eq!(diff["step"], 0);
    let fields = diff["request_diff"].to_string();
    assert!(fields.contains("messages[0].content"), "{fields}");

    world
        .cli(&["llm", "session", "rm", "--keys", &alice_key, &sid])
        .await
        .ok();
    let gone = world
        .cli(&["llm", "session", "record", "--keys", &alice_key, &sid])
        .await;
    assert!(!gone.status.success());
    assert!(gone.stderr.contains("deleted"), "{}", gone.stderr);
}

/// A cassette of one chat completion whose user message is `content`.
fn one_interaction(content: &str) -> String {
    let request =
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": content}]});
    serde_json::json!({
        "format": "amai.llm.cassette", "version": 1, "exported_at": "2026-12-03T00:00:00Z",
        "session": {"session_id": "s", "owner": "o", "mode": "record", "upstreams": ["openai"],
            "options": {"ignore_fields": [], "keep_default_fields": false, "order": "strict", "allow_repeats": false, "timing": "instant"}},
        "interactions": [{"seq": 1, "event_id": "e1", "event_hash": "0".repeat(64), "request_hash": "0".repeat(64),
            "occurrence": 0, "upstream": "openai", "method": "POST", "path": "/v1/chat/completions",
            "request": {"text": request.to_string()}, "status": 200, "headers": {}, "streamed": false,
            "response": {"text": "{}"}, "events": null, "outcome": "completed",
            "usage": {"input_tokens": 1, "output_tokens": 1}, "latency_us": 5, "upstream_model": "m",
            "detail": "", "event_b64": ""}],
        "misses": []
    })
    .to_string()
}

/// Real traffic through the binary's proxy: record against a fake upstream,
/// export, import into a new session, replay it byte for byte without the
/// upstream; and neither the upstream key nor the session key appears in the
/// worker's log, even at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_export_import_replay_through_the_binary() {
    const UPSTREAM_KEY: &str = "sk-e2e-upstream-SECRET-77";
    let upstream = amai_llm_fake_upstream::FakeUpstream::builder()
        .openai_key(UPSTREAM_KEY)
        .start()
        .await
        .expect("fake upstream");
    let world = World::new();
    let _worker = world.worker("w1").await;
    let (_gateway, _client) = world.gateway().await;
    let addr = format!("127.0.0.1:{}", amai_testkit::free_port());
    let openai_url = upstream.openai_base_url();
    let llm = llm_worker_at(
        &world,
        &addr,
        &[
            ("AMAI_LLM_OPENAI_URL", openai_url.as_str()),
            ("OPENAI_API_KEY", UPSTREAM_KEY),
            ("AMAI_LOG_LEVEL", "debug"),
        ],
    )
    .await;
    let (alice_key, _) = gen_keys(&world, "alice").await;
    world
        .cli(&["agent", "register", "--keys", &alice_key, "--name", "alice"])
        .await
        .ok();
    let created = world
        .cli(&[
            "llm", "session", "create", "--keys", &alice_key, "--mode", "record", "--json",
        ])
        .await
        .json();
    let sid = created["session_id"].as_str().expect("id").to_string();
    let key = created["key"].as_str().expect("key").to_string();
    let http = reqwest::Client::new();
    let call = |body: serde_json::Value, key: String| {
        let http = http.clone();
        let url = format!("http://{addr}/v1/chat/completions");
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("send");
            (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
        }
    };
    let plain = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]});
    let streamed = serde_json::json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "stream"}]});
    let a = call(plain.clone(), key.clone()).await;
    let b = call(streamed.clone(), key.clone()).await;
    assert_eq!((a.0, b.0), (200, 200), "{}", String::from_utf8_lossy(&a.1));
    let recordings = world
        .cli(&["llm", "recordings", "--keys", &alice_key, &sid, "--json"])
        .await
        .json();
    assert_eq!(recordings.as_array().map(Vec::len), Some(2), "{recordings}");

    let cassette = world.path().join("run.cassette.json").display().to_string();
    world
        .cli(&[
            "llm", "export", "--keys", &alice_key, &sid, "--out", &cassette,
        ])
        .await
        .ok();
    let text = std::fs::read_to_string(&cassette).expect("cassette");
    assert!(
        !text.contains(UPSTREAM_KEY) && !text.contains(&key),
        "a secret is in the cassette"
    );
    let imported = world
        .cli(&["llm", "import", "--keys", &alice_key, &cassette, "--json"])
        .await
        .json();
    let new_key = imported["key"].as_str().expect("key").to_string();
    let hits = upstream.hits();
    let a2 = call(plain, new_key.clone()).await;
    let b2 = call(streamed, new_key.clone()).await;
    assert_eq!(a2, a, "the imported session replays the recorded answer");
    assert_eq!(b2, b, "the imported session replays the recorded stream");
    assert_eq!(upstream.hits(), hits, "replay went upstream");

    let log = llm.log();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "the worker did not log at debug level"
    );
    for secret in [UPSTREAM_KEY, key.as_str(), new_key.as_str()] {
        assert!(
            !log.contains(secret),
            "{secret} appears in the llm worker's log"
        );
    }
}
