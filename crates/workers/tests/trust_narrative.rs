//! The LLM narrative of trust reports, against a real nats-server, the llm
//! role and the fake upstream: a narrated report comes from a session the
//! trust service recorded on its own chain, replaying that session answers
//! the same request with the same text without the upstream, and without an
//! LLM (none configured, or the proxy unreachable) the report is the model's.

mod common;

use common::{bootstrap, service};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::query::{self, QueryError};
use amai_bus::streams::StreamSettings;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventStore, IdentityKeys, VerifiedEvent};
use amai_llm_fake_upstream::FakeUpstream;
use amai_testkit::NatsServer;
use amai_workers::bootstrap::ensure_identity;
use amai_workers::reactor::ServiceSigner;
use amai_workers::roles::identity::IdentityRole;
use amai_workers::roles::llm::{LlmConfig, LlmRole, LISTENER};
use amai_workers::roles::trust::narrative::{self, MODEL_REPORT_HEADING};
use amai_workers::roles::trust::{NarrativeConfig, TrustRole, TrustRoleConfig};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};

const UPSTREAM_OPENAI_KEY: &str = "sk-upstream-openai-narrative-0001";
const MODEL: &str = "gpt-trust-analyst";

struct World {
    _server: NatsServer,
    client: async_nats::Client,
    store: EventStore,
    identity_signer: ServiceSigner,
    trust_signer: ServiceSigner,
    llm_signer: ServiceSigner,
    runtimes: Vec<RoleRuntime>,
    dirs: Vec<tempfile::TempDir>,
}

impl World {
    async fn new() -> Self {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.expect("connect");
        let (store, operator, identity_signer) =
            bootstrap(&client, &StreamSettings::default()).await;
        let trust_signer = service(
            &store,
            &operator,
            "svc-trust",
            &[AggregateKind::Trust, AggregateKind::Failure],
        )
        .await;
        let llm_signer = service(
            &store,
            &operator,
            "svc-llm",
            &[AggregateKind::Llm, AggregateKind::Failure],
        )
        .await;
        let mut w = Self {
            _server: server,
            client,
            store,
            identity_signer,
            trust_signer,
            llm_signer,
            runtimes: Vec::new(),
            dirs: Vec::new(),
        };
        let signer = w.identity_signer.clone();
        w.start(Arc::new(IdentityRole), signer, |c| c).await;
        w
    }

    async fn start(
        &mut self,
        role: Arc<dyn amai_workers::role::Role>,
        signer: ServiceSigner,
        tune: impl FnOnce(RoleRuntimeConfig) -> RoleRuntimeConfig,
    ) -> usize {
        let dir = tempfile::tempdir().expect("dir");
        let config = tune(RoleRuntimeConfig::new(
            self.client.clone(),
            self.store.clone(),
            dir.path(),
            signer,
        ));
        let rt = RoleRuntime::start(role, config).await.expect("role");
        self.runtimes.push(rt);
        self.dirs.push(dir);
        self.runtimes.len() - 1
    }

    /// Starts the llm role (RECORD answers from `upstream`); returns its address.
    async fn start_llm(&mut self, upstream: &FakeUpstream) -> SocketAddr {
        let cfg = LlmConfig::default()
            .openai_url(upstream.openai_base_url())
            .openai_api_key(UPSTREAM_OPENAI_KEY);
        let signer = self.llm_signer.clone();
        let i = self
            .start(Arc::new(LlmRole::with_config(cfg)), signer, |c| {
                c.listen_addr(LISTENER, SocketAddr::from(([127, 0, 0, 1], 0)))
            })
            .await;
        self.runtimes[i].listener_addr(LISTENER).expect("listener")
    }

    async fn start_trust(&mut self, narrative: Option<NarrativeConfig>) {
        let mut config = TrustRoleConfig::default();
        if let Some(n) = narrative {
            config = config.narrative(n);
        }
        let signer = self.trust_signer.clone();
        self.start(Arc::new(TrustRole::with_config(config)), signer, |c| c)
            .await;
    }

    /// A registered agent with a few actions.
    async fn busy_agent(&self, name: &str) -> String {
        let keys = IdentityKeys::generate();
        let id = ensure_identity(
            &self.store,
            &keys,
            name,
            IdentityKind::Agent,
            None,
            amai_bus::envelope::now_timestamp(),
        )
        .await
        .expect("register");
        let agg = Aggregate::agent(&id).expect("agg");
        for ty in ["task.started", "task.finished", "task.started"] {
            let head = self.store.chain_head(&agg).await.expect("head");
            let signed = EventDraft::action(agg.clone(), ty, "{}")
                .after(head.aggregate_seq, head.hash)
                .sign(&keys, &id);
            self.store.append(signed).await.expect("action");
        }
        id
    }

