//! `TrustService`: endorsements as commands, and the trust role's answers
//! (`amai.query.trust.*`) as reads. A thin adapter: the trust role computes
//! and answers without asking who asks; this module decides who may ask.
//!
//! `Endorse` carries the endorser's signed `agent.endorsed` action for its own
//! chain. It is validated completely before anything is appended (a refusal
//! leaves every stream as it was), cheap checks first:
//!
//! 1. the payload is an `agent.endorsed` (`WRONG_COMMAND`) on the actor's own
//!    chain, naming another identity (`SELF_ENDORSEMENT`), a well-formed
//!    endorsee id and a statement of at most 512 bytes (`INVALID_ARGUMENT`);
//! 2. every append check of [`amai_bus::EventStore::validate`] (the endorser's
//!    current key, unrevoked, its own chain, the position): whoever did not
//!    sign with the endorser's current key learns nothing about its
//!    endorsements; a re-sent event already in the chain skips step 3 and is
//!    answered idempotently (`duplicate`);
//! 3. the endorsee, asked of the identity role (and, when the projection does
//!    not know it yet, read from its chain): registered
//!    (`ENDORSEE_NOT_FOUND`), an agent (`ENDORSEE_NOT_AN_AGENT`), not revoked
//!    (`ENDORSEE_REVOKED`); then, asked of the trust role, not endorsed by this
//!    endorser before (`ALREADY_ENDORSED`). A trust role that does not answer
//!    refuses the command (`UNAVAILABLE`, `WORKER_UNAVAILABLE`): nothing is
//!    appended blindly.
//!
//! Then the event is appended like `EventService.Append` (same errors).
//!
//! Reads: `GetTrust` is public (scores are what discovery shows). `GetHistory`,
//! `GetReport` and `Explain` are signed requests by the agent itself or a
//! reader of the whole `AMAI_TRUST` stream (operators, readers granted it);
//! anyone else gets `READ_NOT_PERMITTED`, decided before the role is asked. An
//! `Explain` names a delta, not an agent, so the role is asked first and the
//! delta's agent checked before anything is returned: a stranger gets the same
//! `NOT_FOUND` as an unknown id. Its evidence events are filtered through the
//! read rule ([`crate::access`]; jail and LLM session evidence by the recorded
//! owner). `ListAlerts` lists the caller's own alerts (an empty `agent_id`
//! means its own); operators list anyone's or everyone's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use amai_bus::envelope::VerifiedEvent;
use amai_bus::proto::{self, payload::Kind, trust_service_server::TrustService, IdentityKind};
use amai_bus::query::{
    QueryCode, IDENTITY_GET, JAIL_GET, TRUST_ALERTS, TRUST_ENDORSEMENT, TRUST_EXPLAIN, TRUST_GET,
    TRUST_HISTORY, TRUST_REPORT,
};
use amai_bus::store::{AppendError, StoredEvent};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_proto::wire::{
    EXPLAIN_TRUST_METHOD, GET_TRUST_HISTORY_METHOD, GET_TRUST_REPORT_METHOD,
    LIST_TRUST_ALERTS_METHOD,
};

use crate::access::Reader;
use crate::identity::append_response;
use crate::status::ApiError;
use crate::Shared;

/// The stream of trust deltas and alerts.
pub const TRUST_STREAM: &str = "AMAI_TRUST";
/// Default number of latest deltas `GetTrust` includes.
pub const DEFAULT_LAST: u32 = 10;
/// Most latest deltas `GetTrust` includes.
pub const MAX_LAST: u32 = 100;
/// Default `GetHistory` page and `ListAlerts` size.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest `GetHistory` page and `ListAlerts` answer.
pub const MAX_PAGE: u32 = 500;
/// How long `IdentityService.GetIdentity` waits for the live score before it
/// answers with the identity projection's value.
pub const LIVE_SCORE_TIMEOUT: Duration = Duration::from_millis(250);

/// The `TrustService` implementation.
pub struct TrustSvc {
    shared: Arc<Shared>,
}

