//! Trust through the gateway's `TrustService`: [`Agent::endorse`] signs an
//! `agent.endorsed` on the agent's own chain (retried on a moved chain head
//! like every action); [`AmaiClient::trust`] is public; the history, alerts,
//! report and explanations are signed reads (the agent itself or an
//! operator), so use an [`Agent`]'s client or [`AmaiClient::with_signer`].
//!
//! Refusals carry their kind ([`crate::ErrorKind`]): `SelfEndorsement`,
//! `EndorseeNotFound`, `EndorseeNotAnAgent`, `EndorseeRevoked`,
//! `AlreadyEndorsed`; `WorkerUnavailable` when the trust worker does not
//! answer (nothing was appended); `ReadNotPermitted` for someone else's trust
//! data; `NotFound` for an unknown agent or delta (also someone else's delta).

use amai_bus::envelope::EventDraft;
use amai_bus::proto::{self, payload::Kind, SignedEvent};
use amai_proto::wire::{
    EXPLAIN_TRUST_METHOD, GET_TRUST_HISTORY_METHOD, GET_TRUST_REPORT_METHOD,
    LIST_TRUST_ALERTS_METHOD,
};

use crate::{Agent, AmaiClient, ClientError};

/// Whether `s` is shaped like an identity id (32 lowercase hex characters).
fn is_identity_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Agent {
    /// Vouches for `endorsee` (an identity id, or a registered name, looked
    /// up first) with `statement` (at most 512 bytes): appends a signed
    /// `agent.endorsed` to this agent's chain through `TrustService.Endorse`.
    /// Re-signs and retries when the chain head moved; re-sends the same
    /// event when the gateway was unavailable (idempotent: `duplicate`).
    pub async fn endorse(
        &self,
        endorsee: &str,
        statement: &str,
    ) -> Result<proto::AppendResponse, ClientError> {
        let endorsee = self.client().resolve_id(endorsee).await?;
        let aggregate = self.aggregate()?;
        let (keys, id) = (self.keys().clone(), self.id().to_string());
        let statement = statement.to_string();
        self.retry_signed(
            |seq, hash| {
                EventDraft::new(
                    aggregate.clone(),
                    Kind::AgentEndorsed(proto::AgentEndorsed {
                        endorsee: endorsee.clone(),
                        statement: statement.clone(),
                    }),
                )
                .after(seq, hash)
                .sign(&keys, &id)
            },
            |event| self.endorse_call(event),
        )
        .await
    }

    async fn endorse_call(
        &self,
        event: SignedEvent,
    ) -> Result<proto::AppendResponse, tonic::Status> {
        self.client()
            .trust_service()
            .endorse(proto::EndorseCommand { event: Some(event) })
            .await
            .map(tonic::Response::into_inner)
    }
}

impl AmaiClient {
    /// The identity id of `id_or_name`: itself when shaped like an id, else
    /// the registered name's id (one public `GetIdentity`).
    pub async fn resolve_id(&self, id_or_name: &str) -> Result<String, ClientError> {
        if is_identity_id(id_or_name) {
            return Ok(id_or_name.to_string());
        }
        Ok(self.get_identity(id_or_name).await?.id)
    }

    /// An agent's live trust: score, components, the 10 latest deltas, its
    /// behavioural fingerprint (public: no signature needed).
    pub async fn trust(&self, agent_id: &str) -> Result<proto::TrustSummary, ClientError> {
        self.trust_request(proto::GetTrustRequest {
            agent_id: agent_id.to_string(),
            last: 0,
            min_position: None,
        })
        .await
    }

    /// `GetTrust` with every field: how many latest deltas (`last`, at most
    /// 100) and a `min_position` to read one's own writes.
    pub async fn trust_request(
        &self,
        req: proto::GetTrustRequest,
    ) -> Result<proto::TrustSummary, ClientError> {
        Ok(self.trust_service().get_trust(req).await?.into_inner())
    }

