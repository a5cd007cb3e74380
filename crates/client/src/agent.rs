//! [`Agent`]: an identity's keys plus its id, building and signing its events
//! locally and appending them through the gateway.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use prost::Message;
use rand_core::RngCore;
use tonic::Code;

use amai_bus::envelope::{hash_bytes, EventDraft, EventHash, VerifiedEvent};
use amai_bus::keys::{IdentityId, IdentityKeys};
use amai_bus::proto::{self, payload::Kind, IdentityKind, SignedEvent};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::Position;

use crate::request_auth::{self, RequestSignature};
use crate::{
    conflict_head, AmaiClient, ClientError, ErrorKind, LIST_INBOX_METHOD, PUT_BLOB_METHOD,
};

/// Default attempts of [`Agent::append_with_retry`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 40;

/// Which RPC carries an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Append,
    RotateKey,
    Revoke,
    SendMessage,
}

/// One page of an inbox.
#[derive(Clone, Debug)]
pub struct InboxPage {
    /// The messages, oldest first.
    pub messages: Vec<InboxMessage>,
    /// Entries that did not check out (not openable as from their sender, for
    /// this recipient, in that event: a copied or forged box), with why. They
    /// never stop the page: a sender cannot break someone's inbox.
    pub refused: Vec<RefusedMessage>,
    /// When more may follow: pass as `after_seq` for the next page.
    pub next_after_seq: Option<u64>,
}

/// An inbox entry the SDK refused to show.
#[derive(Clone, Debug)]
pub struct RefusedMessage {
    /// Where it is (`AMAI_AGENTS`).
    pub position: Position,
    /// Why it was refused.
    pub reason: String,
}

/// A decoded, opened inbox message.
#[derive(Clone, Debug)]
pub struct InboxMessage {
    /// Where the `agent.message_sent` event is (`AMAI_AGENTS`); page with its `seq`.
    pub position: Position,
    /// The event id.
    pub event_id: String,
    /// The sender's identity id (the event's actor; its signature verified).
    pub from: IdentityId,
    /// The key the sender signed with.
    pub sender_key: VerifyingKey,
    /// When the sender says it sent the message.
    pub sent_at: Option<amai_proto::prost_types::Timestamp>,
    /// The opened content.
    pub plaintext: Vec<u8>,
    /// Hash of the event.
    pub hash: EventHash,
}

/// A handle acting as one identity. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Agent {
    client: AmaiClient,
    id: IdentityId,
    keys: IdentityKeys,
    max_attempts: u32,
}

