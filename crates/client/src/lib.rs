//! # amai-client
//!
//! The Rust SDK of Amai. [`AmaiClient`] talks to the gateway over gRPC;
//! an [`Agent`] is a handle holding an identity's keys that builds and signs its
//! events locally (the gateway never sees a secret key), retries appends that lose
//! a race for the chain head, sends and reads sealed messages, and verifies chains
//! auditor-style without trusting the server.
//!
//! - [`request_auth`] — request signatures, shared with the gateway;
//! - [`error`] — [`ClientError`];
//! - [`agent`] — [`Agent`];
//! - [`audit`] — client-side chain verification;
//! - [`llm`] — LLM recording sessions (commands on an [`Agent`], signed reads);
//! - [`jail`] — jails (commands on an [`Agent`], signed reads);
//! - [`trust`] — endorsements ([`Agent::endorse`]), scores, history, alerts,
//!   reports and explanations;
//! - [`read_grant`] — operator grants that let a reader identity read streams.
//!
//! Reads (`ReadChain`, `GetEvent`, `GetChainHead`, `Subscribe`, `GetBlob`,
//! `VerifyChain`) are signed requests: give the client a signer with
//! [`AmaiClient::with_signer`] (an [`Agent`]'s client signs as that agent).
#![warn(missing_docs)]

pub mod agent;
pub mod audit;
pub mod catalog;
pub mod checkpoints;
pub mod error;
pub mod jail;
pub mod llm;
pub use amai_bus::read_grant;
pub mod request_auth;
pub mod trust;

use ed25519_dalek::VerifyingKey;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use amai_bus::keys::{IdentityId, IdentityKeys};
use amai_bus::proto::{
    self, agent_service_client::AgentServiceClient, audit_service_client::AuditServiceClient,
    blob_service_client::BlobServiceClient, event_service_client::EventServiceClient,
    identity_service_client::IdentityServiceClient, jail_service_client::JailServiceClient,
    llm_service_client::LlmServiceClient, trust_service_client::TrustServiceClient,
};
use amai_bus::store::ChainHeadInfo;
use amai_bus::{Aggregate, EventHash};
use sha2::Digest;

pub use agent::{Agent, InboxMessage, InboxPage, RefusedMessage};
pub use amai_bus::chain::ChainReport;
pub use error::{ClientError, ErrorKind};
pub use jail::JailLogs;
pub use llm::{LlmExport, SessionKey};

pub use amai_proto::wire::{
    CHAIN_HEAD_METADATA, EXPORT_LLM_SESSION_METHOD, GET_BLOB_METHOD, GET_CHAIN_HEAD_METHOD,
    GET_EVENT_METHOD, GET_LLM_RECORDING_METHOD, GET_LLM_SESSION_METHOD, LIST_INBOX_METHOD,
    LIST_LLM_RECORDINGS_METHOD, LIST_LLM_SESSIONS_METHOD, PUT_BLOB_METHOD, READ_CHAIN_METHOD,
    SUBSCRIBE_METHOD, VERIFY_CHAIN_METHOD,
};

/// Largest gRPC message the SDK decodes (ReadChain pages of up to 1000 events).
const MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;

/// A connection to an Amai gateway. Cheap to clone (channels are shared).
#[derive(Clone, Debug)]
pub struct AmaiClient {
    identity: IdentityServiceClient<Channel>,
    events: EventServiceClient<Channel>,
    blobs: BlobServiceClient<Channel>,
    llm: LlmServiceClient<Channel>,
    jail: JailServiceClient<Channel>,
    trust: TrustServiceClient<Channel>,
    audit: AuditServiceClient<Channel>,
    catalog: AgentServiceClient<Channel>,
    trust_root: Option<VerifyingKey>,
    deployment: std::sync::Arc<tokio::sync::OnceCell<proto::Deployment>>,
    signer: Option<Signer>,
}

/// Who signs the client's read requests.
#[derive(Clone, Debug)]
struct Signer {
    id: IdentityId,
    keys: IdentityKeys,
}

