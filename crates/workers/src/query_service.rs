//! Query services on NATS request/reply (the async-nats services API): every
//! instance of a role joins the same queue group, so adding instances adds query
//! capacity, and `$SRV.PING/INFO/STATS` discover them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use amai_bus::query::{reason, QueryCode, QueryError};
use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;

/// Room left in a reply for headers and framing: a handler's reply payload must
/// stay within the connection's `max_payload` minus this.
pub const REPLY_HEADROOM: usize = 8 * 1024;

/// The largest reply payload a handler may produce on `client`'s connection
/// (`max_payload` announced by the server, minus [`REPLY_HEADROOM`]).
pub fn reply_budget(client: &async_nats::Client) -> usize {
    (client.server_info().max_payload).saturating_sub(REPLY_HEADROOM)
}

/// Boxed future of a query handler.
pub type QueryFuture = Pin<Box<dyn Future<Output = Result<Bytes, QueryError>> + Send>>;

/// A query handler: request payload in, reply payload out.
pub type QueryHandler = Arc<dyn Fn(Bytes) -> QueryFuture + Send + Sync>;

/// An endpoint answering requests of type `Req`: the payload is decoded
/// (`INVALID_ARGUMENT`, `UNDECODABLE_MESSAGE` when it does not) and handed to
/// `answer` with the shared `state`.
pub fn typed_endpoint<S, Req, F, Fut>(
    subject: &'static str,
    state: Arc<S>,
    answer: F,
) -> (&'static str, QueryHandler)
where
    S: Send + Sync + 'static,
    Req: prost::Message + Default + 'static,
    F: Fn(Arc<S>, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, QueryError>> + Send + 'static,
{
    let answer = Arc::new(answer);
    let handler: QueryHandler = Arc::new(move |payload: Bytes| {
        let (state, answer) = (state.clone(), answer.clone());
        Box::pin(async move {
            let req = Req::decode(payload).map_err(|e| {
                QueryError::new(
                    QueryCode::InvalidArgument,
                    format!("undecodable request: {e}"),
                )
                .with_reason(reason::UNDECODABLE_MESSAGE)
            })?;
            answer(state, req).await
        })
    });
    (subject, handler)
}

/// Why a query service could not start.
#[derive(Debug, thiserror::Error)]
#[error("query service {service}: {detail}")]
pub struct QueryServiceError {
    /// Service name.
    pub service: String,
    /// What failed.
    pub detail: String,
}

/// A started query service: its endpoints are subscribed (so requests sent after
/// [`start_queries`] returns are answered); [`RunningQueries::run_until`] serves
/// them until shutdown.
pub struct RunningQueries {
    service: async_nats::service::Service,
    tasks: tokio::task::JoinSet<()>,
}

/// Starts the service `name` with `endpoints` (subject -> handler). Requests are
/// handled concurrently.
pub async fn start_queries(
    client: async_nats::Client,
    name: &str,
    version: &str,
    description: &str,
    endpoints: Vec<(&'static str, QueryHandler)>,
) -> Result<RunningQueries, QueryServiceError> {
    let err = |d: String| QueryServiceError {
        service: name.to_string(),
        detail: d,
    };
    let service = client
        .service_builder()
        .description(description)
        .start(name, version)
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut tasks = tokio::task::JoinSet::new();
    for (subject, handler) in endpoints {
        let mut endpoint = service
            .endpoint(subject)
            .await
            .map_err(|e| err(e.to_string()))?;
        let budget = reply_budget(&client);
        tasks.spawn(async move {
            while let Some(request) = endpoint.next().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let reply = handler(request.message.payload.clone())
                        .await
                        .and_then(|bytes| check_reply_size(bytes, budget));
                    let sent = match reply {
                        Ok(bytes) => request.respond(Ok(bytes)).await,
                        Err(e) => {
                            request
                                .respond_with_headers(Err(e.to_service_error()), e.to_headers())
                                .await
                        }
                    };
                    if let Err(e) = sent {
                        tracing::warn!(subject, error = %e, "could not send a query reply");
                    }
                });
            }
        });
    }
    // Make sure the server has the subscriptions before callers are told we are up.
    client.flush().await.map_err(|e| err(e.to_string()))?;
    Ok(RunningQueries { service, tasks })
}

/// A reply NATS would refuse becomes a precise error the caller sees at once
/// (instead of a publish failure here and a timeout there).
fn check_reply_size(bytes: Bytes, budget: usize) -> Result<Bytes, QueryError> {
    if bytes.len() <= budget {
        return Ok(bytes);
    }
    Err(QueryError::new(
        QueryCode::ResourceExhausted,
        format!(
            "the reply is {} bytes, over the {budget} bytes a NATS reply may carry here; ask for fewer items (a smaller limit)",
            bytes.len()
        ),
    )
    .with_reason(reason::REPLY_TOO_LARGE)
    .with_meta("size", bytes.len())
    .with_meta("max", budget))
}

impl RunningQueries {
    /// Serves until `shutdown`, then unsubscribes.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()> + Send) {
        shutdown.await;
        self.tasks.abort_all();
        let _ = self.service.stop().await;
    }
}