    /// One page of an agent's trust deltas after trust sequence `after_seq`,
    /// oldest first (`limit` 0 = 50, at most 500). Signed read: the agent
    /// itself or an operator.
    pub async fn trust_history(
        &self,
        agent_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<proto::TrustHistoryPage, ClientError> {
        let req = self
            .signed_request(
                GET_TRUST_HISTORY_METHOD,
                proto::GetTrustHistoryRequest {
                    agent_id: agent_id.to_string(),
                    after_seq,
                    limit,
                },
            )
            .await?;
        Ok(self.trust_service().get_history(req).await?.into_inner())
    }

    /// Trust alerts, newest first. An empty `filter.agent_id` lists the
    /// signer's own (every agent's for an operator). Signed read.
    pub async fn trust_alerts(
        &self,
        filter: proto::ListTrustAlertsRequest,
    ) -> Result<proto::TrustAlertList, ClientError> {
        let req = self
            .signed_request(LIST_TRUST_ALERTS_METHOD, filter)
            .await?;
        Ok(self.trust_service().list_alerts(req).await?.into_inner())
    }

    /// A markdown report on an agent. Signed read: the agent itself or an
    /// operator.
    pub async fn trust_report(&self, agent_id: &str) -> Result<proto::TrustReport, ClientError> {
        let req = self
            .signed_request(
                GET_TRUST_REPORT_METHOD,
                proto::GetTrustReportRequest {
                    agent_id: agent_id.to_string(),
                },
            )
            .await?;
        Ok(self.trust_service().get_report(req).await?.into_inner())
    }

    /// One trust delta or alert (`event_id`) and the evidence events it cites
    /// that the signer may read. Signed read: the delta's agent or an
    /// operator; anyone else gets `NotFound`, as for an unknown id.
    pub async fn explain_trust(
        &self,
        event_id: &str,
    ) -> Result<proto::TrustExplanation, ClientError> {
        let req = self
            .signed_request(
                EXPLAIN_TRUST_METHOD,
                proto::ExplainTrustRequest {
                    event_id: event_id.to_string(),
                },
            )
            .await?;
        Ok(self.trust_service().explain(req).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::{Code, Status};
    use tonic_types::StatusExt;

    use crate::error::error_details;
    use crate::{ClientError, ErrorKind};

    /// A status as the gateway sends it (code + `ErrorInfo` reason).
    fn gateway_status(code: Code, reason: &str) -> Status {
        let kind = ErrorKind::from_reason(reason);
        Status::with_error_details(code, "m", error_details(kind, HashMap::new()))
    }

    #[test]
    fn trust_refusals_come_back_as_their_kinds() {
        let table = [
            (
                Code::InvalidArgument,
                "SELF_ENDORSEMENT",
                ErrorKind::SelfEndorsement,
            ),
            (
                Code::NotFound,
                "ENDORSEE_NOT_FOUND",
                ErrorKind::EndorseeNotFound,
            ),
            (
                Code::InvalidArgument,
                "ENDORSEE_NOT_AN_AGENT",
                ErrorKind::EndorseeNotAnAgent,
            ),
            (
                Code::FailedPrecondition,
                "ENDORSEE_REVOKED",
                ErrorKind::EndorseeRevoked,
            ),
            (
                Code::AlreadyExists,
                "ALREADY_ENDORSED",
                ErrorKind::AlreadyEndorsed,
            ),
        ];
        for (code, reason, kind) in table {
            let err = ClientError::from(gateway_status(code, reason));
            assert_eq!(err.kind(), kind, "{reason}");
            assert_eq!(err.code(), Some(code), "{reason}");
            assert_eq!(kind.as_str(), reason);
        }
        // A revoked endorsee is final: the SDK's retry loop re-signs only on
        // a moved chain head.
        let err = ClientError::from(gateway_status(Code::FailedPrecondition, "ENDORSEE_REVOKED"));
        assert_ne!(err.kind(), ErrorKind::Conflict);
        assert!(
            !ClientError::from(gateway_status(Code::AlreadyExists, "ALREADY_ENDORSED"))
                .is_retryable()
        );
    }

    #[test]
    fn ids_are_told_from_names() {
        assert!(super::is_identity_id("0123456789abcdef0123456789abcdef"));
        assert!(!super::is_identity_id("alice"));
        assert!(!super::is_identity_id("0123456789ABCDEF0123456789ABCDEF"));
    }
}
