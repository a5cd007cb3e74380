//! `EventService`: append any signed action, read heads, events and chains, and
//! subscribe to live and historical events with flow control.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use amai_bus::consumer::{self, StartAt};
use amai_bus::proto::{self, event_service_server::EventService, subscribe_request::Start};
use amai_bus::store::StoredEvent;
use amai_bus::subjects::{Aggregate, AggregateKind};

use amai_proto::wire::{
    GET_CHAIN_HEAD_METHOD, GET_EVENT_METHOD, READ_CHAIN_METHOD, SUBSCRIBE_METHOD,
};

use crate::access::{body_of, is_key_event, Reader};
use crate::identity::append_response;
use crate::status::ApiError;
use crate::Shared;

/// Default `ReadChain` page size.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest `ReadChain` page.
pub const MAX_PAGE: u32 = 1000;
/// Events buffered per subscriber before the consumer is paused (flow control).
pub const SUBSCRIBE_BUFFER: usize = 256;

/// The `EventService` implementation.
#[derive(Clone)]
pub struct EventSvc {
    shared: Arc<Shared>,
}

fn parse_aggregate(s: &str) -> Result<Aggregate, ApiError> {
    s.parse::<Aggregate>()
        .map_err(|e| ApiError::InvalidArgument(format!("{e}")))
}

/// The filters of one subscription.
#[derive(Clone, Debug, Default)]
struct Filter {
    types: Vec<String>,
    actor: Option<String>,
    /// When the subscriber may not read the whole stream: only what it sees.
    visible_to: Option<Reader>,
}

impl Filter {
    fn matches(&self, stored: &StoredEvent) -> bool {
        if let Some(reader) = &self.visible_to {
            if !reader.sees(stored) {
                return false;
            }
        }
        if !self.types.is_empty() {
            let ty = stored
                .event_type
                .clone()
                .or_else(|| body_of(stored).map(|b| b.r#type));
            if !ty.is_some_and(|t| self.types.contains(&t)) {
                return false;
            }
        }
        if let Some(actor) = &self.actor {
            if body_of(stored).is_none_or(|b| &b.actor != actor) {
                return false;
            }
        }
        true
    }
}

impl EventSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    async fn read_chain_inner(
        &self,
        request: Request<proto::ReadChainRequest>,
    ) -> Result<proto::ReadChainResponse, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(READ_CHAIN_METHOD, request.metadata(), request.get_ref())
            .await?;
        let req = request.into_inner();
        let aggregate = parse_aggregate(&req.aggregate)?;
        self.shared
            .check_aggregate(&reader, &aggregate, req.key_events_only)
            .await?;
        let limit = if req.limit == 0 {
            DEFAULT_PAGE
        } else {
            req.limit.min(MAX_PAGE)
        };
        let from = req.from_aggregate_seq.max(1);
        let page = self
            .shared
            .store
            .read_chain_page(&aggregate, from, limit as usize, req.scan_from_stream_seq)
            .await?;
        Ok(proto::ReadChainResponse {
            events: page
                .events
                .iter()
                .filter(|e| !req.key_events_only || is_key_event(e))
                .map(StoredEvent::to_proto)
                .collect(),
            next_aggregate_seq: page.next_aggregate_seq,
            next_stream_seq: page.next_stream_seq,
        })
    }

