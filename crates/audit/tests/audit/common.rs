//! A small deployment built in memory with the core's own APIs, laid out as
//! the streams would hold it (one `ExportedMessage` per stored event, stream
//! sequences from 1), checkpointed as the audit role does it, and fed to the
//! auditor. Tamper helpers rewrite the streams the way a rogue publisher
//! with NATS admin rights could.

use std::collections::{BTreeMap, HashMap};

use amai_audit::{origin, AuditReport, Auditor, ExportedMessage, Scope};
use amai_checkpoint::{Checkpoint, LogKey, SignedCheckpoint, VerifierKey, WitnessKey};
use amai_core::envelope::{hash_bytes, EventDraft, EventHash, VerifiedEvent, ZERO_HASH};
use amai_core::keys::IdentityKeys;
use amai_core::proto::{self, payload::Kind, IdentityKind, SignedEvent};
use amai_core::subjects::{Aggregate, AggregateKind};
use amai_merkle::{leaf_hash, root, Hash};
use prost::Message;

pub(crate) const AGENTS: &str = "AMAI_AGENTS";
pub(crate) const TRUST: &str = "AMAI_TRUST";
pub(crate) const AUDIT: &str = "AMAI_AUDIT";

/// Streams by name, each in stream order.
pub(crate) type Streams = BTreeMap<String, Vec<ExportedMessage>>;

/// An identity of the deployment.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) keys: IdentityKeys,
    pub(crate) id: String,
}

impl Identity {
    pub(crate) fn aggregate(&self) -> Aggregate {
        Aggregate::agent(&self.id).expect("agent aggregate")
    }
}

/// The deployment: its operator (trust root), its audit and trust services,
/// and its streams.
pub(crate) struct Deployment {
    pub(crate) operator: Identity,
    pub(crate) audit: Identity,
    pub(crate) trust: Identity,
    pub(crate) streams: Streams,
    heads: HashMap<String, (u64, EventHash)>,
    /// The last sequence each stream assigned.
    last_seq: HashMap<String, u64>,
    /// The current key of each identity (after rotations).
    current: HashMap<String, IdentityKeys>,
    clock: i64,
}

pub(crate) fn endorsement(
    operator: &Identity,
    key: &IdentityKeys,
    kind: &str,
    scopes: &[&str],
) -> proto::Endorsement {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    proto::Endorsement {
        operator_id: operator.id.clone(),
        operator_key: operator.keys.public_key().as_bytes().to_vec(),
        signature: operator
            .keys
            .endorse(&key.public_key(), kind, &scopes)
            .to_vec(),
        operator_seq: 0,
        scopes,
    }
}

impl Deployment {
    /// The operator (trust root), the audit service (scope `audit`) and the
    /// trust service (scope `trust`), registered.
    pub(crate) fn new() -> Self {
        let operator_keys = IdentityKeys::generate();
        let operator = Identity {
            id: operator_keys.identity_id(),
            keys: operator_keys,
        };
        let mut d = Self {
            operator: operator.clone(),
            audit: operator.clone(),
            trust: operator.clone(),
            streams: AggregateKind::ALL
                .iter()
                .map(|k| (k.stream().to_string(), Vec::new()))
                .collect(),
            heads: HashMap::new(),
            last_seq: HashMap::new(),
            current: HashMap::new(),
            clock: 1_700_000_000,
        };
        d.register_keys(
            operator.keys.clone(),
            "operator",
            IdentityKind::Operator,
            None,
        );
        let audit = IdentityKeys::generate();
        let e = endorsement(&operator, &audit, "service", &["audit"]);
        d.audit = d.register_keys(audit, "svc-audit", IdentityKind::Service, Some(e));
        let trust = IdentityKeys::generate();
        let e = endorsement(&operator, &trust, "service", &["trust"]);
        d.trust = d.register_keys(trust, "svc-trust", IdentityKind::Service, Some(e));
        d
    }

    pub(crate) fn trust_root(&self) -> ed25519_dalek::VerifyingKey {
        self.operator.keys.public_key()
    }

    pub(crate) fn deployment(&self) -> String {
        amai_audit::deployment_id(&self.trust_root())
    }

    fn tick(&mut self) -> prost_types::Timestamp {
        self.clock += 1;
        prost_types::Timestamp {
            seconds: self.clock,
            nanos: 0,
        }
    }