/// The endorsement `ev` carries, with its own rules checked (no I/O).
fn endorsement(ev: &VerifiedEvent) -> Result<&proto::AgentEndorsed, ApiError> {
    let Kind::AgentEndorsed(e) = &ev.payload else {
        return Err(ApiError::WrongCommand(format!(
            "Endorse takes an agent.endorsed event, this is {}; use EventService.Append for other actions",
            ev.event_type()
        )));
    };
    let own_chain = Aggregate::agent(ev.actor()).ok();
    if own_chain.as_ref() != Some(&ev.aggregate) {
        return Err(ApiError::InvalidArgument(format!(
            "agent.endorsed goes on the endorser's own chain agent/{}, not {}",
            ev.actor(),
            ev.aggregate
        )));
    }
    if e.endorsee == ev.actor() {
        return Err(ApiError::SelfEndorsement(e.endorsee.clone()));
    }
    amai_bus::subjects::validate_id(&e.endorsee)
        .map_err(|err| ApiError::InvalidArgument(format!("endorsee: {err}")))?;
    let max = amai_bus::identity::MAX_ENDORSEMENT_STATEMENT_BYTES;
    if e.statement.len() > max {
        return Err(ApiError::InvalidArgument(format!(
            "the statement is {} bytes; at most {max} are allowed",
            e.statement.len()
        )));
    }
    Ok(e)
}

/// An agent id a read names (refused before any query).
fn check_agent_id(agent_id: &str) -> Result<(), ApiError> {
    if agent_id.is_empty() {
        return Err(ApiError::InvalidArgument(
            "agent_id is required: the identity id (32 hex characters)".into(),
        ));
    }
    amai_bus::subjects::validate_id(agent_id)
        .map_err(|e| ApiError::InvalidArgument(format!("agent_id: {e}")))
}

/// A page size: `0` is `default`, anything larger than `max` is `max`.
fn bounded(limit: u32, default: u32, max: u32) -> u32 {
    if limit == 0 {
        default
    } else {
        limit.min(max)
    }
}

/// The agent a trust delta is about (`None` when it names none).
fn delta_agent(delta: &proto::TrustDelta) -> Option<&str> {
    match &delta.kind {
        Some(proto::trust_delta::Kind::Adjusted(a)) => Some(&a.agent_id),
        Some(proto::trust_delta::Kind::Alert(a)) => Some(&a.agent_id),
        None => None,
    }
    .filter(|a| !a.is_empty())
    .map(String::as_str)
}

/// Whether `reader` reads `agent_id`'s trust data: its own, or the whole
/// stream (operators, readers granted `AMAI_TRUST`).
fn reads_trust_of(reader: &Reader, agent_id: &str) -> bool {
    reader.id == agent_id || reader.reads_all_of(TRUST_STREAM)
}

fn check_reads_trust_of(reader: &Reader, agent_id: &str, what: &str) -> Result<(), ApiError> {
    if reads_trust_of(reader, agent_id) {
        Ok(())
    } else {
        Err(ApiError::ReadNotPermitted {
            actor: reader.id.clone(),
            what: format!("the trust {what} of {agent_id}"),
        })
    }
}

/// The live score of `agent_id` from the trust role, if it answers within
/// [`LIVE_SCORE_TIMEOUT`] (used by `IdentityService.GetIdentity`).
pub(crate) async fn live_score(shared: &Shared, agent_id: &str) -> Option<f64> {
    let req = proto::GetTrustRequest {
        agent_id: agent_id.to_string(),
        last: 1,
        min_position: None,
    };
    let timeout = LIVE_SCORE_TIMEOUT.min(shared.query_timeout);
    match amai_bus::query::request::<_, proto::TrustSummary>(&shared.nats, TRUST_GET, &req, timeout)
        .await
    {
        Ok(summary) => Some(summary.score),
        Err(e) => {
            tracing::debug!(agent_id, error = %e, "no live trust score; the identity projection's value is shown");
            None
        }
    }
}

/// How long a report may take: longer than the trust role's narrative
/// timeout plus its wait for the llm role to know the session.
const REPORT_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