    async fn subscribe_inner(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<ReceiverStream<Result<proto::StoredEvent, Status>>, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(SUBSCRIBE_METHOD, request.metadata(), request.get_ref())
            .await?;
        let req = request.into_inner();
        let aggregate = if req.aggregate.is_empty() {
            None
        } else {
            Some(parse_aggregate(&req.aggregate)?)
        };
        let stream = match (&aggregate, req.stream.as_str()) {
            (Some(a), "") => a.stream().to_string(),
            (Some(a), s) if a.stream() != s => {
                return Err(ApiError::InvalidArgument(format!(
                    "{a} lives on stream {}, not {s}",
                    a.stream()
                )))
            }
            (_, "") => {
                return Err(ApiError::InvalidArgument(
                    "stream is required (e.g. AMAI_AGENTS), or give an aggregate".into(),
                ))
            }
            (_, s) => s.to_string(),
        };
        if AggregateKind::for_stream(&stream).is_none() {
            return Err(ApiError::InvalidArgument(format!("unknown stream {stream:?}; amai streams are AMAI_AGENTS, AMAI_NAMES, AMAI_TRUST, ...")));
        }
        // Access is decided before the replay opens: a named aggregate must be
        // readable whole; a whole stream is filtered to what the reader sees.
        let visible_to = match &aggregate {
            Some(a) => {
                self.shared.check_aggregate(&reader, a, false).await?;
                None
            }
            None if reader.reads_all_of(&stream) => None,
            None if reader.reads_any_of(&stream) => Some(reader),
            None => {
                return Err(ApiError::ReadNotPermitted {
                    actor: reader.id,
                    what: stream,
                })
            }
        };
        let start = match req.start {
            Some(Start::StartSeq(s)) => StartAt::Sequence(s),
            Some(Start::StartTime(t)) => {
                let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
                StartAt::Time(
                    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| {
                        ApiError::InvalidArgument(format!("start_time is out of range: {e}"))
                    })?,
                )
            }
            Some(Start::NewOnly(true)) => StartAt::New,
            Some(Start::NewOnly(false)) | None => StartAt::All,
        };
        let filter = Filter {
            types: req.types,
            actor: (!req.actor.is_empty()).then_some(req.actor),
            visible_to,
        };
        let end_seq = (req.end_seq != 0).then_some(req.end_seq);
        let replay = consumer::replay(
            self.shared.store.jetstream(),
            &stream,
            aggregate.map(|a| a.subject()),
            start,
        )
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot open a replay: {e}; retry shortly")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBE_BUFFER);
        tokio::spawn(forward(
            replay,
            filter,
            end_seq,
            tx,
            self.shared.stopping.clone(),
        ));
        Ok(ReceiverStream::new(rx))
    }
}

/// Forwards matching events until the client goes away or the replay fails. A
/// full channel suspends the replay: a slow client slows its consumer down.
async fn forward(
    mut replay: consumer::Replay,
    filter: Filter,
    end_seq: Option<u64>,
    tx: tokio::sync::mpsc::Sender<Result<proto::StoredEvent, Status>>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stopping.borrow() {
            break;
        }
        let item = tokio::select! {
            _ = tx.closed() => break,
            _ = stopping.changed() => break,
            item = replay.next() => item,
        };
        match item {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "subscription replay failed");
                let _ = tx
                    .send(Err(Status::unavailable(format!(
                        "event stream interrupted: {e}; resubscribe from the last position seen"
                    ))))
                    .await;
                break;
            }
            Some(Ok((stored, _pending))) => {
                if end_seq.is_some_and(|end| stored.position.seq > end) {
                    break;
                }
                let last = end_seq.is_some_and(|end| stored.position.seq >= end);
                if filter.matches(&stored) && tx.send(Ok(stored.to_proto())).await.is_err() {
                    break;
                }
                if last {
                    break;
                }
            }
        }
    }
    tracing::debug!("subscription ended");
}