    /// Registers `keys` as `name`: the name claim (carrying the genesis),
    /// then the genesis, as the store does it.
    pub(crate) fn register_keys(
        &mut self,
        keys: IdentityKeys,
        name: &str,
        kind: IdentityKind,
        endorsement: Option<proto::Endorsement>,
    ) -> Identity {
        let id = keys.identity_id();
        let genesis = EventDraft::new(
            Aggregate::agent(&id).expect("agg"),
            Kind::AgentRegistered(proto::AgentRegistered {
                name: name.to_string(),
                kind: kind as i32,
                signing_key: keys.public_key().as_bytes().to_vec(),
                x25519_key: keys.x25519_public().to_vec(),
                metadata: Default::default(),
                endorsement,
            }),
        )
        .occurred_at(self.tick())
        .sign(&keys, &id);
        let claim = EventDraft::new(
            Aggregate::new(AggregateKind::Name, name).expect("name"),
            Kind::NameClaimed(proto::NameClaimed {
                name: name.to_string(),
                agent_id: id.clone(),
                genesis_hash: hash_bytes(&genesis.encode_to_vec()).to_vec(),
                genesis: genesis.encode_to_vec(),
            }),
        )
        .occurred_at(self.tick())
        .sign(&keys, &id);
        self.append(claim);
        self.append(genesis);
        self.current.insert(id.clone(), keys.clone());
        Identity { keys, id }
    }

    /// Registers a new agent.
    pub(crate) fn agent(&mut self, name: &str) -> Identity {
        self.register_keys(IdentityKeys::generate(), name, IdentityKind::Agent, None)
    }

    /// The head of an aggregate: (aggregate seq, hash).
    pub(crate) fn head(&self, aggregate: &Aggregate) -> (u64, EventHash) {
        self.heads
            .get(&aggregate.to_string())
            .copied()
            .unwrap_or((0, ZERO_HASH))
    }

    /// A draft positioned after the head of `aggregate`.
    pub(crate) fn draft(&mut self, aggregate: Aggregate, payload: Kind) -> EventDraft {
        let (seq, hash) = self.head(&aggregate);
        let at = self.tick();
        EventDraft::new(aggregate, payload)
            .after(seq, hash)
            .occurred_at(at)
    }

    /// Stores a signed event as the next message of its stream; returns its
    /// stream sequence.
    pub(crate) fn append(&mut self, signed: SignedEvent) -> u64 {
        let ev = VerifiedEvent::from_signed(signed.clone()).expect("a well-formed event");
        let data = signed.encode_to_vec();
        let stream = ev.aggregate.stream().to_string();
        // JetStream never reuses a sequence, even after a deletion.
        let last = self.last_seq.entry(stream.clone()).or_default();
        *last += 1;
        let seq = *last;
        let messages = self.streams.entry(stream.clone()).or_default();
        let at = prost_types::Timestamp {
            seconds: self.clock,
            nanos: 0,
        };
        messages.push(ExportedMessage {
            stream,
            seq,
            subject: ev.aggregate.subject(),
            published_at: Some(at),
            msg_id: ev.id.to_string(),
            data: data.clone(),
        });
        self.heads.insert(
            ev.aggregate.to_string(),
            (ev.aggregate_seq(), hash_bytes(&data)),
        );
        seq
    }

    /// A free-form action of `who` on its own chain, signed with its current
    /// key; returns (stream seq, event id).
    pub(crate) fn act(&mut self, who: &Identity, event_type: &str) -> (u64, String) {
        let keys = self.current[&who.id].clone();
        self.act_signed(who, event_type, &keys)
    }

    /// A free-form action of `who` signed with `keys` (whoever holds them).
    pub(crate) fn act_signed(
        &mut self,
        who: &Identity,
        event_type: &str,
        keys: &IdentityKeys,
    ) -> (u64, String) {
        let (seq, hash) = self.head(&who.aggregate());
        let at = self.tick();
        let signed = EventDraft::action(who.aggregate(), event_type, "{}")
            .after(seq, hash)
            .occurred_at(at)
            .sign(keys, &who.id);
        let id = event_id(&signed);
        (self.append(signed), id)
    }

    /// Rotates `who`'s key to `new` (with the proof of possession).
    pub(crate) fn rotate(&mut self, who: &Identity, new: &IdentityKeys) -> u64 {
        let old = self.current[&who.id].clone();
        let agg = who.aggregate();
        let (seq, _) = self.head(&agg);
        let payload = Kind::AgentKeyRotated(proto::AgentKeyRotated {
            new_signing_key: new.public_key().as_bytes().to_vec(),
            new_x25519_key: new.x25519_public().to_vec(),
            reason: "scheduled".into(),
            new_key_proof: new
                .rotation_proof(&agg.to_string(), seq + 1, &old.public_key())
                .to_vec(),
        });
        let signed = self.draft(agg, payload).sign(&old, &who.id);
        self.current.insert(who.id.clone(), new.clone());
        self.append(signed)
    }

