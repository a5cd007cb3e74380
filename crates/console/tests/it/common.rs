//! A real nats-server, the streams, the trust-root operator, identity, trust
//! and audit workers, a gateway (the SDK's agents append through it), and the
//! console on 127.0.0.1:0. No jail or llm worker runs: their pages must say so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto::IdentityKind;
use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_bus::subjects::AggregateKind;
use amai_bus::{EventStore, EventStoreConfig, IdentityKeys};
use amai_client::{Agent, AmaiClient};
use amai_console::ConsoleConfig;
use amai_testkit::NatsServer;
use amai_workers::bootstrap::{ensure_operator, ensure_service};
use amai_workers::reactor::ServiceSigner;
use amai_workers::role::Role;
use amai_workers::roles::audit::{AuditRole, AuditRoleConfig};
use amai_workers::roles::identity::IdentityRole;
use amai_workers::roles::trust::{TrustRole, TrustRoleConfig};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};

pub(crate) const TOKEN: &str = "test-login-token-0123456789abcdefghijklmnopqrstuvwxyz";

pub(crate) struct Env {
    /// The console's origin (`http://127.0.0.1:<port>`).
    pub(crate) origin: String,
    /// The trust-root operator the console acts as.
    pub(crate) operator: IdentityKeys,
    /// An SDK client reading as the operator.
    pub(crate) client: AmaiClient,
    pub(crate) js: async_nats::jetstream::Context,
    /// A client that never follows redirects and keeps no cookies.
    pub(crate) http: reqwest::Client,
    console_stop: Option<tokio::sync::oneshot::Sender<()>>,
    console: Option<tokio::task::JoinHandle<Result<(), amai_console::ConsoleError>>>,
    gateway_stop: Option<tokio::sync::oneshot::Sender<()>>,
    roles: Vec<(RoleRuntime, tempfile::TempDir)>,
    _nats: NatsServer,
}