    async fn try_report(&self, agent: &str) -> Result<proto::TrustReport, QueryError> {
        query::request(
            &self.client,
            query::TRUST_REPORT,
            &proto::GetTrustReportRequest {
                agent_id: agent.to_string(),
            },
            Duration::from_secs(30),
        )
        .await
    }

    /// The report, once the trust projection knows the agent (each answered
    /// report is narrated: only the first answer is taken).
    async fn report(&self, agent: &str) -> proto::TrustReport {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_report(agent).await {
                Ok(report) => return report,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no report of {agent}: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every event of `agg`, decoded.
    async fn chain(&self, agg: Aggregate) -> Vec<VerifiedEvent> {
        self.store
            .read_chain(&agg, 1, 10_000)
            .await
            .expect("read")
            .iter()
            .map(|s| VerifiedEvent::decode(&s.payload).expect("decode"))
            .collect()
    }

    /// The `llm.session_opened` actions on svc-trust's chain.
    async fn trust_sessions(&self) -> Vec<proto::LlmSessionOpened> {
        self.chain(Aggregate::agent(&self.trust_signer.id).expect("agg"))
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Kind::LlmSessionOpened(o) => Some(o),
                _ => None,
            })
            .collect()
    }

    async fn recordings(&self, session: &str) -> Vec<proto::LlmInteractionRecorded> {
        self.chain(Aggregate::new(AggregateKind::Llm, session).expect("agg"))
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Kind::LlmInteractionRecorded(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    async fn stop(mut self) {
        for rt in self.runtimes.iter_mut().rev() {
            rt.stop().await;
        }
    }
}

/// The narrative and the model's markdown of a narrated report.
fn split(markdown: &str) -> (&str, &str) {
    let marker = format!("\n\n{MODEL_REPORT_HEADING}\n\n");
    markdown
        .split_once(&marker)
        .expect("a narrated report has a model report section")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_narrated_report_is_recorded_by_the_trust_service_and_replays_byte_for_byte() {
    let mut w = World::new().await;
    let upstream = FakeUpstream::builder()
        .openai_key(UPSTREAM_OPENAI_KEY)
        .start()
        .await
        .expect("fake upstream");
    let proxy = w.start_llm(&upstream).await;
    w.start_trust(Some(
        NarrativeConfig::new(MODEL)
            .proxy(proxy)
            .timeout(Duration::from_secs(20)),
    ))
    .await;
    let agent = w.busy_agent("narrated").await;

    let report = w.report(&agent).await;
    assert_eq!(report.agent_id, agent);
    let session = report
        .source
        .strip_prefix("llm:")
        .unwrap_or_else(|| panic!("a narrated source, not {:?}", report.source))
        .to_string();
    let (narrative_text, model_markdown) = split(&report.markdown);
    // The narrative is the fake upstream's answer to the model's markdown.
    assert!(
        narrative_text.starts_with("fake answer #"),
        "{narrative_text}"
    );
    assert!(model_markdown.contains(&agent), "{model_markdown}");
    // What went upstream: the fixed request of (model, markdown), with the
    // real upstream key, never the session key.
    let sent = upstream.last_request().expect("an upstream call");
    assert_eq!(sent.path, "/v1/chat/completions");
    let sent_json: serde_json::Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(sent_json["model"], MODEL);
    assert_eq!(sent_json["temperature"], 0);
    assert_eq!(sent_json["messages"][0]["role"], "system");
    assert_eq!(sent_json["messages"][1]["content"], model_markdown);
    assert_eq!(
        sent.body.as_ref(),
        narrative::request_body(MODEL, model_markdown).as_slice()
    );

    // The session: opened by svc-trust on its own chain (RECORD, OpenAI),
    // holding exactly one recording.
    let opened = w.trust_sessions().await;
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].session_id, session);
    assert_eq!(opened[0].mode, proto::LlmMode::Record as i32);
    assert_eq!(opened[0].upstreams, vec![proto::LlmUpstream::Openai as i32]);
    let recordings = w.recordings(&session).await;
    assert_eq!(recordings.len(), 1);
    assert_eq!(recordings[0].path, "/v1/chat/completions");
    assert_eq!(recordings[0].status, 200);

    // Reproducible: a replay session of that recording (the same owner, as
    // replay_from requires), the upstream gone, the same request.
    let hits = upstream.hits();
    upstream.shutdown().await;
    let replay_key = "amai-sk-trust-narrative-replay-0001";
    let agg = Aggregate::agent(&w.trust_signer.id).expect("agg");
    let head = w.store.chain_head(&agg).await.expect("head");
    let event_id = uuid::Uuid::now_v7();
    let replay = amai_bus::llm::session_id(&w.trust_signer.id, &event_id.to_string());
    let signed = EventDraft::new(
        agg,
        Kind::LlmSessionOpened(proto::LlmSessionOpened {
            session_id: replay.clone(),
            mode: proto::LlmMode::Replay as i32,
            key_sha256: amai_bus::llm::key_sha256(replay_key).to_vec(),
            replay_from: session.clone(),
            ..Default::default()
        }),
    )
    .id(event_id)
    .after(head.aggregate_seq, head.hash)
    .sign(&w.trust_signer.keys, &w.trust_signer.id);
    w.store.append(signed).await.expect("replay session");

    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    // A key opened a moment ago: the llm role answers 401 until it knows it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (status, bytes) = loop {
        let resp = http
            .post(format!("http://{proxy}/v1/chat/completions"))
            .bearer_auth(replay_key)
            .header("content-type", "application/json")
            .body(narrative::request_body(MODEL, model_markdown))
            .send()
            .await
            .expect("proxy");
        if resp.status() != 401 {
            let status = resp.status().as_u16();
            break (status, resp.bytes().await.expect("body"));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the llm role never knew the replay session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let replayed = narrative::answer_text(&bytes).expect("text");
    assert_eq!(replayed, narrative_text);
    assert_eq!(
        narrative::compose(&replayed, model_markdown),
        report.markdown
    );
    // The recording's body (inline: it is small) is the bytes replayed.
    let recorded = recordings[0].response.as_ref().expect("a recorded body");
    assert_eq!(recorded.inline, bytes.to_vec());
    assert_eq!(hits, 1, "one upstream call in all");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_narrative_the_report_is_the_models() {
    let mut w = World::new().await;
    w.start_trust(None).await;
    let agent = w.busy_agent("plain").await;
    let report = w.report(&agent).await;
    assert_eq!(report.source, "model");
    assert!(report.markdown.contains(&agent));
    assert!(!report.markdown.contains(MODEL_REPORT_HEADING));
    assert!(w.trust_sessions().await.is_empty());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_proxy_leaves_the_models_report() {
    let mut w = World::new().await;
    // An address nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    w.start_trust(Some(
        NarrativeConfig::new(MODEL)
            .proxy(closed)
            .timeout(Duration::from_secs(10)),
    ))
    .await;
    let agent = w.busy_agent("unnarrated").await;
    let report = w.report(&agent).await;
    assert_eq!(report.source, "model");
    assert!(report.markdown.contains(&agent));
    assert!(!report.markdown.contains(MODEL_REPORT_HEADING));
    assert!(
        w.trust_sessions().await.is_empty(),
        "no session is opened while nothing listens at the proxy's address"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_error_leaves_the_models_report() {
    let mut w = World::new().await;
    let upstream = FakeUpstream::builder()
        .openai_key(UPSTREAM_OPENAI_KEY)
        .start()
        .await
        .expect("fake upstream");
    let proxy = w.start_llm(&upstream).await;
    // `fake-500`: the fake upstream answers 500 (recorded like any answer).
    w.start_trust(Some(
        NarrativeConfig::new("fake-500")
            .proxy(proxy)
            .timeout(Duration::from_secs(20)),
    ))
    .await;
    let agent = w.busy_agent("upstream-down").await;
    let report = w.report(&agent).await;
    assert_eq!(report.source, "model");
    assert!(report.markdown.contains(&agent));
    assert!(!report.markdown.contains(MODEL_REPORT_HEADING));
    // The failed call is on record in the session the trust service opened.
    let opened = w.trust_sessions().await;
    assert_eq!(opened.len(), 1);
    let recordings = w.recordings(&opened[0].session_id).await;
    assert_eq!(recordings.len(), 1);
    assert_eq!(recordings[0].status, 500);
    upstream.shutdown().await;
    w.stop().await;
}
