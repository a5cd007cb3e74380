//! The official Python SDKs (`openai`, `anthropic`, pinned by
//! `scripts/ensure-deps.sh python-sdks`) against the fake upstream, through
//! `tests/sdk/llm_sdks.py`.
//!
//! The interpreter is `$AMAI_PYTHON` (exported by `make test`), else the venv
//! `scripts/ensure-deps.sh python-sdks` creates at `~/.cache/amai/pyenv`. A missing
//! interpreter fails the test (never a silent skip).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use amai_llm_fake_upstream::FakeUpstream;
use serde_json::Value;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("AMAI_PYTHON").filter(|p| !p.is_empty()) {
        let python = PathBuf::from(python);
        assert!(
            python.exists(),
            "AMAI_PYTHON={} does not exist: run `scripts/ensure-deps.sh python-sdks` \
             (or `make test`) and set AMAI_PYTHON=$(scripts/ensure-deps.sh --print-python)",
            python.display()
        );
        return python;
    }
    let default = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/amai/pyenv/bin/python"))
        .filter(|p| p.exists());
    default.unwrap_or_else(|| {
        panic!(
            "no Python with the official openai/anthropic SDKs: AMAI_PYTHON is not set and \
             ~/.cache/amai/pyenv/bin/python does not exist. Run `scripts/ensure-deps.sh python-sdks` \
             (or `make test`, which does it and exports AMAI_PYTHON)"
        )
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/llm_sdks.py")
}

/// Runs the script against `fake` with `extra` arguments; returns its JSON output.
async fn run_script(fake: &FakeUpstream, extra: &[&str]) -> Value {
    let python = python();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(script())
        .args(["--openai-base-url", &fake.openai_base_url()])
        .args(["--anthropic-base-url", &fake.anthropic_base_url()])
        .args(["--key", "unused"])
        .args(["--openai-key", fake.openai_key()])
        .args(["--anthropic-key", fake.anthropic_key()])
        .args(extra)
        // The SDKs must not pick up a developer's real credentials or endpoints.
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env_remove("ANTHROPIC_BASE_URL")
        .env("NO_PROXY", "127.0.0.1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("llm_sdks.py did not finish in {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "llm_sdks.py {extra:?} failed ({}):\n--- stderr\n{stderr}\n--- stdout\n{stdout}",
        output.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("llm_sdks.py printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

fn by_name(output: &Value) -> BTreeMap<String, Value> {
    output["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_against_the_fake() {
    let fake = FakeUpstream::builder()
        .openai_key("sk-test-openai-key")
        .anthropic_key("sk-test-anthropic-key")
        .start()
        .await
        .unwrap();
    let first = run_script(&fake, &["--phase", "record"]).await;
    assert_eq!(first["phase"], "record");
    let results = by_name(&first);
    let expected = [
        "openai.chat",
        "openai.chat.stream",
        "openai.chat.tools",
        "openai.chat.tools.stream",
        "openai.responses",
        "openai.responses.stream",
        "openai.responses.tools",
        "openai.embeddings",
        "openai.models",
        "anthropic.messages",
        "anthropic.messages.stream",
        "anthropic.messages.create_stream",
        "anthropic.messages.tools",
        "anthropic.messages.tools.stream",
        "anthropic.count_tokens",
    ];
    assert_eq!(
        results.keys().map(String::as_str).collect::<HashSet<_>>(),
        expected.into_iter().collect::<HashSet<_>>()
    );
    for (name, r) in &results {
        assert!(
            !r["text"].as_str().unwrap().is_empty(),
            "{name}: empty text"
        );
        if name.ends_with("stream") {
            assert!(r["events"].as_u64().unwrap() >= 3, "{name}: {r}");
        }
    }
    for name in [
        "openai.chat",
        "openai.chat.stream",
        "openai.responses",
        "openai.responses.stream",
        "anthropic.messages",
        "anthropic.messages.stream",
        "anthropic.messages.create_stream",
    ] {
        let text = results[name]["text"].as_str().unwrap();
        assert!(
            text.starts_with("fake answer #") && text.contains("Say hello"),
            "{name}: {text}"
        );
    }
    for name in expected.iter().filter(|n| n.contains("tools")) {
        assert_eq!(
            results[*name]["text"], r#"{"city": "Paris"}"#,
            "{name}: tool arguments"
        );
    }
    for (name, prefix) in [
        ("openai.chat", "chatcmpl-"),
        ("openai.chat.tools.stream", "chatcmpl-"),
        ("openai.responses.stream", "resp_"),
        ("anthropic.messages.tools.stream", "msg_"),
    ] {
        assert!(
            results[name]["id"].as_str().unwrap().starts_with(prefix),
            "{name}: {}",
            results[name]["id"]
        );
    }
    let ids: Vec<&str> = results.values().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "ids repeat"
    );

    // The fake saw exactly the SDKs' requests, with the keys the SDKs were given.
    assert_eq!(first["http_requests"].as_u64(), Some(fake.hits()));
    for (path, n) in [
        ("/v1/chat/completions", 4),
        ("/v1/responses", 3),
        ("/v1/embeddings", 1),
        ("/v1/models", 1),
        ("/v1/messages", 5),
        ("/v1/messages/count_tokens", 1),
    ] {
        assert_eq!(fake.hits_for(path), n, "{path}");
    }
    let last = fake.last_request().unwrap();
    assert_eq!(last.path, "/v1/messages/count_tokens");
    let auth = last
        .headers
        .get("x-api-key")
        .or_else(|| last.headers.get("authorization"))
        .unwrap()
        .to_str()
        .unwrap();
    assert!(auth.ends_with("sk-test-anthropic-key"), "{auth}");
    assert!(last.headers.contains_key("anthropic-version"));

    // A second run gets fresh answers: same texts apart from the counter, new ids.
    let second = by_name(&run_script(&fake, &["--phase", "replay"]).await);
    for name in [
        "openai.chat",
        "openai.responses.stream",
        "anthropic.messages",
    ] {
        assert_ne!(results[name]["id"], second[name]["id"], "{name}");
        assert_ne!(results[name]["text"], second[name]["text"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_miss_makes_one_request_without_retries() {
    let fake = FakeUpstream::start().await.unwrap();
    let output = run_script(&fake, &["--expect-miss"]).await;
    let miss = &output["miss"];
    assert_eq!(miss["status"], 404, "{output}");
    assert_eq!(miss["error"], "NotFoundError");
    assert_eq!(miss["requests"], 1);
    assert_eq!(miss["body"]["code"], "model_not_found");
    assert_eq!(fake.hits_for("/v1/chat/completions"), 1);
}