impl AmaiClient {
    /// Connects to the gateway at `url` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(url: impl Into<String>) -> Result<Self, ClientError> {
        let url = url.into();
        let endpoint =
            Endpoint::from_shared(url.clone()).map_err(|source| ClientError::Connect {
                url: url.clone(),
                source,
            })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            identity: IdentityServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_DECODING_BYTES),
            events: EventServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_DECODING_BYTES),
            blobs: BlobServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_DECODING_BYTES),
            llm: LlmServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_DECODING_BYTES),
            jail: JailServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_DECODING_BYTES),
            trust: TrustServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_DECODING_BYTES),
            catalog: AgentServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_DECODING_BYTES),
            audit: AuditServiceClient::new(channel).max_decoding_message_size(MAX_DECODING_BYTES),
            trust_root: None,
            deployment: Default::default(),
            signer: None,
        }
    }

    /// Signs read requests as identity `id` with its current `keys`. Without a
    /// signer, reads are sent unsigned and the gateway refuses them
    /// (`UNAUTHENTICATED`, `SIGNATURE_MISSING`).
    pub fn with_signer(mut self, id: impl Into<IdentityId>, keys: IdentityKeys) -> Self {
        self.signer = Some(Signer {
            id: id.into(),
            keys,
        });
        self
    }

    /// The identity that signs this client's reads, if any.
    pub fn signer_id(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.id.as_str())
    }

    /// `message` as a request for `method`, carrying a request signature when
    /// the client has a signer.
    pub async fn signed_request<M: Message>(
        &self,
        method: &str,
        message: M,
    ) -> Result<tonic::Request<M>, ClientError> {
        let mut request = tonic::Request::new(message);
        if let Some(signer) = &self.signer {
            let deployment = self.deployment_id().await?;
            let sig = request_auth::sign_request(
                &signer.keys,
                &signer.id,
                &deployment,
                method,
                request.get_ref(),
            );
            request_auth::apply(&sig, request.metadata_mut());
        }
        Ok(request)
    }

    /// The deployment id request signatures cover: from the trust root when one
    /// was set, else asked from the gateway once (`EventService.GetDeployment`).
    pub async fn deployment_id(&self) -> Result<String, ClientError> {
        if let Some(root) = &self.trust_root {
            return Ok(hex::encode(root.as_bytes()));
        }
        Ok(self.deployment().await?.deployment_id.clone())
    }

    async fn deployment(&self) -> Result<&proto::Deployment, ClientError> {
        self.deployment
            .get_or_try_init(|| async {
                Ok::<_, ClientError>(
                    self.events
                        .clone()
                        .get_deployment(proto::GetDeploymentRequest {})
                        .await?
                        .into_inner(),
                )
            })
            .await
    }

    /// The trust root verification judges endorsements against: the one set
    /// with [`AmaiClient::with_trust_root`] (an auditor's own copy), else the
    /// one the gateway names (`GetDeployment`), which trusts the gateway for it.
    pub async fn trust_root(&self) -> Result<Option<VerifyingKey>, ClientError> {
        if let Some(root) = self.trust_root {
            return Ok(Some(root));
        }
        let d = self.deployment().await?;
        Ok(amai_bus::keys::verifying_key(&d.trust_root))
    }

    /// Sets the deployment's trust root, used by [`AmaiClient::verify_chain`] to
    /// check operator and service endorsements.
    pub fn with_trust_root(mut self, key: VerifyingKey) -> Self {
        self.trust_root = Some(key);
        self
    }

    /// The raw `IdentityService` client.
    pub fn identity_service(&self) -> IdentityServiceClient<Channel> {
        self.identity.clone()
    }

    /// The raw `EventService` client.
    pub fn event_service(&self) -> EventServiceClient<Channel> {
        self.events.clone()
    }

    /// A handle for the identity whose genesis key is `keys` (new or never rotated).
    pub fn agent(&self, keys: IdentityKeys) -> Agent {
        Agent::new(self.clone(), keys.identity_id(), keys)
    }

    /// A handle for identity `id` currently signing with `keys` (after rotations).
    pub fn agent_with_id(&self, id: IdentityId, keys: IdentityKeys) -> Agent {
        Agent::new(self.clone(), id, keys)
    }

    /// The current head of `aggregate` (from JetStream, via the gateway).
    pub async fn chain_head(&self, aggregate: &Aggregate) -> Result<ChainHeadInfo, ClientError> {
        let req = self
            .signed_request(
                GET_CHAIN_HEAD_METHOD,
                proto::GetChainHeadRequest {
                    aggregate: aggregate.to_string(),
                },
            )
            .await?;
        let head = self.events.clone().get_chain_head(req).await?.into_inner();
        head_from_proto(&head)
    }

    /// Appends any signed event (`EventService.Append`).
    pub async fn append(
        &self,
        event: proto::SignedEvent,
    ) -> Result<proto::AppendResponse, ClientError> {
        Ok(self
            .events
            .clone()
            .append(proto::AppendRequest { event: Some(event) })
            .await?
            .into_inner())
    }

    /// One page of `aggregate` from aggregate sequence `from` (`limit` 0 = server default).
    pub async fn read_chain(
        &self,
        aggregate: &Aggregate,
        from: u64,
        limit: u32,
    ) -> Result<proto::ReadChainResponse, ClientError> {
        self.read_chain_from(aggregate, from, limit, 0).await
    }

    /// A page of a chain, continuing a scan at `scan_from_stream_seq` (a previous
    /// page's `next_stream_seq`), which keeps paging a long chain linear.
    pub async fn read_chain_from(
        &self,
        aggregate: &Aggregate,
        from: u64,
        limit: u32,
        scan_from_stream_seq: u64,
    ) -> Result<proto::ReadChainResponse, ClientError> {
        self.read_page(aggregate, from, limit, scan_from_stream_seq, false)
            .await
    }

    /// A page of the key events only (`agent.registered`, `agent.key_rotated`,
    /// `agent.revoked`) of an agent chain: what any authenticated identity may
    /// read of someone else's chain. A page may be empty while
    /// `next_aggregate_seq` is not 0.
    pub async fn read_key_events(
        &self,
        aggregate: &Aggregate,
        from: u64,
        limit: u32,
        scan_from_stream_seq: u64,
    ) -> Result<proto::ReadChainResponse, ClientError> {
        self.read_page(aggregate, from, limit, scan_from_stream_seq, true)
            .await
    }

    async fn read_page(
        &self,
        aggregate: &Aggregate,
        from: u64,
        limit: u32,
        scan_from_stream_seq: u64,
        key_events_only: bool,
    ) -> Result<proto::ReadChainResponse, ClientError> {
        self.read_chain_request(proto::ReadChainRequest {
            aggregate: aggregate.to_string(),
            from_aggregate_seq: from,
            limit,
            scan_from_stream_seq,
            key_events_only,
        })
        .await
    }

    async fn read_chain_request(
        &self,
        req: proto::ReadChainRequest,
    ) -> Result<proto::ReadChainResponse, ClientError> {
        let req = self.signed_request(READ_CHAIN_METHOD, req).await?;
        Ok(self.events.clone().read_chain(req).await?.into_inner())
    }

    /// An event by position.
    pub async fn get_event(
        &self,
        position: amai_bus::Position,
    ) -> Result<proto::StoredEvent, ClientError> {
        let req = self
            .signed_request(
                GET_EVENT_METHOD,
                proto::GetEventRequest {
                    position: Some(position.into()),
                },
            )
            .await?;
        Ok(self.events.clone().get_event(req).await?.into_inner())
    }

    /// Live and historical events (`EventService.Subscribe`). Events the
    /// signer may not read are not delivered (see docs/architecture.md).
    pub async fn subscribe(
        &self,
        req: proto::SubscribeRequest,
    ) -> Result<tonic::Streaming<proto::StoredEvent>, ClientError> {
        let req = self.signed_request(SUBSCRIBE_METHOD, req).await?;
        Ok(self.events.clone().subscribe(req).await?.into_inner())
    }

    /// An identity by id (32 lowercase hex) or name (needs the identity worker).
    pub async fn get_identity(&self, id_or_name: &str) -> Result<proto::Identity, ClientError> {
        Ok(self
            .identity
            .clone()
            .get_identity(selector(id_or_name))
            .await?
            .into_inner())
    }

    /// An identity's current keys and key history, by id or name (needs the identity worker).
    pub async fn get_keys(&self, id_or_name: &str) -> Result<proto::Keys, ClientError> {
        Ok(self
            .identity
            .clone()
            .get_keys(selector(id_or_name))
            .await?
            .into_inner())
    }

    /// Deployment statistics (needs the identity worker).
    pub async fn stats(&self) -> Result<proto::Stats, ClientError> {
        Ok(self
            .identity
            .clone()
            .get_stats(proto::GetStatsRequest { min_position: None })
            .await?
            .into_inner())
    }

    /// Events the identity projection refused because they failed verification,
    /// oldest first (`limit` 0 = 100).
    pub async fn integrity_violations(
        &self,
        limit: u32,
    ) -> Result<proto::ListIntegrityViolationsResponse, ClientError> {
        Ok(self
            .identity
            .clone()
            .list_integrity_violations(proto::ListIntegrityViolationsRequest {
                limit,
                min_position: None,
            })
            .await?
            .into_inner())
    }

    /// A blob by digest, verified against it here (the server is not trusted).
    pub async fn get_blob(&self, sha256: &[u8; 32]) -> Result<Vec<u8>, ClientError> {
        let req = self
            .signed_request(
                GET_BLOB_METHOD,
                proto::GetBlobRequest {
                    sha256: sha256.to_vec(),
                },
            )
            .await?;
        let data = self.blobs.clone().get_blob(req).await?.into_inner().data;
        let got: [u8; 32] = sha2::Sha256::digest(&data).into();
        if &got != sha256 {
            return Err(ClientError::Integrity(format!(
                "blob {} came back with digest {}",
                hex::encode(sha256),
                hex::encode(got)
            )));
        }
        Ok(data)
    }

    /// The raw `LlmService` client.
    pub fn llm_service(&self) -> LlmServiceClient<Channel> {
        self.llm.clone()
    }

    /// The raw `JailService` client.
    pub fn jail_service(&self) -> JailServiceClient<Channel> {
        self.jail.clone()
    }

    /// The raw `TrustService` client.
    pub fn trust_service(&self) -> TrustServiceClient<Channel> {
        self.trust.clone()
    }

    /// The raw `AuditService` client.
    pub fn audit_service(&self) -> AuditServiceClient<Channel> {
        self.audit.clone()
    }

    /// The raw `AgentService` client (the catalogue).
    pub fn agent_service(&self) -> AgentServiceClient<Channel> {
        self.catalog.clone()
    }

    /// The raw `BlobService` client.
    pub fn blob_service(&self) -> BlobServiceClient<Channel> {
        self.blobs.clone()
    }

    /// Server-side verification of a chain (convenience; prefer [`AmaiClient::verify_chain`]).
    pub async fn verify_chain_on_server(
        &self,
        aggregate: &Aggregate,
    ) -> Result<proto::ChainReport, ClientError> {
        let req = self
            .signed_request(
                VERIFY_CHAIN_METHOD,
                proto::VerifyChainRequest {
                    aggregate: aggregate.to_string(),
                },
            )
            .await?;
        Ok(self.identity.clone().verify_chain(req).await?.into_inner())
    }

    /// Verifies `aggregate` locally, auditor-style: reads every event through
    /// `ReadChain`, resolves foreign signers by reading and folding their own
    /// chains, and checks signatures, hash links, sequences and key validity with
    /// [`amai_bus::chain::verify_events`]. Nothing the server says is trusted
    /// except the bytes of the events.
    pub async fn verify_chain(&self, aggregate: &Aggregate) -> Result<ChainReport, ClientError> {
        audit::verify_chain(self, aggregate).await
    }
}