impl TrustSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Validates an endorsement completely, then appends it (also what
    /// `EventService.Append` does with an `agent.endorsed`).
    pub(crate) async fn endorse_checked(
        &self,
        command: proto::EndorseCommand,
    ) -> Result<proto::AppendResponse, ApiError> {
        let event = command.event.ok_or_else(|| {
            ApiError::InvalidArgument(
                "event is required: the endorser's signed agent.endorsed action".into(),
            )
        })?;
        self.shared.check_size(&event)?;
        let ev = VerifiedEvent::from_signed(event.clone()).map_err(AppendError::from)?;
        let e = endorsement(&ev)?;
        let span = tracing::Span::current();
        span.record("actor", ev.actor());
        span.record("endorsee", e.endorsee.as_str());
        // The append checks first: whoever did not sign with the endorser's
        // current key learns nothing about its endorsements.
        let already = self.shared.store.validate(&ev).await?;
        if already.is_none() {
            self.check_endorsee(&e.endorsee).await?;
            self.check_not_endorsed(ev.actor(), &e.endorsee).await?;
        }
        let out = self.shared.store.append(event).await?;
        Ok(append_response(out))
    }

    /// The endorsee is a registered, unrevoked agent (asked of the identity
    /// role; an identity it does not know yet is looked up in its chain).
    async fn check_endorsee(&self, endorsee: &str) -> Result<(), ApiError> {
        use proto::get_identity_request::Selector;
        let req = proto::GetIdentityRequest {
            selector: Some(Selector::Id(endorsee.to_string())),
            min_position: None,
        };
        let (kind, revoked) = match self
            .shared
            .query::<_, proto::Identity>(IDENTITY_GET, &req)
            .await
        {
            Ok(identity) => (
                amai_bus::identity::identity_kind(identity.kind),
                identity.revoked,
            ),
            // The projection may not have applied a registration of a moment
            // ago: the endorsee's chain decides before a refusal.
            Err(ApiError::Query(e)) if e.code == QueryCode::NotFound => {
                match self.shared.store.identity_state(endorsee).await {
                    Ok(state) => (state.kind, state.revoked.is_some()),
                    Err(amai_bus::store::ReadError::Unavailable(m)) => {
                        return Err(ApiError::Unavailable(format!(
                            "cannot read the endorsee's chain: {m}"
                        )))
                    }
                    Err(_) => return Err(ApiError::EndorseeNotFound(endorsee.to_string())),
                }
            }
            Err(e) => return Err(e),
        };
        if kind != IdentityKind::Agent {
            return Err(ApiError::EndorseeNotAnAgent {
                endorsee: endorsee.to_string(),
                kind: amai_bus::identity::kind_name(kind).to_string(),
            });
        }
        if revoked {
            return Err(ApiError::EndorseeRevoked(endorsee.to_string()));
        }
        Ok(())
    }

    /// The endorser has not endorsed the endorsee yet (asked of the trust
    /// role; no answer refuses).
    async fn check_not_endorsed(&self, endorser: &str, endorsee: &str) -> Result<(), ApiError> {
        let req = proto::TrustEndorsementQuery {
            endorser: endorser.to_string(),
            endorsee: endorsee.to_string(),
        };
        let answer: proto::TrustEndorsementAnswer =
            match self.shared.query(TRUST_ENDORSEMENT, &req).await {
                Err(ApiError::Query(e)) if e.code == QueryCode::Unavailable => {
                    return Err(ApiError::TrustWorkerUnavailable(e.message))
                }
                other => other?,
            };
        if answer.endorsed {
            return Err(ApiError::AlreadyEndorsed {
                endorser: endorser.to_string(),
                endorsee: endorsee.to_string(),
                event_id: answer.event_id,
            });
        }
        Ok(())
    }

    async fn get_trust_inner(
        &self,
        mut req: proto::GetTrustRequest,
    ) -> Result<proto::TrustSummary, ApiError> {
        check_agent_id(&req.agent_id)?;
        req.last = bounded(req.last, DEFAULT_LAST, MAX_LAST);
        self.shared.query(TRUST_GET, &req).await
    }

    async fn get_history_inner(
        &self,
        request: Request<proto::GetTrustHistoryRequest>,
    ) -> Result<proto::TrustHistoryPage, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                GET_TRUST_HISTORY_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let mut req = request.into_inner();
        check_agent_id(&req.agent_id)?;
        check_reads_trust_of(&reader, &req.agent_id, "history")?;
        req.limit = bounded(req.limit, DEFAULT_PAGE, MAX_PAGE);
        self.shared.query(TRUST_HISTORY, &req).await
    }

    async fn list_alerts_inner(
        &self,
        request: Request<proto::ListTrustAlertsRequest>,
    ) -> Result<proto::TrustAlertList, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                LIST_TRUST_ALERTS_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let mut req = request.into_inner();
        if !req.agent_id.is_empty() {
            check_agent_id(&req.agent_id)?;
        }
        req.agent_id = reader.listing_owner(TRUST_STREAM, &req.agent_id, "trust alerts")?;
        if proto::TrustSeverity::try_from(req.min_severity).is_err() {
            return Err(ApiError::InvalidArgument(format!(
                "min_severity {} is not a severity: INFO, WARNING or CRITICAL (UNSPECIFIED: all)",
                req.min_severity
            )));
        }
        if req.since_ms != 0 && req.until_ms != 0 && req.since_ms > req.until_ms {
            return Err(ApiError::InvalidArgument(format!(
                "since_ms {} is after until_ms {}",
                req.since_ms, req.until_ms
            )));
        }
        req.limit = bounded(req.limit, DEFAULT_PAGE, MAX_PAGE);
        self.shared.query(TRUST_ALERTS, &req).await
    }

    async fn get_report_inner(
        &self,
        request: Request<proto::GetTrustReportRequest>,
    ) -> Result<proto::TrustReport, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                GET_TRUST_REPORT_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let req = request.into_inner();
        check_agent_id(&req.agent_id)?;
        check_reads_trust_of(&reader, &req.agent_id, "report")?;
        // A narrated report waits for an LLM (the role falls back to the
        // model's report after its own narrative timeout, 30 s by default).
        let bound = self.shared.query_timeout.max(REPORT_QUERY_TIMEOUT);
        self.shared.query_within(TRUST_REPORT, &req, bound).await
    }

    async fn explain_inner(
        &self,
        request: Request<proto::ExplainTrustRequest>,
    ) -> Result<proto::TrustExplanation, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(EXPLAIN_TRUST_METHOD, request.metadata(), request.get_ref())
            .await?;
        let req = request.into_inner();
        if req.event_id.is_empty() {
            return Err(ApiError::InvalidArgument(
                "event_id is required: the id of a trust.adjusted or trust.alert_raised event"
                    .into(),
            ));
        }
        let not_found = || ApiError::TrustDeltaNotFound(req.event_id.clone());
        let mut explanation: proto::TrustExplanation =
            match self.shared.query(TRUST_EXPLAIN, &req).await {
                Err(ApiError::Query(e)) if e.code == QueryCode::NotFound => return Err(not_found()),
                other => other?,
            };
        // The delta's agent decides; a delta naming no agent is only for
        // those who read the whole stream. A stranger gets what an unknown id
        // gets.
        let agent = explanation.delta.as_ref().and_then(delta_agent);
        let allowed = match agent {
            Some(agent) => reads_trust_of(&reader, agent),
            None => reader.reads_all_of(TRUST_STREAM),
        };
        if !allowed {
            return Err(not_found());
        }
        explanation.evidence = self.visible_evidence(&reader, explanation.evidence).await;
        Ok(explanation)
    }

    /// The evidence events `reader` may read (the read rule of
    /// [`crate::access`]; jail and LLM session events by their recorded owner).
    /// An event that cannot be judged is withheld; its id stays in the delta.
    async fn visible_evidence(
        &self,
        reader: &Reader,
        evidence: Vec<proto::StoredEvent>,
    ) -> Vec<proto::StoredEvent> {
        let mut owners: HashMap<Aggregate, Option<String>> = HashMap::new();
        let mut out = Vec::with_capacity(evidence.len());
        for item in evidence {
            let Some(position) = item.position.clone() else {
                continue;
            };
            let Ok(aggregate) = Aggregate::from_subject(&item.subject) else {
                continue;
            };
            // The role cites copies of the events from its feed
            // (`AMAI_TRUST_FEED`, on their original subjects): the rule of
            // the stream the aggregate lives on decides.
            let stored = StoredEvent::new(
                amai_bus::Position::new(aggregate.stream(), position.seq),
                item.subject.clone(),
                0,
                item.raw.clone().into(),
                None,
            );
            if reader.sees(&stored) {
                out.push(item);
                continue;
            }
            if !matches!(aggregate.kind, AggregateKind::Llm | AggregateKind::Jail) {
                continue;
            }
            let owner = match owners.get(&aggregate) {
                Some(owner) => owner.clone(),
                None => {
                    let owner = self.recorded_owner(&aggregate).await;
                    owners.insert(aggregate, owner.clone());
                    owner
                }
            };
            if owner.as_deref() == Some(reader.id.as_str()) {
                out.push(item);
            }
        }
        out
    }

    /// The owner the llm or jail role records for `aggregate` (`None` when
    /// unknown or when the role does not answer: fail closed).
    async fn recorded_owner(&self, aggregate: &Aggregate) -> Option<String> {
        let owner = match aggregate.kind {
            AggregateKind::Llm => self.shared.recorded_owner(aggregate).await,
            AggregateKind::Jail => {
                let req = proto::GetJailRequest {
                    jail_id: aggregate.id.clone(),
                    min_position: None,
                    wait_done: false,
                };
                self.shared
                    .query::<_, proto::Jail>(JAIL_GET, &req)
                    .await
                    .map(|jail| Some(jail.owner))
            }
            _ => Ok(None),
        };
        owner.unwrap_or_else(|e| {
            tracing::debug!(%aggregate, error = %e, "evidence owner unknown; withheld");
            None
        })
    }
}