    /// `who` revokes itself.
    pub(crate) fn revoke(&mut self, who: &Identity) -> u64 {
        let keys = self.current[&who.id].clone();
        let signed = self
            .draft(
                who.aggregate(),
                Kind::AgentRevoked(proto::AgentRevoked {
                    reason: "compromised".into(),
                }),
            )
            .sign(&keys, &who.id);
        self.append(signed)
    }

    /// A trust result about `agent`, caused by `cause`, signed by `service`
    /// citing its chain head; returns its stream sequence.
    pub(crate) fn trust_result(
        &mut self,
        service: &Identity,
        agent: &Identity,
        cause: &str,
    ) -> u64 {
        let (signer_seq, _) = self.head(&service.aggregate());
        let keys = self.current[&service.id].clone();
        let signed = self
            .draft(
                Aggregate::new(AggregateKind::Trust, &agent.id).expect("trust agg"),
                Kind::TrustInitialized(proto::TrustInitialized {
                    agent_id: agent.id.clone(),
                    score: 60.0,
                }),
            )
            .signer_seq(signer_seq)
            .causation(cause)
            .sign(&keys, &service.id);
        self.append(signed)
    }

    /// The RFC 9162 root and gaps of the first `size` messages of `stream`.
    pub(crate) fn tree(&self, stream: &str, size: u64) -> (Hash, Vec<u64>) {
        let by_seq: HashMap<u64, &ExportedMessage> =
            self.streams[stream].iter().map(|m| (m.seq, m)).collect();
        let mut gaps = Vec::new();
        let leaves: Vec<Hash> = (1..=size)
            .map(|seq| match by_seq.get(&seq) {
                Some(m) => leaf_hash(&hash_bytes(&m.data)),
                None => {
                    gaps.push(seq);
                    leaf_hash(&[0u8; 32])
                }
            })
            .collect();
        (root(&leaves), gaps)
    }

    /// The audit service's log key for `stream`.
    pub(crate) fn log_key(&self, stream: &str) -> LogKey {
        LogKey::new(
            origin(&self.deployment(), stream),
            self.audit.keys.signing_key().clone(),
        )
        .expect("log key")
    }

    /// Checkpoints the whole of `stream` as the audit role does; returns the
    /// checkpoint's AMAI_AUDIT sequence.
    pub(crate) fn checkpoint(&mut self, stream: &str) -> u64 {
        let size = self.streams[stream].last().map_or(0, |m| m.seq);
        self.checkpoint_at(stream, size, &self.log_key(stream), |_| {})
    }

    /// A checkpoint of the first `size` messages of `stream`, its note signed
    /// by `log` with the origin its name (the event always by the audit
    /// service), `tweak`ed before the event is signed.
    pub(crate) fn checkpoint_at(
        &mut self,
        stream: &str,
        size: u64,
        log: &LogKey,
        tweak: impl FnOnce(&mut proto::AuditCheckpointed),
    ) -> u64 {
        let (root_hash, gaps) = self.tree(stream, size);
        let origin = log.name().to_string();
        let signed = log
            .sign(&Checkpoint::new(origin.clone(), size, root_hash))
            .expect("sign checkpoint");
        let mut payload = proto::AuditCheckpointed {
            stream: stream.to_string(),
            origin,
            tree_size: size,
            root_hash: root_hash.to_vec(),
            note: signed.text().to_string(),
            log_signature: signed.log_signature().to_vec(),
            gaps,
        };
        tweak(&mut payload);
        let audit = self.audit.clone();
        let (signer_seq, _) = self.head(&audit.aggregate());
        let keys = self.current[&audit.id].clone();
        let event = self
            .draft(
                Aggregate::new(AggregateKind::Audit, stream).expect("audit agg"),
                Kind::AuditCheckpointed(payload),
            )
            .signer_seq(signer_seq)
            .sign(&keys, &audit.id);
        self.append(event)
    }

    /// The checkpoint payload stored at AMAI_AUDIT `seq`.
    pub(crate) fn checkpoint_payload(&self, seq: u64) -> proto::AuditCheckpointed {
        let m = &self.streams[AUDIT][seq as usize - 1];
        let ev = VerifiedEvent::decode(&m.data).expect("checkpoint event");
        match ev.payload {
            Kind::AuditCheckpointed(c) => c,
            other => panic!("not a checkpoint: {other:?}"),
        }
    }