/// The response stream of `Subscribe`.
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<proto::StoredEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl EventService for EventSvc {
    #[tracing::instrument(skip_all, fields(event_type))]
    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let event = request
            .into_inner()
            .event
            .ok_or_else(|| ApiError::InvalidArgument("event is required".into()))?;
        self.shared.check_size(&event)?;
        if let Some(ty) = crate::identity::event_type_of(&event) {
            tracing::Span::current().record("event_type", ty.as_str());
            if ty == "agent.endorsed" {
                // The same checks as TrustService.Endorse (endorsee, repeat):
                // no path appends an endorsement without them.
                return crate::trust::TrustSvc::new(self.shared.clone())
                    .endorse_checked(proto::EndorseCommand { event: Some(event) })
                    .await
                    .map(Response::new)
                    .map_err(Status::from);
            }
            if ty == "catalog.published" {
                // The same checks as AgentService.Publish (manifest, owner,
                // immutable versions): no path appends a publication without them.
                let ev = amai_bus::envelope::VerifiedEvent::from_signed(event.clone())
                    .map_err(|e| ApiError::from(amai_bus::store::AppendError::from(e)))?;
                crate::catalog::CatalogSvc::new(self.shared.clone())
                    .validate(&ev)
                    .await?;
            }
        }
        let out = self
            .shared
            .store
            .append(event)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(append_response(out)))
    }

    #[tracing::instrument(skip_all, fields(aggregate = %request.get_ref().aggregate))]
    async fn get_chain_head(
        &self,
        request: Request<proto::GetChainHeadRequest>,
    ) -> Result<Response<proto::ChainHead>, Status> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(GET_CHAIN_HEAD_METHOD, request.metadata(), request.get_ref())
            .await?;
        let aggregate = parse_aggregate(&request.get_ref().aggregate)?;
        self.shared
            .check_aggregate(&reader, &aggregate, false)
            .await?;
        let head = self
            .shared
            .store
            .chain_head(&aggregate)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(head.to_proto()))
    }

    #[tracing::instrument(skip_all, fields(position = ?request.get_ref().position))]
    async fn get_event(
        &self,
        request: Request<proto::GetEventRequest>,
    ) -> Result<Response<proto::StoredEvent>, Status> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(GET_EVENT_METHOD, request.metadata(), request.get_ref())
            .await?;
        let position = request
            .into_inner()
            .position
            .ok_or_else(|| ApiError::InvalidArgument("position is required".into()))?;
        let denied = |what: String| ApiError::ReadNotPermitted {
            actor: reader.id.clone(),
            what,
        };
        // A stream the reader sees nothing of is refused before the read; in
        // the others, the event's aggregate is only known once it is read.
        if !reader.reads_any_of(&position.stream) {
            return Err(denied(position.stream).into());
        }
        let what = format!("{}#{}", position.stream, position.seq);
        let stored = self
            .shared
            .store
            .get_event(&position.into())
            .await
            .map_err(ApiError::from)?;
        if !reader.sees(&stored) {
            let infrastructure = match Aggregate::from_subject(&stored.subject) {
                Ok(a) if a.kind == AggregateKind::Agent => {
                    self.shared.is_infrastructure(&a.id).await?
                }
                _ => false,
            };
            if !infrastructure {
                return Err(denied(what).into());
            }
        }
        Ok(Response::new(stored.to_proto()))
    }

    #[tracing::instrument(skip_all, fields(aggregate = %request.get_ref().aggregate, from = request.get_ref().from_aggregate_seq))]
    async fn read_chain(
        &self,
        request: Request<proto::ReadChainRequest>,
    ) -> Result<Response<proto::ReadChainResponse>, Status> {
        Ok(Response::new(self.read_chain_inner(request).await?))
    }

    type SubscribeStream = SubscribeStream;

    async fn get_deployment(
        &self,
        _request: Request<proto::GetDeploymentRequest>,
    ) -> Result<Response<proto::Deployment>, Status> {
        let root = self.shared.store.config().get_trust_root().ok_or_else(|| {
            ApiError::Unavailable("this gateway has no trust root configured".into())
        })?;
        Ok(Response::new(proto::Deployment {
            deployment_id: hex::encode(root.as_bytes()),
            trust_root: root.as_bytes().to_vec(),
        }))
    }

    #[tracing::instrument(skip_all, fields(stream = %request.get_ref().stream, aggregate = %request.get_ref().aggregate))]
    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let rx = self.subscribe_inner(request).await?;
        Ok(Response::new(Box::pin(rx)))
    }
}