impl Env {
    pub(crate) async fn start() -> Env {
        let nats = NatsServer::start();
        let nc = async_nats::connect(nats.url()).await.expect("connect nats");
        let js = async_nats::jetstream::new(nc.clone());
        ensure_streams(&js, &StreamSettings::default())
            .await
            .expect("streams");
        let operator = IdentityKeys::generate();
        let store = EventStore::new(
            js.clone(),
            EventStoreConfig::default().trust_root(operator.public_key()),
        );
        let now = amai_bus::envelope::now_timestamp();
        ensure_operator(&store, &operator, "operator", now)
            .await
            .expect("operator");
        let mut roles = Vec::new();
        let wanted: Vec<(Arc<dyn Role>, &str)> = vec![
            (Arc::new(IdentityRole), "svc-identity"),
            (
                Arc::new(TrustRole::with_config(TrustRoleConfig::default())),
                "svc-trust",
            ),
            (
                Arc::new(AuditRole::with_config(
                    AuditRoleConfig::default()
                        .every_events(1_000_000)
                        .interval(Duration::from_secs(3600)),
                )),
                "svc-audit",
            ),
            (
                Arc::new(amai_workers::roles::lifecycle::LifecycleRole),
                "svc-lifecycle",
            ),
        ];
        for (role, name) in wanted {
            let service = IdentityKeys::generate();
            let mut writes = role.writes().to_vec();
            writes.push(AggregateKind::Failure);
            let id = ensure_service(&store, &operator, &service, name, &writes, now)
                .await
                .expect("service");
            let dir = tempfile::tempdir().expect("dir");
            let config = RoleRuntimeConfig::new(
                nc.clone(),
                store.clone(),
                dir.path(),
                ServiceSigner { keys: service, id },
            );
            roles.push((RoleRuntime::start(role, config).await.expect("role"), dir));
        }

        // The gateway: the SDK's agents register and append through it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let gw_url = format!("http://{}", listener.local_addr().expect("addr"));
        let (gateway_stop, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(amai_gateway::serve(
            amai_gateway::GatewayConfig::new(nc.clone(), store.clone()),
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        let channel = tonic::transport::Endpoint::from_shared(gw_url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect gateway");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("gateway serving");
        let client = AmaiClient::connect(gw_url)
            .await
            .expect("client")
            .with_signer(operator.identity_id(), operator.clone());

        let config = ConsoleConfig::builder()
            .nats(nc.clone())
            .store(store)
            .operator_keys(operator.clone())
            .login_token(TOKEN)
            .query_timeout(Duration::from_secs(5))
            .build()
            .expect("console config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind console");
        let origin = amai_console::origin_of(listener.local_addr().expect("addr"));
        let (console_stop, rx) = tokio::sync::oneshot::channel::<()>();
        let console = tokio::spawn(amai_console::serve(config, listener, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Env {
            origin,
            operator,
            client,
            js,
            http,
            console_stop: Some(console_stop),
            console: Some(console),
            gateway_stop: Some(gateway_stop),
            roles,
            _nats: nats,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// A new agent registered under `name` with `metadata`.
    pub(crate) async fn agent(&self, name: &str, metadata: BTreeMap<String, String>) -> Agent {
        let agent = self.client.agent(IdentityKeys::generate());
        agent
            .register(name, IdentityKind::Agent, metadata)
            .await
            .expect("register");
        agent
    }

    /// Signs in with the login token; returns the `Cookie` header value.
    pub(crate) async fn login(&self) -> String {
        let resp = self
            .http
            .get(self.url(&format!("/login?token={TOKEN}")))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), 303, "token login redirects");
        session_cookie(&resp).expect("session cookie")
    }

    /// GET `path` with `cookie`.
    pub(crate) async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("get")
    }

    /// The body of a signed-in page (asserting 200).
    pub(crate) async fn page(&self, path: &str, cookie: &str) -> String {
        let resp = self.get(path, cookie).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.text().await.expect("body")
    }

    /// POSTs `form` to `path` with `cookie` and extra `headers`.
    pub(crate) async fn post(
        &self,
        path: &str,
        cookie: &str,
        headers: &[(&'static str, &str)],
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        self.http
            .post(self.url(path))
            .header("cookie", cookie)
            .headers(h)
            .form(form)
            .send()
            .await
            .expect("post")
    }

    /// Reads `/events/stream?<query>` until its text contains every needle
    /// (bounded); returns the text read.
    pub(crate) async fn sse_until(&self, query: &str, cookie: &str, needles: &[&str]) -> String {
        let resp = self.get(&format!("/events/stream?{query}"), cookie).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let mut body = resp.bytes_stream();
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !needles.iter().all(|n| text.contains(n)) {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .unwrap_or_else(|_| panic!("SSE never showed {needles:?}; got:\n{text}"))
                .expect("stream open")
                .expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    }

    /// The types of the events in AMAI_AUDIT.
    pub(crate) async fn audit_event_types(&self) -> Vec<String> {
        let mut replay = amai_bus::consumer::replay(
            &self.js,
            "AMAI_AUDIT",
            None,
            amai_bus::consumer::StartAt::All,
        )
        .await
        .expect("replay");
        let mut stream = self.js.get_stream("AMAI_AUDIT").await.expect("stream");
        let last = stream.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        while out.len() < last as usize {
            let (ev, _) = tokio::time::timeout(Duration::from_secs(5), replay.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("event");
            out.push(ev.event_type.unwrap_or_default());
        }
        out
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.console_stop.take() {
            let _ = tx.send(());
        }
        if let Some(console) = self.console.take() {
            tokio::time::timeout(Duration::from_secs(10), console)
                .await
                .expect("console stops in time")
                .expect("join")
                .expect("serve ok");
        }
        for (mut role, _dir) in self.roles.drain(..) {
            role.stop().await;
        }
        if let Some(tx) = self.gateway_stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The session cookie a response sets, as a `Cookie` header value.
pub(crate) fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("amai_console=") && !v.starts_with("amai_console=;"))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// The CSRF token in a page's forms.
pub(crate) fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a csrf field") + marker.len();
    let end = page[start..].find('"').expect("end of value") + start;
    page[start..end].to_string()
}