#[tonic::async_trait]
impl TrustService for TrustSvc {
    #[tracing::instrument(skip_all, fields(actor, endorsee))]
    async fn endorse(
        &self,
        request: Request<proto::EndorseCommand>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        Ok(Response::new(
            self.endorse_checked(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn get_trust(
        &self,
        request: Request<proto::GetTrustRequest>,
    ) -> Result<Response<proto::TrustSummary>, Status> {
        Ok(Response::new(
            self.get_trust_inner(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id, after = request.get_ref().after_seq))]
    async fn get_history(
        &self,
        request: Request<proto::GetTrustHistoryRequest>,
    ) -> Result<Response<proto::TrustHistoryPage>, Status> {
        Ok(Response::new(self.get_history_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn list_alerts(
        &self,
        request: Request<proto::ListTrustAlertsRequest>,
    ) -> Result<Response<proto::TrustAlertList>, Status> {
        Ok(Response::new(self.list_alerts_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn get_report(
        &self,
        request: Request<proto::GetTrustReportRequest>,
    ) -> Result<Response<proto::TrustReport>, Status> {
        Ok(Response::new(self.get_report_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(event_id = %request.get_ref().event_id))]
    async fn explain(
        &self,
        request: Request<proto::ExplainTrustRequest>,
    ) -> Result<Response<proto::TrustExplanation>, Status> {
        Ok(Response::new(self.explain_inner(request).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amai_bus::envelope::EventDraft;
    use amai_bus::IdentityKeys;
    use amai_proto::wire::ErrorKind;

    fn signed(keys: &IdentityKeys, payload: Kind) -> VerifiedEvent {
        let actor = keys.identity_id();
        let agg = Aggregate::agent(&actor).expect("aggregate");
        let ev = EventDraft::new(agg, payload).sign(keys, &actor);
        VerifiedEvent::from_signed(ev).expect("verified")
    }

    fn endorsed(endorsee: &str, statement: &str) -> Kind {
        Kind::AgentEndorsed(proto::AgentEndorsed {
            endorsee: endorsee.into(),
            statement: statement.into(),
        })
    }

    fn refused(ev: &VerifiedEvent) -> ErrorKind {
        let err = match endorsement(ev) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        amai_proto::wire::status_kind(&crate::status::to_status(err))
    }

    #[test]
    fn endorsements_keep_their_own_rules_before_any_io() {
        let keys = IdentityKeys::generate();
        let other = IdentityKeys::generate().identity_id();
        assert!(endorsement(&signed(&keys, endorsed(&other, "reliable"))).is_ok());
        assert_eq!(
            refused(&signed(&keys, endorsed(&keys.identity_id(), "me"))),
            ErrorKind::SelfEndorsement
        );
        assert_eq!(
            refused(&signed(&keys, endorsed("not an id!", ""))),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            refused(&signed(&keys, endorsed(&other, &"x".repeat(513)))),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            refused(&signed(
                &keys,
                Kind::AgentAction(proto::AgentAction::default())
            )),
            ErrorKind::WrongCommand
        );
    }

    #[test]
    fn trust_reads_are_the_agents_or_the_whole_streams_readers() {
        let me = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let other = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let reader = |operator, granted: &[&str]| Reader {
            id: me.into(),
            operator,
            granted: granted.iter().map(|s| s.to_string()).collect(),
        };
        assert!(reads_trust_of(&reader(false, &[]), me));
        assert!(!reads_trust_of(&reader(false, &[]), other));
        assert!(!reads_trust_of(&reader(false, &["AMAI_LLM"]), other));
        assert!(reads_trust_of(&reader(false, &[TRUST_STREAM]), other));
        assert!(reads_trust_of(&reader(true, &[]), other));
        assert_eq!(bounded(0, DEFAULT_PAGE, MAX_PAGE), DEFAULT_PAGE);
        assert_eq!(bounded(10_000, DEFAULT_PAGE, MAX_PAGE), MAX_PAGE);
    }
}