impl Agent {
    pub(crate) fn new(client: AmaiClient, id: IdentityId, keys: IdentityKeys) -> Self {
        Self {
            // The agent's reads (its chain head, chains it folds) are signed as it.
            client: client.with_signer(id.clone(), keys.clone()),
            id,
            keys,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Sets how many times [`Agent::append_with_retry`] tries under contention.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The identity id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The keys the handle currently signs with.
    pub fn keys(&self) -> &IdentityKeys {
        &self.keys
    }

    /// The client (its reads are signed as this identity).
    pub fn client(&self) -> &AmaiClient {
        &self.client
    }

    /// `agent/<id>`, this identity's own chain.
    pub fn aggregate(&self) -> Result<Aggregate, ClientError> {
        Aggregate::agent(&self.id).map_err(|e| ClientError::Input(e.to_string()))
    }

    /// Builds the self-signed genesis and the matching name claim, without sending.
    pub fn registration(
        &self,
        name: &str,
        kind: IdentityKind,
        metadata: BTreeMap<String, String>,
    ) -> Result<(SignedEvent, SignedEvent), ClientError> {
        let name_aggregate = Aggregate::new(AggregateKind::Name, name)
            .map_err(|e| ClientError::Input(e.to_string()))?;
        let genesis = EventDraft::new(
            self.aggregate()?,
            Kind::AgentRegistered(proto::AgentRegistered {
                name: name.to_string(),
                kind: kind as i32,
                signing_key: self.keys.public_key().as_bytes().to_vec(),
                x25519_key: self.keys.x25519_public().to_vec(),
                metadata,
                endorsement: None,
            }),
        )
        .sign(&self.keys, &self.id);
        let claim = EventDraft::new(
            name_aggregate,
            Kind::NameClaimed(proto::NameClaimed {
                name: name.to_string(),
                agent_id: self.id.clone(),
                genesis_hash: hash_bytes(&genesis.encode_to_vec()).to_vec(),
                genesis: genesis.encode_to_vec(),
            }),
        )
        .sign(&self.keys, &self.id);
        Ok((genesis, claim))
    }

    /// Registers the identity under `name`. Retrying after a failure is safe:
    /// both appends are idempotent, so a half-done registration completes.
    #[tracing::instrument(skip_all, fields(agent = %self.id, name))]
    pub async fn register(
        &self,
        name: &str,
        kind: IdentityKind,
        metadata: BTreeMap<String, String>,
    ) -> Result<proto::RegisterResponse, ClientError> {
        let (genesis, name_claim) = self.registration(name, kind, metadata)?;
        let req = proto::RegisterRequest {
            genesis: Some(genesis),
            name_claim: Some(name_claim),
        };
        Ok(self
            .client
            .identity
            .clone()
            .register(req)
            .await?
            .into_inner())
    }

    /// Appends a free-form action (`event_type`, JSON document) to the own chain.
    pub async fn append_action(
        &self,
        event_type: &str,
        json: &str,
    ) -> Result<proto::AppendResponse, ClientError> {
        let aggregate = self.aggregate()?;
        let (keys, id) = (self.keys.clone(), self.id.clone());
        self.append_with_retry(|seq, hash| {
            EventDraft::action(aggregate.clone(), event_type, json)
                .after(seq, hash)
                .sign(&keys, &id)
        })
        .await
    }

    /// Uploads `data` to the blob store (the request is signed with this
    /// identity's key) and returns its reference.
    pub async fn put_blob(&self, data: Vec<u8>) -> Result<proto::BlobRef, ClientError> {
        let req = proto::PutBlobRequest { data };
        let sig = self.sign_request(PUT_BLOB_METHOD, &req).await?;
        let mut request = tonic::Request::new(req);
        request_auth::apply(&sig, request.metadata_mut());
        Ok(self
            .client
            .blob_service()
            .put_blob(request)
            .await?
            .into_inner())
    }

    /// Appends a free-form action whose large content lives in the blob store:
    /// uploads `content`, then appends the action carrying its digest and size.
    pub async fn append_action_with_blob(
        &self,
        event_type: &str,
        json: &str,
        content: Vec<u8>,
    ) -> Result<(proto::BlobRef, proto::AppendResponse), ClientError> {
        let blob = self.put_blob(content).await?;
        let aggregate = self.aggregate()?;
        let (keys, id) = (self.keys.clone(), self.id.clone());
        let appended = self
            .append_with_retry(|seq, hash| {
                EventDraft::action(aggregate.clone(), event_type, json)
                    .with_blob(blob.clone())
                    .after(seq, hash)
                    .sign(&keys, &id)
            })
            .await?;
        Ok((blob, appended))
    }

    /// Appends the event `build(head_seq, head_hash)` returns to the own chain,
    /// re-reading the head, re-signing and retrying (bounded, jittered backoff)
    /// while another writer wins the race. `build` must sign a fresh event each
    /// call (a new id), positioned after the given head.
    pub async fn append_with_retry<F>(&self, build: F) -> Result<proto::AppendResponse, ClientError>
    where
        F: Fn(u64, EventHash) -> SignedEvent,
    {
        self.append_via(Rpc::Append, build).await
    }

    async fn append_via<F>(&self, rpc: Rpc, build: F) -> Result<proto::AppendResponse, ClientError>
    where
        F: Fn(u64, EventHash) -> SignedEvent,
    {
        self.retry_signed(build, |event| self.call(rpc, event))
            .await
    }

    /// Sends the event `build(head_seq, head_hash)` returns with `call`,
    /// re-signing after the head it read (or the one a conflict names) while
    /// another writer wins the race, and re-sending the very same event when
    /// the gateway was unavailable (it may have landed; re-sends are
    /// idempotent). Other refusals are returned at once.
    pub(crate) async fn retry_signed<T, F, C, Fut>(
        &self,
        build: F,
        call: C,
    ) -> Result<T, ClientError>
    where
        F: Fn(u64, EventHash) -> SignedEvent,
        C: Fn(SignedEvent) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let aggregate = self.aggregate()?;
        let mut head: Option<(u64, EventHash)> = None;
        let mut pending: Option<SignedEvent> = None;
        let mut last: Option<ClientError> = None;
        for attempt in 0..self.max_attempts {
            let event = match pending.take() {
                Some(e) => e,
                None => {
                    let (seq, hash) = match head.take() {
                        Some(h) => h,
                        None => {
                            let h = self.client.chain_head(&aggregate).await?;
                            (h.aggregate_seq, h.hash)
                        }
                    };
                    build(seq, hash)
                }
            };
            match call(event.clone()).await {
                Ok(r) => return Ok(r),
                // A moved head (older gateways send no reason); other failed
                // preconditions (a deleted session) are final.
                Err(status)
                    if status.code() == Code::FailedPrecondition
                        && matches!(
                            crate::error::status_kind(&status),
                            ErrorKind::Conflict | ErrorKind::Unknown
                        ) =>
                {
                    head = conflict_head(&status).map(|h| (h.aggregate_seq, h.hash));
                    tracing::debug!(attempt, agent = %self.id, "chain head moved; re-signing");
                    last = Some(status.into());
                }
                Err(status) if status.code() == Code::Unavailable => {
                    // The event may have landed: re-send the very same event, which
                    // is idempotent, rather than signing a new one.
                    pending = Some(event);
                    last = Some(status.into());
                }
                Err(status) => return Err(status.into()),
            }
            backoff(attempt).await;
        }
        let last = last.unwrap_or_else(|| ClientError::Input("no attempt was made".into()));
        Err(ClientError::Contention {
            attempts: self.max_attempts,
            last: Box::new(last),
        })
    }

    async fn call(
        &self,
        rpc: Rpc,
        event: SignedEvent,
    ) -> Result<proto::AppendResponse, tonic::Status> {
        let req = proto::AppendRequest { event: Some(event) };
        let resp = match rpc {
            Rpc::Append => self.client.events.clone().append(req).await,
            Rpc::RotateKey => self.client.identity.clone().rotate_key(req).await,
            Rpc::Revoke => self.client.identity.clone().revoke(req).await,
            Rpc::SendMessage => self.client.identity.clone().send_message(req).await,
        };
        resp.map(tonic::Response::into_inner)
    }

    /// Rotates to `new_keys`: appends `agent.key_rotated` signed by the current
    /// key; afterwards this handle signs with `new_keys`.
    pub async fn rotate_key(
        &mut self,
        new_keys: IdentityKeys,
        reason: &str,
    ) -> Result<proto::AppendResponse, ClientError> {
        let aggregate = self.aggregate()?;
        let (keys, id) = (self.keys.clone(), self.id.clone());
        let resp = self
            .append_via(Rpc::RotateKey, |seq, hash| {
                // The new key proves possession by signing this exact rotation.
                let payload = proto::AgentKeyRotated {
                    new_signing_key: new_keys.public_key().as_bytes().to_vec(),
                    new_x25519_key: new_keys.x25519_public().to_vec(),
                    reason: reason.to_string(),
                    new_key_proof: new_keys
                        .rotation_proof(&aggregate.to_string(), seq + 1, &keys.public_key())
                        .to_vec(),
                };
                EventDraft::new(aggregate.clone(), Kind::AgentKeyRotated(payload))
                    .after(seq, hash)
                    .sign(&keys, &id)
            })
            .await?;
        self.client = self
            .client
            .clone()
            .with_signer(self.id.clone(), new_keys.clone());
        self.keys = new_keys;
        Ok(resp)
    }

    /// Revokes this identity: nothing more can be appended to its chain.
    pub async fn revoke(&self, reason: &str) -> Result<proto::AppendResponse, ClientError> {
        let aggregate = self.aggregate()?;
        let (keys, id) = (self.keys.clone(), self.id.clone());
        self.append_via(Rpc::Revoke, |seq, hash| {
            EventDraft::new(
                aggregate.clone(),
                Kind::AgentRevoked(proto::AgentRevoked {
                    reason: reason.to_string(),
                }),
            )
            .after(seq, hash)
            .sign(&keys, &id)
        })
        .await
    }

    /// Sends `plaintext` to an identity (id or name). The recipient's X25519 key
    /// is taken from its own chain, read and verified client-side (never from a
    /// projection); the content is sealed with HPKE Auth mode from this
    /// identity's X25519 key, bound to sender, recipient and the event id, and
    /// `agent.message_sent` is appended to the sender's chain.
    pub async fn send_message(
        &self,
        to: &str,
        plaintext: &[u8],
    ) -> Result<proto::AppendResponse, ClientError> {
        let listed = self.client.get_keys(to).await?;
        let recipient = crate::audit::identity_state(&self.client, &listed.id)
            .await?
            .ok_or_else(|| {
                ClientError::Integrity(format!(
                    "recipient {to} ({}) has no verifiable chain",
                    listed.id
                ))
            })?;
        if recipient.revoked.is_some() {
            return Err(ClientError::Input(format!("recipient {to} is revoked")));
        }
        let recipient_x25519 = recipient.current_key().x25519_key;
        // Sealing only fails on unusable keys: find out before appending anything.
        amai_bus::seal::seal(
            &self.keys.x25519_secret_bytes(),
            &self.keys.x25519_public(),
            &recipient_x25519,
            amai_bus::seal::MessageBinding {
                sender: &self.id,
                recipient: &recipient.id,
                event_id: "",
            },
            b"",
        )
        .map_err(|e| {
            ClientError::Integrity(format!("recipient {to} has an unusable X25519 key: {e}"))
        })?;
        let aggregate = self.aggregate()?;
        let (me, id, to_id) = (self.keys.clone(), self.id.clone(), recipient.id.clone());
        let plaintext = plaintext.to_vec();
        self.append_via(Rpc::SendMessage, |seq, hash| {
            // Every attempt is a new event with a new id, so it is sealed anew.
            let event_id = uuid::Uuid::now_v7();
            let sealed = amai_bus::seal::seal(
                &me.x25519_secret_bytes(),
                &me.x25519_public(),
                &recipient_x25519,
                amai_bus::seal::MessageBinding {
                    sender: &id,
                    recipient: &to_id,
                    event_id: &event_id.to_string(),
                },
                &plaintext,
            )
            // Checked above with the same keys: sealing cannot fail here.
            .unwrap_or_default();
            let payload = proto::AgentMessageSent {
                to: to_id.clone(),
                sealed,
                recipient_x25519_key: recipient_x25519.to_vec(),
            };
            EventDraft::new(aggregate.clone(), Kind::AgentMessageSent(payload))
                .id(event_id)
                .after(seq, hash)
                .sign(&me, &id)
        })
        .await
    }

    /// Signs a request message for `method` as this identity, for the
    /// gateway's deployment (asked once per client).
    pub async fn sign_request<M: Message>(
        &self,
        method: &str,
        message: &M,
    ) -> Result<RequestSignature, ClientError> {
        let deployment = self.client.deployment_id().await?;
        Ok(request_auth::sign_request(
            &self.keys,
            &self.id,
            &deployment,
            method,
            message,
        ))
    }

    /// Messages addressed to this identity after AMAI_AGENTS stream sequence
    /// `after_seq`, decoded, signature-checked and opened with the current
    /// X25519 key (needs the identity worker). Content sealed to a key rotated out
    /// cannot be opened by this handle and is reported as an integrity failure.
    ///
    /// One page: it may hold fewer than `limit` messages when they are large
    /// (a reply must fit one NATS message); [`Agent::inbox_page`] says where the
    /// next page starts.
    pub async fn inbox(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<InboxMessage>, ClientError> {
        Ok(self.inbox_page(after_seq, limit).await?.messages)
    }

    /// Like [`Agent::inbox`], with where the next page starts.
    pub async fn inbox_page(&self, after_seq: u64, limit: u32) -> Result<InboxPage, ClientError> {
        let req = proto::ListInboxRequest {
            agent_id: self.id.clone(),
            after_seq,
            limit,
            min_position: None,
        };
        let sig = self.sign_request(LIST_INBOX_METHOD, &req).await?;
        let mut request = tonic::Request::new(req);
        request_auth::apply(&sig, request.metadata_mut());
        let resp = self
            .client
            .identity
            .clone()
            .list_inbox(request)
            .await?
            .into_inner();
        let mut senders: std::collections::HashMap<String, amai_bus::identity::IdentityState> =
            std::collections::HashMap::new();
        let mut messages = Vec::with_capacity(resp.messages.len());
        let mut refused = Vec::new();
        for m in &resp.messages {
            match self.open(m, &mut senders).await {
                Ok(opened) => messages.push(opened),
                Err(ClientError::Integrity(reason)) => {
                    tracing::warn!(%reason, "refused an inbox entry");
                    refused.push(RefusedMessage {
                        position: m
                            .position
                            .clone()
                            .map(Position::from)
                            .unwrap_or_else(|| Position::new("", 0)),
                        reason,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(InboxPage {
            messages,
            refused,
            next_after_seq: (resp.next_after_seq != 0).then_some(resp.next_after_seq),
        })
    }

    async fn open(
        &self,
        stored: &proto::StoredEvent,
        senders: &mut std::collections::HashMap<String, amai_bus::identity::IdentityState>,
    ) -> Result<InboxMessage, ClientError> {
        let signed = stored
            .event
            .clone()
            .ok_or_else(|| ClientError::Integrity("inbox entry without an event".into()))?;
        let ev = VerifiedEvent::from_signed(signed)
            .map_err(|e| ClientError::Integrity(format!("inbox message does not verify: {e}")))?;
        let Kind::AgentMessageSent(msg) = &ev.payload else {
            return Err(ClientError::Integrity(format!(
                "inbox entry is a {} event, not agent.message_sent",
                ev.event_type()
            )));
        };
        if msg.to != self.id {
            return Err(ClientError::Integrity(format!(
                "inbox entry is addressed to {}, not {}",
                msg.to, self.id
            )));
        }
        // The sender's X25519 key at the message's position, from the sender's
        // own chain verified client-side.
        let sender_id = ev.actor().to_string();
        if !senders.contains_key(&sender_id) {
            let state = crate::audit::identity_state(&self.client, &sender_id)
                .await?
                .ok_or_else(|| {
                    ClientError::Integrity(format!("sender {sender_id} has no verifiable chain"))
                })?;
            senders.insert(sender_id.clone(), state);
        }
        let sender_key = senders
            .get(&sender_id)
            .and_then(|s| s.key_signing_at(ev.aggregate_seq()))
            .filter(|k| k.signing_key == ev.signer)
            .ok_or_else(|| {
                ClientError::Integrity(format!(
                    "message {}: not signed by {sender_id}'s key at seq {}",
                    ev.body.id,
                    ev.aggregate_seq()
                ))
            })?
            .x25519_key;
        let plaintext = amai_bus::seal::open(
            &self.keys.x25519_secret_bytes(),
            &sender_key,
            amai_bus::seal::MessageBinding {
                sender: &sender_id,
                recipient: &self.id,
                event_id: &ev.body.id,
            },
            &msg.sealed,
        )
        .map_err(|e| ClientError::Integrity(format!("message {}: {e}", ev.body.id)))?;
        Ok(InboxMessage {
            position: stored
                .position
                .clone()
                .map(Position::from)
                .unwrap_or_else(|| Position::new("", 0)),
            event_id: ev.body.id.clone(),
            from: ev.actor().to_string(),
            sender_key: ev.signer,
            sent_at: ev.body.occurred_at,
            plaintext,
            hash: ev.hash,
        })
    }
}

/// Sleeps a jittered, exponentially growing delay (5 ms .. 200 ms caps).
async fn backoff(attempt: u32) {
    let cap_ms = (5u64 << attempt.min(6)).min(200);
    let jitter = rand_core::OsRng.next_u64() % (cap_ms + 1);
    tokio::time::sleep(Duration::from_millis(jitter.max(1))).await;
}