/// `GetIdentityRequest` for an id (32 lowercase hex characters) or else a name.
pub fn selector(id_or_name: &str) -> proto::GetIdentityRequest {
    use proto::get_identity_request::Selector;
    let is_id = id_or_name.len() == 32
        && id_or_name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let selector = if is_id {
        Selector::Id(id_or_name.to_string())
    } else {
        Selector::Name(id_or_name.to_string())
    };
    proto::GetIdentityRequest {
        selector: Some(selector),
        min_position: None,
    }
}

/// Converts a proto `ChainHead`.
pub fn head_from_proto(head: &proto::ChainHead) -> Result<ChainHeadInfo, ClientError> {
    let aggregate: Aggregate = head
        .aggregate
        .parse()
        .map_err(|e| ClientError::Integrity(format!("chain head names a bad aggregate: {e}")))?;
    let hash: EventHash = head
        .hash
        .as_slice()
        .try_into()
        .map_err(|_| ClientError::Integrity("chain head hash must be 32 bytes".into()))?;
    Ok(ChainHeadInfo {
        aggregate,
        aggregate_seq: head.aggregate_seq,
        hash,
        stream_seq: head.position.as_ref().map_or(0, |p| p.seq),
    })
}

/// The head carried by a conflict status ([`CHAIN_HEAD_METADATA`]), if any.
pub fn conflict_head(status: &tonic::Status) -> Option<ChainHeadInfo> {
    let bin = status
        .metadata()
        .get_bin(CHAIN_HEAD_METADATA)?
        .to_bytes()
        .ok()?;
    head_from_proto(&proto::ChainHead::decode(bin.as_ref()).ok()?).ok()
}