    /// `witness` (a registered agent) cosigns the checkpoint at AMAI_AUDIT
    /// `seq` with `key` and records it on its own chain, as `amai audit
    /// witness` does.
    pub(crate) fn cosign(&mut self, witness: &Identity, key: &WitnessKey, seq: u64) -> u64 {
        let c = self.checkpoint_payload(seq);
        let vkey = VerifierKey::ed25519(&c.origin, &self.audit.keys.public_key()).expect("vkey");
        let opened = SignedCheckpoint::open(&c.note, &vkey).expect("open");
        let line = key.cosign(&opened, 1_700_000_500).expect("cosign");
        let checkpoint_event_id =
            VerifiedEvent::decode(&self.streams[AUDIT][seq as usize - 1].data)
                .expect("event")
                .id
                .to_string();
        let keys = self.current[&witness.id].clone();
        let signed = self
            .draft(
                witness.aggregate(),
                Kind::AuditCheckpointCosigned(proto::AuditCheckpointCosigned {
                    origin: c.origin,
                    tree_size: c.tree_size,
                    root_hash: c.root_hash,
                    cosignature: line.to_string(),
                    witness_name: key.name().to_string(),
                    witness_vkey: key.verifier().to_string(),
                    time: 1_700_000_500,
                    checkpoint_event_id,
                }),
            )
            .sign(&keys, &witness.id);
        self.append(signed)
    }

    /// Checkpoints every non-empty stream but AMAI_AUDIT; returns the
    /// AMAI_AUDIT sequences.
    pub(crate) fn checkpoint_all(&mut self) -> Vec<u64> {
        let streams: Vec<String> = self
            .streams
            .iter()
            .filter(|(name, m)| name.as_str() != AUDIT && !m.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        streams.iter().map(|s| self.checkpoint(s)).collect()
    }

    /// Audits the streams, all complete, AMAI_AGENTS first.
    pub(crate) fn audit(&self) -> AuditReport {
        audit(self.trust_root(), &complete(&self.streams), None)
    }
}

/// Every stream of `streams` as complete.
pub(crate) fn complete(streams: &Streams) -> Vec<(String, Scope, Vec<ExportedMessage>)> {
    streams
        .iter()
        .map(|(n, m)| (n.clone(), Scope::Complete, m.clone()))
        .collect()
}

/// Feeds `streams` (AMAI_AGENTS first, then in the order given) and finishes.
pub(crate) fn audit(
    trust_root: ed25519_dalek::VerifyingKey,
    streams: &[(String, Scope, Vec<ExportedMessage>)],
    witnesses: Option<(Vec<VerifierKey>, usize)>,
) -> AuditReport {
    let mut auditor = Auditor::new(trust_root).batch_size(7);
    if let Some((keys, k)) = witnesses {
        auditor = auditor.witnesses(keys, k).expect("witness policy");
    }
    let mut ordered: Vec<&(String, Scope, Vec<ExportedMessage>)> = streams.iter().collect();
    ordered.sort_by_key(|(name, _, _)| name != AGENTS);
    for (name, scope, messages) in ordered {
        auditor
            .add_stream(name, *scope, messages.clone())
            .expect("usable input");
    }
    let report = auditor.finish();
    if std::env::var_os("AMAI_AUDIT_TEST_PRINT").is_some() {
        eprintln!("{}", report.human_summary());
    }
    report
}

/// The id of a signed event.
pub(crate) fn event_id(signed: &SignedEvent) -> String {
    VerifiedEvent::from_signed(signed.clone())
        .expect("event")
        .id
        .to_string()
}

/// The id of the event stored at `seq` of `stream`.
pub(crate) fn id_at(streams: &Streams, stream: &str, seq: u64) -> String {
    let m = streams[stream]
        .iter()
        .find(|m| m.seq == seq)
        .expect("message");
    VerifiedEvent::decode(&m.data)
        .expect("event")
        .id
        .to_string()
}

/// Renumbers a stream's messages 1..=n, as a rogue rewriting the stream
/// (republishing it into a fresh one) would leave it.
pub(crate) fn renumber(messages: &mut [ExportedMessage]) {
    for (i, m) in messages.iter_mut().enumerate() {
        m.seq = i as u64 + 1;
    }
}

/// Names the failures of a report, for assertion messages.
pub(crate) fn failures(report: &AuditReport) -> String {
    report.human_summary()
}
