//! The llm role: an OpenAI- and Anthropic-compatible proxy whose every call
//! is a signed event.
//!
//! Declared for the [`crate::runtime::RoleRuntime`]:
//! - the llm projection ([`model`]): sessions, key bindings, recordings, misses,
//!   folded from the owners' `llm.session_*` actions and the service's records;
//! - the cassette importer reactor ([`import`]): appends the recordings of an
//!   imported cassette to the new session;
//! - the query service `amai.query.llm.*` ([`queries`]);
//! - the HTTP API ([`proxy`], listener `llm`, default `127.0.0.1:8088`):
//!   [`record`] forwards and records, [`replay`] answers from the recording;
//!   [`recorder`] appends to session streams with occurrence indexes assigned
//!   under the chain's optimistic concurrency; [`body`] keeps large bodies in
//!   the blob store; [`config`] holds upstream URLs and API keys.
//!
//! Writes `llm/<session_id>` only.

pub mod body;
pub mod config;
pub mod import;
pub mod model;
pub mod proxy;
pub mod queries;
pub mod record;
pub mod recorder;
pub mod replay;

use std::sync::Arc;

use amai_bus::blob::BlobStore;
use amai_bus::query;
use amai_bus::subjects::AggregateKind;
use amai_projections::Projection;

use crate::reactor::Reactor;
use crate::role::{Listener, QueryService, Role, RoleContext, RoleError};

pub use config::{LlmConfig, DEFAULT_LLM_ADDR};
pub use model::{LlmProjection, LlmReadModel, LLM_PROJECTION};

/// The role's name.
pub const NAME: &str = "llm";
/// The HTTP API listener's name (`--llm-addr` overrides its address).
pub const LISTENER: &str = "llm";

/// The llm role, declared. `config: None` reads the environment when the
/// listener starts ([`LlmConfig::from_env`]).
#[derive(Debug, Default, Clone)]
pub struct LlmRole {
    config: Option<LlmConfig>,
}

impl LlmRole {
    /// The role with explicit settings (tests, embedding).
    pub fn with_config(config: LlmConfig) -> Self {
        Self {
            config: Some(config),
        }
    }

    fn config(&self) -> LlmConfig {
        self.config.clone().unwrap_or_else(LlmConfig::from_env)
    }
}

fn component(what: &str, e: impl std::fmt::Display) -> RoleError {
    RoleError::Component {
        role: NAME.to_string(),
        component: what.to_string(),
        detail: e.to_string(),
    }
}

impl Role for LlmRole {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "LLM recording and replay proxy (OpenAI and Anthropic APIs)"
    }

    fn writes(&self) -> &'static [AggregateKind] {
        &[AggregateKind::Llm]
    }

    fn projections(&self) -> Vec<Arc<dyn Projection>> {
        vec![Arc::new(LlmProjection)]
    }

    fn reactors(&self) -> Vec<Arc<dyn Reactor>> {
        vec![Arc::new(import::CassetteImporter::new(
            self.config().blob_threshold,
        ))]
    }

    fn queries(&self, ctx: &RoleContext) -> Result<Option<QueryService>, RoleError> {
        Ok(Some(QueryService {
            name: query::LLM_SERVICE,
            description: "amai llm session queries",
            endpoints: queries::endpoints(self.query_state(ctx)?),
        }))
    }

    fn listeners(&self, ctx: &RoleContext) -> Result<Vec<Listener>, RoleError> {
        let config = Arc::new(self.config());
        let queries = self.query_state(ctx)?;
        let writer = recorder::SessionWriter::new(ctx.store.clone(), ctx.signer.clone());
        let js = ctx.store.jetstream().clone();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| component("http client", e))?;
        let serve: crate::role::ServeFn = Box::new(move |socket, shutdown| {
            Box::pin(async move {
                let blobs = BlobStore::open(&js, 1, config.blob_threshold)
                    .await
                    .map_err(|e| format!("cannot open the blob store: {e}"))?;
                let proxy = proxy::Proxy {
                    model: queries.model.clone(),
                    config,
                    queries,
                    writer,
                    blobs,
                    http,
                    replay: replay::ReplayRuns::default(),
                };
                // Streamed answers are written event by event: without
                // TCP_NODELAY, Nagle holds each small write until the client's
                // (delayed, ~40 ms) ACK of the previous one.
                let socket = axum::serve::ListenerExt::tap_io(socket, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(socket, proxy::router(proxy))
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        Ok(vec![Listener {
            name: LISTENER,
            default_addr: DEFAULT_LLM_ADDR,
            serve,
        }])
    }
}

impl LlmRole {
    fn query_state(&self, ctx: &RoleContext) -> Result<queries::QueryState, RoleError> {
        let projection = ctx.projection(LLM_PROJECTION)?;
        let model = LlmReadModel::open(&ctx.db).map_err(|e| component("read model", e))?;
        Ok(queries::QueryState {
            projection,
            model,
            store: ctx.store.clone(),
            timeout: ctx.min_position_timeout,
        })
    }
}
