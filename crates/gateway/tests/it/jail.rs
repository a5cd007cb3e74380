//! `JailService` against the real jail role on the local Docker Engine: a jail
//! runs under its requester's identity and its run is recorded; every bad
//! request is refused with a precise code and kind before anything is
//! appended; strangers learn nothing; runs, deletion and reproduction keep
//! their state rules. Asserts codes and `ErrorInfo` kinds, never message text.
//!
//! Each test is its own deployment (its own trust root), so its jail worker's
//! orphan reconciliation at start removes only its own leftovers: the tests
//! run in parallel on one engine, as deployments sharing an engine do.

use std::time::Duration;

use amai_bus::envelope::EventDraft;
use amai_bus::proto::{self, payload::Kind, JailState};
use amai_client::{Agent, ClientError, ErrorKind};
use amai_jail_spec::JailSpec;
use amai_workers::roles::jail::JailConfig;
use serde_json::json;
use tonic::Code;

use crate::common::{agg, Env};

const WAIT: Duration = Duration::from_secs(120);

fn spec(command: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({"image": "busybox", "command": command, "limits": {"timeout": 60}}))
        .expect("json")
}

async fn env() -> Env {
    Env::with_jail(JailConfig::default().parallel(2)).await
}

/// A `jail.requested` for `spec_json`, signed by `agent` after its head,
/// changed by `tweak` (given the event id) before signing.
async fn request(
    env: &Env,
    agent: &Agent,
    spec_json: &[u8],
    tweak: impl Fn(&str, &mut proto::JailRequested),
) -> proto::SignedEvent {
    let head = env.client.chain_head(&agg(agent)).await.expect("head");
    let id = uuid::Uuid::now_v7();
    let digest = JailSpec::from_json(spec_json)
        .map(|s| s.canonical_digest().to_vec())
        .unwrap_or_default();
    let mut req = proto::JailRequested {
        jail_id: amai_bus::jail::jail_id(agent.id(), &id.to_string()),
        spec_json: spec_json.to_vec(),
        spec_sha256: digest,
        run: true,
        ..Default::default()
    };
    tweak(&id.to_string(), &mut req);
    EventDraft::new(agg(agent), Kind::JailRequested(req))
        .id(id)
        .after(head.aggregate_seq, head.hash)
        .sign(agent.keys(), agent.id())
}

async fn create(env: &Env, event: proto::SignedEvent) -> Result<proto::Jail, ClientError> {
    env.client
        .jail_service()
        .create_jail(proto::JailCommand { event: Some(event) })
        .await
        .map(tonic::Response::into_inner)
        .map_err(ClientError::from)
}

fn code_and_kind(e: &ClientError) -> (Code, ErrorKind) {
    (
        e.status().map(|s| s.code()).unwrap_or(Code::Unknown),
        e.kind(),
    )
}

fn containers_of(jail_id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=amai.jail={jail_id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until the engine holds no container of `jail_id` (the keeper and the
/// volumes go in the background once the run is recorded); panics after `WAIT`.
async fn gone(jail_id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !containers_of(jail_id).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "containers of {jail_id} stay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `spec` as a new jail of `agent` until it ended, then reproduces it
/// and waits for the verdict.
async fn run_then_reproduce(
    agent: &Agent,
    spec: &[u8],
) -> (proto::Jail, proto::JailReproducibilityChecked) {
    let created = agent.create_jail(spec, true).await.expect("create");
    let original = agent
        .client()
        .wait_jail(&created.jail_id, WAIT)
        .await
        .expect("wait");
    let again = agent
        .reproduce_jail(&original.jail_id, spec, Some(WAIT))
        .await
        .expect("reproduce");
    let verdict = again.reproducibility.expect("checked");
    (original, verdict)
}

/// Waits until the jail is in `state`; panics after `WAIT`.
async fn wait_state(client: &amai_client::AmaiClient, jail_id: &str, state: JailState) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let jail = client.jail(jail_id).await.expect("jail");
        if jail.state == state as i32 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jail {jail_id} never got {state:?}: {jail:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Last sequence of every event stream (the nonce bucket of signed reads aside).
async fn event_positions(env: &Env) -> std::collections::BTreeMap<String, u64> {
    let mut positions = env.stream_positions().await;
    positions.remove("KV_AMAI_NONCES");
    positions
}

#[tokio::test]
async fn a_jail_runs_under_its_requester_and_its_run_is_recorded() {
    let env = env().await;
    let alice = env.agent("alice").await;
    let created = alice
        .create_jail(
            &spec(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]),
            true,
        )
        .await
        .expect("create");
    assert_eq!(created.owner, alice.id());
    let jail = alice
        .client()
        .wait_jail(&created.jail_id, WAIT)
        .await
        .expect("wait");
    assert_eq!(jail.state, JailState::Finished as i32, "{jail:?}");
    let finished = jail.finished.clone().expect("finished");
    assert_eq!(finished.exit_code, 3);
    assert!(!finished.timed_out && !finished.oom_killed);
    assert!(jail.image_id.starts_with("sha256:"), "{}", jail.image_id);
    let logs = alice
        .client()
        .jail_logs(&jail.jail_id, false)
        .await
        .expect("logs");
    assert_eq!(logs.stdout, b"hello\n");
    assert_eq!(logs.stderr, b"oops\n");
    use sha2::Digest;
    assert_eq!(
        finished.stdout_sha256,
        sha2::Sha256::digest(b"hello\n").to_vec()
    );
    let usage = alice
        .client()
        .jail_usage(&jail.jail_id)
        .await
        .expect("usage");
    assert_eq!(usage.limits.expect("limits").timeout_ms, 60_000);
    let mine = alice.client().jails("", "", 10, false).await.expect("ls");
    assert_eq!(
        mine.jails
            .iter()
            .map(|j| j.jail_id.as_str())
            .collect::<Vec<_>>(),
        [jail.jail_id.as_str()]
    );
    gone(&jail.jail_id).await;

    // A stranger learns nothing and commands nothing.
    let mallory = env.agent("mallory").await;
    let reads: [Result<(), ClientError>; 4] = [
        mallory.client().jail(&jail.jail_id).await.map(|_| ()),
        mallory
            .client()
            .jail_logs(&jail.jail_id, false)
            .await
            .map(|_| ()),
        mallory.client().jail_diff(&jail.jail_id).await.map(|_| ()),
        mallory
            .client()
            .delete_jail(&jail.jail_id, "mine now")
            .await
            .map(|_| ()),
    ];
    for r in reads {
        let e = r.expect_err("a stranger is refused");
        assert_eq!(code_and_kind(&e), (Code::NotFound, ErrorKind::JailNotFound));
    }
    assert!(mallory
        .client()
        .jails("", "", 10, false)
        .await
        .expect("ls")
        .jails
        .is_empty());
    let e = mallory
        .client()
        .jails(alice.id(), "", 10, false)
        .await
        .expect_err("another owner's list");
    assert_eq!(e.kind(), ErrorKind::ReadNotPermitted);
    // The operator reads it.
    assert_eq!(
        env.client
            .jail(&jail.jail_id)
            .await
            .expect("operator")
            .owner,
        alice.id()
    );
    env.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_precisely_and_append_nothing() {
    let env = env().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let good = spec(&["true"]);
    let before = event_positions(&env).await;

    let cases: Vec<(&str, proto::SignedEvent, (Code, ErrorKind))> = vec![
        (
            "jail id of someone else's choosing",
            request(&env, &alice, &good, |_, r| r.jail_id = "0".repeat(32)).await,
            (Code::InvalidArgument, ErrorKind::JailIdMismatch),
        ),
        (
            "invalid spec",
            request(
                &env,
                &alice,
                br#"{"image": "", "command": [], "limits": {"pids": 0}}"#,
                |_, _| {},
            )
            .await,
            (Code::InvalidArgument, ErrorKind::InvalidSpec),
        ),
        (
            "malformed JSON",
            request(&env, &alice, b"{not json", |_, _| {}).await,
            (Code::InvalidArgument, ErrorKind::InvalidSpec),
        ),
        (
            "digest of another spec",
            request(&env, &alice, &good, |_, r| r.spec_sha256 = vec![7; 32]).await,
            (Code::InvalidArgument, ErrorKind::SpecDigestMismatch),
        ),
        (
            "reproduction sent to CreateJail",
            request(&env, &alice, &good, |_, r| r.reproduces = "a".repeat(32)).await,
            (Code::InvalidArgument, ErrorKind::WrongCommand),
        ),
        (
            "llm session without an llm spec",
            request(&env, &alice, &good, |_, r| {
                r.llm_session_id = "b".repeat(32)
            })
            .await,
            (Code::InvalidArgument, ErrorKind::InvalidArgument),
        ),
        (
            "no spec at all",
            request(&env, &alice, &good, |_, r| r.spec_json.clear()).await,
            (Code::InvalidArgument, ErrorKind::InvalidSpec),
        ),
    ];
    for (what, event, want) in cases {
        let e = create(&env, event).await.expect_err(what);
        assert_eq!(code_and_kind(&e), want, "{what}");
    }
    // The JSON path of every spec error comes back.
    let e = create(
        &env,
        request(
            &env,
            &alice,
            br#"{"image": "", "command": [], "limits": {"pids": 0}}"#,
            |_, _| {},
        )
        .await,
    )
    .await
    .expect_err("invalid");
    let paths = e.error_metadata().get("paths").cloned().unwrap_or_default();
    for path in ["image", "command", "limits.pids"] {
        assert!(paths.split(',').any(|p| p == path), "{path} in {paths:?}");
    }
    // Bob signs a request for Alice's chain: the append checks refuse it
    // before any jail rule is looked at.
    let head = env.client.chain_head(&agg(&alice)).await.expect("head");
    let id = uuid::Uuid::now_v7();
    let forged = EventDraft::new(
        agg(&alice),
        Kind::JailRequested(proto::JailRequested {
            jail_id: amai_bus::jail::jail_id(alice.id(), &id.to_string()),
            spec_json: good.clone(),
            spec_sha256: JailSpec::from_json(&good)
                .expect("spec")
                .canonical_digest()
                .to_vec(),
            run: true,
            ..Default::default()
        }),
    )
    .id(id)
    .after(head.aggregate_seq, head.hash)
    .sign(bob.keys(), alice.id());
    let e = create(&env, forged).await.expect_err("forged");
    assert_eq!(
        e.status().map(|s| s.code()),
        Some(Code::Unauthenticated),
        "{e}"
    );
    assert_eq!(event_positions(&env).await, before, "nothing was appended");
    env.stop().await;
}

#[tokio::test]
async fn run_delete_and_reproduce_keep_their_state_rules() {
    let env = env().await;
    let alice = env.agent("alice").await;
    let mallory = env.agent("mallory").await;

    // Created without running; a stranger cannot run it; the owner can, once.
    let idle = alice
        .create_jail(&spec(&["echo", "ran"]), false)
        .await
        .expect("create");
    // QUEUED until the request reactor created it (a loaded machine takes
    // its time; a jail created without a run never becomes "done").
    let deadline = tokio::time::Instant::now() + WAIT;
    let idle = loop {
        let jail = env.client.jail(&idle.jail_id).await.expect("get");
        if jail.state != JailState::Queued as i32 || tokio::time::Instant::now() > deadline {
            break jail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(idle.state, JailState::Created as i32, "{idle:?}");
    let e = mallory
        .client()
        .run_jail(&idle.jail_id)
        .await
        .expect_err("stranger");
    assert_eq!(code_and_kind(&e), (Code::NotFound, ErrorKind::JailNotFound));
    alice.client().run_jail(&idle.jail_id).await.expect("run");
    let done = alice
        .client()
        .wait_jail(&idle.jail_id, WAIT)
        .await
        .expect("wait");
    assert_eq!(done.finished.expect("finished").exit_code, 0);
    let e = alice
        .client()
        .run_jail(&idle.jail_id)
        .await
        .expect_err("twice");
    assert_eq!(
        code_and_kind(&e),
        (Code::FailedPrecondition, ErrorKind::JailState)
    );

    // Following the logs of a running jail answers once it ended, with all of it.
    let late = alice
        .create_jail(&spec(&["sh", "-c", "sleep 1; echo late"]), true)
        .await
        .expect("create");
    let logs = alice
        .client()
        .jail_logs(&late.jail_id, true)
        .await
        .expect("follow");
    assert_eq!(logs.stdout, b"late\n");

    // Deleting a running jail stops it and removes its container.
    let sleeper = alice
        .create_jail(&spec(&["sleep", "300"]), true)
        .await
        .expect("create");
    wait_state(alice.client(), &sleeper.jail_id, JailState::Running).await;
    let deleted = alice
        .client()
        .delete_jail(&sleeper.jail_id, "enough")
        .await
        .expect("delete");
    assert_eq!(deleted.state, JailState::Deleted as i32);
    assert_eq!(deleted.deleted_reason, "enough");
    let failed = deleted.failed.expect("the run is recorded as failed");
    assert_eq!(failed.kind, proto::JailFailureKind::Cancelled as i32);
    gone(&sleeper.jail_id).await;

    // A deterministic run reproduces identically; a random one does not.
    let steady = spec(&[
        "sh",
        "-c",
        "echo same; mkdir -p /workspace/out; echo x > /workspace/out/f",
    ]);
    let (original, verdict) = run_then_reproduce(&alice, &steady).await;
    assert_eq!(
        verdict.verdict,
        proto::JailVerdict::Identical as i32,
        "{verdict:?}"
    );
    assert_eq!(verdict.original_jail_id, original.jail_id);

    let random = spec(&["cat", "/proc/sys/kernel/random/uuid"]);
    let (original, verdict) = run_then_reproduce(&alice, &random).await;
    assert_eq!(
        verdict.verdict,
        proto::JailVerdict::Different as i32,
        "{verdict:?}"
    );
    assert_eq!(verdict.differences[0].field, "stdout");

    // A reproduction must name the owner's jail and its spec.
    let e = mallory
        .reproduce_jail(&original.jail_id, &random, None)
        .await
        .expect_err("another owner's jail");
    assert_eq!(code_and_kind(&e), (Code::NotFound, ErrorKind::JailNotFound));
    let e = alice
        .reproduce_jail(&original.jail_id, &steady, None)
        .await
        .expect_err("another spec");
    assert_eq!(
        code_and_kind(&e),
        (Code::InvalidArgument, ErrorKind::InvalidSpec)
    );
    env.stop().await;
}

#[tokio::test]
async fn files_go_in_and_the_diff_network_log_and_policy_come_out() {
    let env = env().await;
    let alice = env.agent("alice").await;
    let script =
        "cat /workspace/in.txt; echo new > /workspace/out.txt; chmod u+s /workspace/out.txt; \
                  rm /workspace/in.txt; ln -s /etc/passwd /workspace/link; echo t > /tmp/t; \
                  GW=$(ip route | awk '/default/ {print $3}'); \
                  wget -q -O- http://$GW:4222/ >/dev/null 2>&1 && echo reached || echo refused";
    let spec = serde_json::to_vec(&json!({
        "image": "busybox",
        "command": ["sh", "-c", script],
        "files": [{"path": "/workspace/in.txt", "content": "hi\n", "mode": 420}],
        "network": "llm-only",
        "diff_policy": {"writable": ["/workspace/**"]},
        "limits": {"timeout": 60},
    }))
    .expect("json");
    let created = alice.create_jail(&spec, true).await.expect("create");
    let jail = alice
        .client()
        .wait_jail(&created.jail_id, WAIT)
        .await
        .expect("wait");
    let finished = jail.finished.clone().unwrap_or_else(|| panic!("{jail:?}"));
    let logs = alice
        .client()
        .jail_logs(&jail.jail_id, false)
        .await
        .expect("logs");
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "hi\nrefused\n");

    // The diff: what changed, with modes, digests and link targets.
    let diff = alice.client().jail_diff(&jail.jail_id).await.expect("diff");
    assert_eq!(diff.diff_sha256, finished.diff_sha256);
    let entry = |path: &str| {
        diff.entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} in {:?}", diff.entries))
            .clone()
    };
    use sha2::Digest;
    let out = entry("/workspace/out.txt");
    assert_eq!(out.change, proto::JailChange::Added as i32);
    assert_eq!(out.sha256, sha2::Sha256::digest(b"new\n").to_vec());
    assert_ne!(out.mode & 0o4000, 0, "setuid bit recorded: {:o}", out.mode);
    assert_eq!(
        entry("/workspace/in.txt").change,
        proto::JailChange::Deleted as i32
    );
    let link = entry("/workspace/link");
    assert_eq!(link.link_target, "/etc/passwd");
    assert_eq!(entry("/tmp/t").change, proto::JailChange::Added as i32);
    assert_eq!((finished.paths_added, finished.paths_deleted), (3, 1));
    // The archive is the normalised tar the digest names.
    let archive = diff.archive.expect("archive");
    assert_eq!(archive.sha256, finished.diff_sha256);

    // The policy: a write outside /workspace and a setuid file.
    let mut violations: Vec<_> = diff
        .violations
        .iter()
        .map(|v| (v.rule.as_str(), v.path.as_str()))
        .collect();
    violations.sort_unstable();
    assert_eq!(
        violations,
        [
            ("outside_writable", "/tmp/t"),
            ("setuid", "/workspace/out.txt")
        ]
    );

    // The network log: the host port was refused, and logged as such.
    let log = alice
        .client()
        .jail_network_log(&jail.jail_id)
        .await
        .expect("network");
    let denied: Vec<_> = log
        .entries
        .iter()
        .filter(|e| e.verdict == proto::JailNetVerdict::Denied as i32)
        .collect();
    assert!(
        denied
            .iter()
            .any(|e| e.protocol == "tcp" && e.destination.ends_with(":4222")),
        "{:?}",
        log.entries
    );
    assert_eq!(finished.connections_allowed, 0);
    assert!(finished.connections_denied >= 1);
    let usage = alice
        .client()
        .jail_usage(&jail.jail_id)
        .await
        .expect("usage");
    assert_eq!(usage.usage.expect("usage").bytes_written, 4 + 2);
    gone(&jail.jail_id).await;
    env.stop().await;
}

const UPSTREAM_KEY: &str = "sk-upstream-jail-test";

/// A busybox agent posting one chat completion (whose prompt is `prompt`, a
/// shell word) to the proxy the jail was given.
fn llm_agent_spec(prompt: &str) -> Vec<u8> {
    let script = format!(
        "wget -q -O- --header \"Authorization: Bearer $OPENAI_API_KEY\" \
         --header 'Content-Type: application/json' \
         --post-data \"{{\\\"model\\\":\\\"gpt-test\\\",\\\"messages\\\":[{{\\\"role\\\":\\\"user\\\",\\\"content\\\":\\\"{prompt}\\\"}}]}}\" \
         \"$OPENAI_BASE_URL/chat/completions\""
    );
    serde_json::to_vec(&json!({
        "image": "busybox",
        "command": ["sh", "-c", script],
        "network": "llm-only",
        "llm": {"create": {"mode": "record", "upstream": "openai"}},
        "limits": {"timeout": 60},
    }))
    .expect("json")
}

async fn llm_env() -> (Env, amai_llm_fake_upstream::FakeUpstream) {
    let upstream = amai_llm_fake_upstream::FakeUpstream::builder()
        .openai_key(UPSTREAM_KEY)
        .start()
        .await
        .expect("fake upstream");
    let llm = amai_workers::roles::llm::LlmConfig::default()
        .openai_url(upstream.openai_base_url())
        .openai_api_key(UPSTREAM_KEY);
    let env = Env::with_jail_llm(JailConfig::default().parallel(2), llm).await;
    (env, upstream)
}

#[tokio::test]
async fn a_jail_records_its_llm_calls_and_a_reproduction_replays_them_without_the_upstream() {
    let (env, upstream) = llm_env().await;
    let alice = env.agent("alice").await;

    // Recorded: the jail's only reachable endpoint is the proxy, with its key.
    let steady = llm_agent_spec("hello");
    let created = alice.create_jail(&steady, true).await.expect("create");
    let original = alice
        .client()
        .wait_jail(&created.jail_id, WAIT)
        .await
        .expect("wait");
    let finished = original
        .finished
        .clone()
        .unwrap_or_else(|| panic!("{original:?}"));
    let logs = alice
        .client()
        .jail_logs(&original.jail_id, false)
        .await
        .expect("logs");
    assert_eq!(
        finished.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(String::from_utf8_lossy(&logs.stdout).contains("choices"));
    assert_eq!(upstream.hits(), 1);
    let usage = finished.usage.expect("usage");
    assert_eq!(usage.llm_calls, 1);
    assert!(
        usage.llm_input_tokens > 0 && usage.llm_output_tokens > 0,
        "{usage:?}"
    );
    let session = alice
        .llm_session(&original.llm_session_id)
        .await
        .expect("session");
    assert_eq!(session.owner, alice.id());
    assert_eq!(session.recordings, 1);
    let log = alice
        .client()
        .jail_network_log(&original.jail_id)
        .await
        .expect("network");
    assert!(
        log.entries
            .iter()
            .any(|e| e.verdict == proto::JailNetVerdict::Allowed as i32
                && e.destination.ends_with(":8088")),
        "{:?}",
        log.entries
    );

    // An agent whose prompt changes from run to run.
    let drifting = llm_agent_spec("$(cat /proc/sys/kernel/random/uuid)");
    let created = alice.create_jail(&drifting, true).await.expect("create");
    let drifted = alice
        .client()
        .wait_jail(&created.jail_id, WAIT)
        .await
        .expect("wait");
    assert_eq!(drifted.finished.expect("finished").exit_code, 0);

    // Reproduced with the upstream gone: replayed from the recording.
    upstream.shutdown().await;
    let again = alice
        .reproduce_jail(&original.jail_id, &steady, Some(WAIT))
        .await
        .expect("reproduce");
    let verdict = again.reproducibility.clone().expect("checked");
    assert_eq!(
        verdict.verdict,
        proto::JailVerdict::Identical as i32,
        "{verdict:?}"
    );
    assert!(verdict.llm_divergence.is_none());
    assert_ne!(
        again.llm_session_id, original.llm_session_id,
        "a new replay session"
    );

    let again = alice
        .reproduce_jail(&drifted.jail_id, &drifting, Some(WAIT))
        .await
        .expect("reproduce");
    let verdict = again.reproducibility.clone().expect("checked");
    assert_eq!(
        verdict.verdict,
        proto::JailVerdict::Different as i32,
        "{verdict:?}"
    );
    let divergence = verdict.llm_divergence.expect("the first LLM divergence");
    assert_eq!(divergence.step, 0);
    assert_eq!(divergence.path, "/v1/chat/completions");
    assert!(
        divergence.diff.iter().any(|d| d.contains("messages")),
        "{:?}",
        divergence.diff
    );
    env.stop().await;
}

/// The flagship agent: the official OpenAI Python SDK, unchanged, configured
/// only by the environment the jail gives it.
const PYTHON_AGENT: &str = r#"import os
from openai import OpenAI

client = OpenAI()
prompt = os.environ.get("PROMPT", "plan the day")
reply = client.chat.completions.create(
    model="gpt-test",
    messages=[{"role": "user", "content": prompt}],
)
answer = reply.choices[0].message.content
os.makedirs("/workspace/out", exist_ok=True)
with open("/workspace/out/answer.txt", "w") as f:
    f.write(answer)
print(answer)
print("tokens", reply.usage.total_tokens)
"#;

fn python_spec(prompt: &str, llm: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "image": "python",
        "command": ["python3", "/workspace/agent.py"],
        "env": {"PROMPT": prompt, "PYTHONDONTWRITEBYTECODE": "1"},
        "files": [{"path": "/workspace/agent.py", "content": PYTHON_AGENT}],
        "network": "llm-only",
        "llm": llm,
        "limits": {"timeout": 120, "memory": "512MiB"},
    }))
    .expect("json")
}

#[tokio::test]
async fn a_python_agent_with_the_official_sdk_records_then_reproduces_with_the_upstream_stopped() {
    // The python image is built once per recipe (minutes the first time).
    let engine = amai_jail::Engine::connect().await.expect("docker engine");
    amai_jail::build_python(&engine, |_| {})
        .await
        .expect("the python jail image (scripts/ensure-deps.sh jail-images installs debootstrap)");
    let (env, upstream) = llm_env().await;
    let alice = env.agent("alice").await;

    let spec = python_spec(
        "plan the day",
        json!({"create": {"mode": "record", "upstream": "openai"}}),
    );
    let created = alice.create_jail(&spec, true).await.expect("create");
    let original = alice
        .client()
        .wait_jail(&created.jail_id, WAIT)
        .await
        .expect("wait");
    let logs = alice
        .client()
        .jail_logs(&original.jail_id, false)
        .await
        .expect("logs");
    let finished = original
        .finished
        .clone()
        .unwrap_or_else(|| panic!("{original:?}"));
    assert_eq!(
        finished.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(upstream.hits(), 1);
    let diff = alice
        .client()
        .jail_diff(&original.jail_id)
        .await
        .expect("diff");
    let answer = diff
        .entries
        .iter()
        .find(|e| e.path == "/workspace/out/answer.txt")
        .unwrap_or_else(|| panic!("{:?}", diff.entries));
    assert_eq!(answer.change, proto::JailChange::Added as i32);
    assert!(diff.violations.is_empty(), "{:?}", diff.violations);
    assert_eq!(finished.usage.expect("usage").llm_calls, 1);

    // The upstream is gone: the reproduction is answered from the recording.
    upstream.shutdown().await;
    let again = alice
        .reproduce_jail(&original.jail_id, &spec, Some(WAIT))
        .await
        .expect("reproduce");
    let verdict = again.reproducibility.clone().expect("checked");
    assert_eq!(
        verdict.verdict,
        proto::JailVerdict::Identical as i32,
        "{verdict:?}"
    );
    assert_eq!(
        again.finished.expect("finished").diff_sha256,
        finished.diff_sha256,
        "the same files, byte for byte"
    );

    // A changed agent replaying the recording diverges at its first request.
    let changed = python_spec(
        "plan the week",
        json!({"create": {"mode": "replay", "replay_from": original.llm_session_id}}),
    );
    let created = alice.create_jail(&changed, true).await.expect("create");
    let run = alice
        .client()
        .wait_jail(&created.jail_id, WAIT)
        .await
        .expect("wait");
    assert_ne!(
        run.finished.expect("finished").exit_code,
        0,
        "a replay miss is an error"
    );
    let misses: Vec<_> = alice
        .llm_recordings_page(&run.llm_session_id, 0, 100)
        .await
        .expect("session stream")
        .events
        .into_iter()
        .filter_map(|stored| {
            let ev = amai_bus::VerifiedEvent::decode(&stored.raw).ok()?;
            match ev.payload {
                Kind::LlmReplayMissed(miss) => Some(miss),
                _ => None,
            }
        })
        .collect();
    let first = misses.first().expect("a replay miss");
    assert_eq!(first.step, 0);
    assert!(
        first.diff.iter().any(|d| d.contains("plan the week")),
        "{:?}",
        first.diff
    );
    env.stop().await;
}

#[tokio::test]
async fn a_rogue_client_cannot_forge_jail_records_or_borrow_an_llm_session() {
    let (env, _upstream) = llm_env().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let jail = alice
        .create_jail(&spec(&["true"]), false)
        .await
        .expect("create");
    let aggregate =
        amai_bus::Aggregate::new(amai_bus::subjects::AggregateKind::Jail, &jail.jail_id)
            .expect("agg");

    // Settled: the jail is created (its spec stored) before anything is compared.
    wait_state(&env.client, &jail.jail_id, JailState::Created).await;

    // The owner cannot write its jail's records: only the jail service can.
    let head = env.client.chain_head(&aggregate).await.expect("head");
    let forged = EventDraft::new(
        aggregate.clone(),
        Kind::JailRunFinished(proto::JailRunFinished {
            jail_id: jail.jail_id.clone(),
            exit_code: 0,
            ..Default::default()
        }),
    )
    .after(head.aggregate_seq, head.hash)
    .signer_seq(env.head_seq(&agg(&alice)).await)
    .sign(alice.keys(), alice.id());
    let e = env
        .client
        .append(forged)
        .await
        .expect_err("a forged record");
    assert_eq!(
        e.status().map(|s| s.code()),
        Some(Code::PermissionDenied),
        "{e}"
    );
    assert_eq!(env.head_seq(&aggregate).await, head.aggregate_seq);

    // Bob cannot run a jail on Alice's LLM session (her recordings, her bill).
    let (session, _key) = alice
        .create_llm_session(proto::LlmMode::Record, Vec::new(), Default::default())
        .await
        .expect("session");
    let before = event_positions(&env).await;
    let with_llm = serde_json::to_vec(&json!({
        "image": "busybox", "command": ["true"], "network": "llm-only",
        "llm": {"create": {"mode": "record"}},
    }))
    .expect("json");
    let e = create(
        &env,
        request(&env, &bob, &with_llm, |_, r| {
            r.llm_session_id = session.session_id.clone();
            r.sealed_llm_key = vec![1; 80];
        })
        .await,
    )
    .await
    .expect_err("another owner's session");
    assert_eq!(
        code_and_kind(&e),
        (Code::PermissionDenied, ErrorKind::NotSessionOwner)
    );
    assert_eq!(event_positions(&env).await, before, "nothing was appended");

    // A key the jail service cannot open never runs: the run fails, unstarted.
    let created = create(
        &env,
        request(&env, &alice, &with_llm, |_, r| {
            r.llm_session_id = session.session_id.clone();
            r.sealed_llm_key = vec![1; 80];
        })
        .await,
    )
    .await
    .expect("accepted: only the jail service can open the box");
    let done = alice
        .client()
        .wait_jail(&created.jail_id, WAIT)
        .await
        .expect("wait");
    let failed = done.failed.clone().unwrap_or_else(|| panic!("{done:?}"));
    assert_eq!(failed.kind, proto::JailFailureKind::LlmSession as i32);
    assert!(done.started_at.is_none(), "never started");
    env.stop().await;
}

#[tokio::test]
async fn beyond_the_parallel_limit_jails_queue_and_run_in_turn() {
    let env = Env::with_jail(JailConfig::default().parallel(1)).await;
    let alice = env.agent("alice").await;
    let first = alice
        .create_jail(&spec(&["sleep", "300"]), true)
        .await
        .expect("first");
    wait_state(alice.client(), &first.jail_id, JailState::Running).await;
    let second = alice
        .create_jail(&spec(&["echo", "my turn"]), true)
        .await
        .expect("second");
    // While the one slot is taken, the second waits (created, not started).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting = alice.client().jail(&second.jail_id).await.expect("second");
        assert_eq!(waiting.state, JailState::Queued as i32, "{waiting:?}");
        assert!(waiting.started_at.is_none());
        if !waiting.image_id.is_empty() {
            break; // created, and still queued behind the first
        }
        assert!(tokio::time::Instant::now() < deadline, "never created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = alice.client().jails("", "", 10, false).await.expect("ls");
    assert_eq!(listed.jails.len(), 2);
    // The slot frees: the second runs.
    alice
        .client()
        .delete_jail(&first.jail_id, "make room")
        .await
        .expect("delete");
    let done = alice
        .client()
        .wait_jail(&second.jail_id, WAIT)
        .await
        .expect("wait");
    assert_eq!(done.finished.expect("finished").exit_code, 0);
    let logs = alice
        .client()
        .jail_logs(&second.jail_id, false)
        .await
        .expect("logs");
    assert_eq!(logs.stdout, b"my turn\n");
    env.stop().await;
}

/// Publishes `event` raw onto its subject, around the store (a rogue NATS
/// publisher), and waits until the reactor `durable` on `stream` has
/// acknowledged it.
async fn publish_raw_and_wait_consumed(
    env: &Env,
    event: &proto::SignedEvent,
    subject: String,
    stream: &str,
    durable: &str,
) {
    let ack = env
        .js
        .publish(subject, prost::Message::encode_to_vec(event).into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = env
            .js
            .get_stream(stream)
            .await
            .expect("stream")
            .get_consumer(durable)
            .await
            .expect("consumer");
        let info = consumer.info().await.expect("info");
        if info.ack_floor.stream_sequence >= ack.sequence {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{durable} never consumed it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_rogue_nats_publisher_can_neither_create_nor_run_a_jail() {
    let env = env().await;
    let alice = env.agent("alice").await;
    let rogue = amai_bus::IdentityKeys::generate();

    // A forged `jail.run_queued` for Alice's created jail, published around the store.
    let idle = alice
        .create_jail(&spec(&["echo", "ran"]), false)
        .await
        .expect("create");
    wait_state(alice.client(), &idle.jail_id, JailState::Created).await;
    let aggregate =
        amai_bus::Aggregate::new(amai_bus::subjects::AggregateKind::Jail, &idle.jail_id)
            .expect("agg");
    let head = env.client.chain_head(&aggregate).await.expect("head");
    let forged = EventDraft::new(
        aggregate.clone(),
        Kind::JailRunQueued(proto::JailRunQueued {
            jail_id: idle.jail_id.clone(),
            requested_by: alice.id().to_string(),
        }),
    )
    .after(head.aggregate_seq, head.hash)
    .signer_seq(1)
    .sign(&rogue, alice.id());
    publish_raw_and_wait_consumed(
        &env,
        &forged,
        aggregate.subject(),
        "AMAI_JAILS",
        "jail-runs",
    )
    .await;
    let jail = alice.client().jail(&idle.jail_id).await.expect("jail");
    assert_eq!(jail.state, JailState::Created as i32, "{jail:?}");
    assert!(jail.started_at.is_none(), "the forged run was not acted on");

    // A forged `jail.requested` on Bob's chain: no jail is created for him.
    let bob = env.agent("bob").await;
    let bob_chain = agg(&bob);
    let head = env.client.chain_head(&bob_chain).await.expect("head");
    let id = uuid::Uuid::now_v7();
    let jail_id = amai_bus::jail::jail_id(bob.id(), &id.to_string());
    let body = spec(&["echo", "pwned"]);
    let forged = EventDraft::new(
        bob_chain.clone(),
        Kind::JailRequested(proto::JailRequested {
            jail_id: jail_id.clone(),
            spec_json: body.clone(),
            spec_sha256: JailSpec::from_json(&body)
                .expect("spec")
                .canonical_digest()
                .to_vec(),
            run: true,
            ..Default::default()
        }),
    )
    .id(id)
    .after(head.aggregate_seq, head.hash)
    .sign(&rogue, &rogue.identity_id().to_string());
    publish_raw_and_wait_consumed(
        &env,
        &forged,
        bob_chain.subject(),
        "AMAI_AGENTS",
        "jail-requests",
    )
    .await;
    let jail_chain =
        amai_bus::Aggregate::new(amai_bus::subjects::AggregateKind::Jail, &jail_id).expect("agg");
    assert_eq!(env.head_seq(&jail_chain).await, 0, "no jail was created");
    env.stop().await;
}
