//! The client commands (`amai keys|agent|message|events|chain|stats`), thin
//! wrappers over the `amai-client` SDK talking to the gateway. Every command that
//! scripts consume takes `--json` and prints one JSON document (or one per line
//! for `events tail`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use amai_bus::proto::{self, IdentityKind};
use amai_bus::{Aggregate, IdentityKeys};
use amai_client::{Agent, AmaiClient, ErrorKind};
use anyhow::Context;
use futures::StreamExt;
use serde_json::json;

use crate::config::Settings;

/// `amai keys ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate a new key pair (Ed25519 signing + X25519 messaging) into a file (mode 0600).
    Generate {
        /// Where to write the keys; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which identity acts: its key file, and its id when the keys were rotated.
#[derive(Debug, clap::Args)]
pub(crate) struct Acting {
    /// The acting identity's key file.
    #[arg(long, env = "AMAI_KEYS")]
    keys: PathBuf,
    /// The identity id (needed after a key rotation: the id comes from the first key).
    #[arg(long = "id", env = "AMAI_ID")]
    id: Option<String>,
}

impl Acting {
    /// The acting identity's handle.
    pub(crate) fn agent(&self, client: &AmaiClient) -> anyhow::Result<Agent> {
        let keys = IdentityKeys::load(&self.keys)?;
        Ok(match &self.id {
            Some(id) => client.agent_with_id(id.clone(), keys),
            None => client.agent(keys),
        })
    }
}

/// Which identity signs a read (reads are signed requests; see
/// docs/architecture.md, "Read access").
#[derive(Debug, clap::Args)]
pub(crate) struct Reading {
    /// Key file of the identity that reads: it reads its own chains and the
    /// messages addressed to it; an operator key (`<data-dir>/keys/operator.json`)
    /// reads everything; a reader identity reads the streams granted to it.
    #[arg(long, env = "AMAI_KEYS")]
    keys: Option<PathBuf>,
    /// The identity id (needed after a key rotation).
    #[arg(long = "id", env = "AMAI_ID")]
    id: Option<String>,
}

impl Reading {
    /// The client, signing reads as this identity.
    pub(crate) fn sign(
        &self,
        client: AmaiClient,
        settings: &Settings,
    ) -> anyhow::Result<AmaiClient> {
        let Some(path) = &self.keys else {
            anyhow::bail!(
                "reads are signed requests: pass --keys FILE (or AMAI_KEYS) with the key file of the identity that reads \
                 (an identity reads its own chains and the messages addressed to it; the operator key {} reads everything)",
                crate::keystore::operator_key_path(&settings.data_dir).display()
            );
        };
        let keys = IdentityKeys::load(path).with_context(|| {
            format!(
                "cannot load the reading identity's keys from {}",
                path.display()
            )
        })?;
        let id = self.id.clone().unwrap_or_else(|| keys.identity_id());
        Ok(client.with_signer(id, keys))
    }
}

/// Adds what to do to a refused read.
fn read_hint(e: amai_client::ClientError) -> anyhow::Error {
    let hint = match e.kind() {
        ErrorKind::ReadNotPermitted => Some(
            "this identity may not read that: read with the key of its owner, an operator key, or a reader identity granted the stream",
        ),
        ErrorKind::SignatureMissing => Some("pass --keys FILE (or AMAI_KEYS) to sign the read"),
        ErrorKind::UnknownSigner => Some("the --keys identity is not registered on this deployment"),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::Error::new(e).context(h.to_string()),
        None => anyhow::Error::new(e),
    }
}

/// `amai agent ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AgentCommand {
    /// Register an identity (self-signed genesis + name claim).
    Register {
        #[command(flatten)]
        acting: Acting,
        /// The unique name (2-63 of a-z 0-9 - _).
        #[arg(long)]
        name: String,
        /// agent, operator or service (the latter two need an endorsement).
        #[arg(long, default_value = "agent")]
        kind: String,
        /// Metadata, repeatable: --meta key=value.
        #[arg(long = "meta", value_parser = parse_kv)]
        meta: Vec<(String, String)>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an identity by id or name.
    Show {
        /// Id (32 hex) or name.
        who: String,
        /// As of a point in history (an RFC 3339 time or stream positions
        /// such as `AMAI_AGENTS:120`): rebuilt from the streams (needs
        /// --nats-url and the trust root).
        #[arg(long)]
        as_of: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rotate to a new key pair (signed by the current key).
    RotateKey {
        #[command(flatten)]
        acting: Acting,
        /// The new key file (create it with `amai keys generate`).
        #[arg(long)]
        new_keys: PathBuf,
        /// Why.
        #[arg(long, default_value = "rotation")]
        reason: String,
    },
    /// Revoke the identity: nothing more can be appended to its chain.
    Revoke {
        #[command(flatten)]
        acting: Acting,
        /// Why.
        #[arg(long, default_value = "revoked by owner")]
        reason: String,
    },
}

/// `amai message ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum MessageCommand {
    /// Seal a message to the recipient's X25519 key and record it on your chain.
    Send {
        #[command(flatten)]
        acting: Acting,
        /// Recipient id or name.
        #[arg(long)]
        to: String,
        /// The text.
        text: String,
    },
    /// Read (and open) your inbox; the request is signed with your key.
    Inbox {
        #[command(flatten)]
        acting: Acting,
        /// Only messages after this AMAI_AGENTS sequence.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `amai events ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum EventsCommand {
    /// Follow a stream live; --all, --from-seq or --since replay history first.
    Tail {
        /// Stream name.
        #[arg(long, default_value = "AMAI_AGENTS")]
        stream: String,
        #[command(flatten)]
        reading: Reading,
        /// Only this aggregate (e.g. agent/<id>).
        #[arg(long)]
        aggregate: Option<String>,
        /// Only these event types (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only events signed by this identity id.
        #[arg(long)]
        actor: Option<String>,
        /// Start at this stream sequence (default: only events appended from now on).
        #[arg(long, conflicts_with_all = ["since", "all"])]
        from_seq: Option<u64>,
        /// Start at this time (RFC 3339).
        #[arg(long, conflicts_with = "all")]
        since: Option<String>,
        /// Start at the first event of the stream.
        #[arg(long)]
        all: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// `amai chain ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ChainCommand {
    /// Verify a chain client-side: every signature, hash link and key; exit 1 on failure.
    Verify {
        /// Agent id or name, or an aggregate like trust/<id>.
        who: String,
        #[command(flatten)]
        reading: Reading,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `amai stats` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct StatsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn gateway_url(settings: &Settings) -> String {
    format!("http://{}", settings.gateway_addr)
}

pub(crate) async fn connect(settings: &Settings) -> anyhow::Result<AmaiClient> {
    let url = gateway_url(settings);
    let client = AmaiClient::connect(url.clone()).await.with_context(|| {
        format!("cannot reach the gateway at {url}: is `amai up` running? pass --gateway-addr")
    })?;
    // The trust root lets client-side verification accept operator and service
    // identities: --trust-root, else the operator key of a local `amai up`.
    let root = match settings.trust_root_bytes()? {
        Some(bytes) => Some(
            amai_bus::keys::verifying_key(&bytes)
                .context("--trust-root is not an Ed25519 public key")?,
        ),
        None => crate::keystore::existing_operator_key(&settings.data_dir)?,
    };
    Ok(match root {
        Some(key) => client.with_trust_root(key),
        None => client,
    })
}

pub(crate) fn print(json_out: bool, value: serde_json::Value, text: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn kind_of(s: &str) -> anyhow::Result<IdentityKind> {
    Ok(match s {
        "agent" => IdentityKind::Agent,
        "operator" => IdentityKind::Operator,
        "service" => IdentityKind::Service,
        other => anyhow::bail!("unknown kind {other:?}: use agent, operator or service"),
    })
}

fn ts_string(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp_nanos(
            t.seconds as i128 * 1_000_000_000 + t.nanos as i128,
        )
        .ok()
    })
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default()
}

/// `amai keys`.
pub(crate) fn keys(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { out, json } => {
            let keys = IdentityKeys::generate();
            keys.save(&out)?;
            print(
                json,
                json!({"file": out, "id": keys.identity_id(), "did": keys.did(), "public_key": hex::encode(keys.public_key().as_bytes())}),
                format!(
                    "wrote {}\nid:  {}\ndid: {}",
                    out.display(),
                    keys.identity_id(),
                    keys.did()
                ),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn identity_json(i: &proto::Identity) -> serde_json::Value {
    json!({
        "id": i.id, "name": i.name, "kind": amai_bus::identity::kind_name(amai_bus::identity::identity_kind(i.kind)),
        "did": i.did, "signing_key": hex::encode(&i.signing_key), "x25519_key": hex::encode(&i.x25519_key),
        "metadata": i.metadata, "revoked": i.revoked, "revoked_reason": i.revoked_reason,
        "chain_length": i.chain_length, "trust_score": i.trust_score, "registered_at": ts_string(i.registered_at.as_ref()),
        "head_hash": hex::encode(&i.head_hash),
    })
}

/// `amai agent`.
pub(crate) async fn agent(settings: &Settings, cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        AgentCommand::Register {
            acting,
            name,
            kind,
            meta,
            json,
        } => {
            let agent = acting.agent(&client)?;
            let r = agent
                .register(
                    &name,
                    kind_of(&kind)?,
                    meta.into_iter().collect::<BTreeMap<_, _>>(),
                )
                .await?;
            let pos = r.position.clone().unwrap_or_default();
            print(
                json,
                json!({"id": r.agent_id, "name": name, "did": r.did, "position": {"stream": pos.stream, "seq": pos.seq}}),
                format!("registered {name}\nid:  {}\ndid: {}", r.agent_id, r.did),
            );
        }
        AgentCommand::Show { who, as_of, json } => {
            let i = match as_of {
                Some(at) => crate::replay_cmd::identity_as_of(settings, &who, &at).await?,
                None => client.get_identity(&who).await?,
            };
            let text = format!(
                "{} ({})\nid:          {}\ndid:         {}\nkind:        {}\nchain:       {} events\ntrust score: {}\nrevoked:     {}",
                i.name,
                i.id,
                i.id,
                i.did,
                amai_bus::identity::kind_name(amai_bus::identity::identity_kind(i.kind)),
                i.chain_length,
                i.trust_score.map(|s| format!("{s:.1}")).unwrap_or_else(|| "(not yet initialised)".into()),
                if i.revoked { format!("yes ({})", i.revoked_reason) } else { "no".into() }
            );
            print(json, identity_json(&i), text);
        }
        AgentCommand::RotateKey {
            acting,
            new_keys,
            reason,
        } => {
            let mut agent = acting.agent(&client)?;
            let new = IdentityKeys::load(&new_keys)?;
            let id = agent.id().to_string();
            let r = agent.rotate_key(new, &reason).await?;
            println!(
                "rotated {id} at seq {}; from now on use --keys {} --id {id}",
                r.aggregate_seq,
                new_keys.display()
            );
        }
        AgentCommand::Revoke { acting, reason } => {
            let agent = acting.agent(&client)?;
            let r = agent.revoke(&reason).await?;
            println!("revoked {} at seq {}", agent.id(), r.aggregate_seq);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `amai message`.
pub(crate) async fn message(settings: &Settings, cmd: MessageCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        MessageCommand::Send { acting, to, text } => {
            let agent = acting.agent(&client)?;
            let r = agent.send_message(&to, text.as_bytes()).await?;
            let pos = r.position.unwrap_or_default();
            println!("sent to {to} (sealed; {}:{})", pos.stream, pos.seq);
        }
        MessageCommand::Inbox {
            acting,
            after,
            limit,
            json,
        } => {
            let agent = acting.agent(&client)?;
            let page = agent.inbox_page(after, limit).await?;
            // Entries that do not open as from their sender, to this identity, in
            // that event (a copied or forged box) are never shown as messages.
            for r in &page.refused {
                eprintln!(
                    "warning: refused inbox entry at {}: {}",
                    r.position, r.reason
                );
            }
            if let Some(next) = page.next_after_seq {
                eprintln!("more messages follow: --after {next}");
            }
            let messages = page.messages;
            if json {
                let v: Vec<_> = messages
                    .iter()
                    .map(|m| json!({"seq": m.position.seq, "from": m.from, "sent_at": ts_string(m.sent_at.as_ref()), "text": String::from_utf8_lossy(&m.plaintext), "event_id": m.event_id}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else if messages.is_empty() {
                println!("inbox empty");
            } else {
                for m in messages {
                    println!(
                        "#{} from {} at {}: {}",
                        m.position.seq,
                        m.from,
                        ts_string(m.sent_at.as_ref()),
                        String::from_utf8_lossy(&m.plaintext)
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `amai events`.
pub(crate) async fn events(settings: &Settings, cmd: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::Tail {
        reading,
        stream,
        aggregate,
        types,
        actor,
        from_seq,
        since,
        all,
        count,
        json,
    } = cmd;
    let client = reading.sign(connect(settings).await?, settings)?;
    let start = if let Some(s) = from_seq {
        Some(proto::subscribe_request::Start::StartSeq(s))
    } else if let Some(t) = since {
        let t = time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
            .with_context(|| {
                format!("--since {t:?} is not RFC 3339 (e.g. 2026-11-25T10:00:00Z)")
            })?;
        Some(proto::subscribe_request::Start::StartTime(
            prost_types::Timestamp {
                seconds: t.unix_timestamp(),
                nanos: t.nanosecond() as i32,
            },
        ))
    } else if all {
        Some(proto::subscribe_request::Start::StartSeq(1))
    } else {
        Some(proto::subscribe_request::Start::NewOnly(true))
    };
    let req = proto::SubscribeRequest {
        stream,
        aggregate: aggregate.unwrap_or_default(),
        types,
        actor: actor.unwrap_or_default(),
        start,
        end_seq: 0,
    };
    let stream_name = req.stream.clone();
    let mut events = client.subscribe(req).await.map_err(read_hint)?;
    eprintln!("amai: following {stream_name} (Ctrl-C to stop)");
    let mut seen = 0u64;
    while let Some(item) = events.next().await {
        let stored = item?;
        let pos = stored.position.clone().unwrap_or_default();
        let body = stored
            .event
            .as_ref()
            .and_then(|e| <proto::EventBody as prost::Message>::decode(e.body.as_slice()).ok())
            .unwrap_or_default();
        if json {
            println!(
                "{}",
                json!({"stream": pos.stream, "seq": pos.seq, "subject": stored.subject, "published_at": ts_string(stored.published_at.as_ref()),
                    "id": body.id, "type": body.r#type, "aggregate": body.aggregate, "aggregate_seq": body.aggregate_seq, "actor": body.actor,
                    "causation_id": body.causation_id, "correlation_id": body.correlation_id, "hash": hex::encode(&stored.hash)})
            );
        } else {
            println!(
                "{}:{} {} {} #{} by {}",
                pos.stream, pos.seq, body.r#type, body.aggregate, body.aggregate_seq, body.actor
            );
        }
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `amai chain`.
pub(crate) async fn chain(settings: &Settings, cmd: ChainCommand) -> anyhow::Result<ExitCode> {
    let ChainCommand::Verify { who, reading, json } = cmd;
    let client = reading.sign(connect(settings).await?, settings)?;
    let aggregate: Aggregate = if who.contains('/') {
        who.parse()?
    } else {
        let identity = client.get_identity(&who).await?;
        Aggregate::agent(identity.id)?
    };
    let report = client.verify_chain(&aggregate).await.map_err(read_hint)?;
    let failure = report.failure.as_ref();
    print(
        json,
        json!({"aggregate": report.aggregate, "ok": report.ok(), "events_checked": report.events_checked, "head_hash": hex::encode(report.head_hash),
            "failure": failure.map(|f| json!({"aggregate_seq": f.aggregate_seq, "stream": f.position.stream, "seq": f.position.seq, "kind": f.kind.to_proto().as_str_name(), "detail": f.detail}))}),
        match failure {
            None => format!(
                "{}: ok, {} events verified (signatures, hash links, keys); head {}",
                report.aggregate,
                report.events_checked,
                hex::encode(report.head_hash)
            ),
            Some(f) => format!(
                "{}: FAILED at seq {} ({}:{}): {} — {}",
                report.aggregate,
                f.aggregate_seq,
                f.position.stream,
                f.position.seq,
                f.kind.to_proto().as_str_name(),
                f.detail
            ),
        },
    );
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `amai projections violations`.
pub(crate) async fn violations(
    settings: &Settings,
    limit: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    let r = client.integrity_violations(limit).await?;
    let kind = |k: i32| {
        proto::ChainFailureKind::try_from(k)
            .map(|k| k.as_str_name())
            .unwrap_or("UNKNOWN")
    };
    if json {
        let v: Vec<_> = r
            .violations
            .iter()
            .map(|v| {
                let pos = v.position.clone().unwrap_or_default();
                json!({"stream": pos.stream, "seq": pos.seq, "aggregate": v.aggregate, "aggregate_seq": v.aggregate_seq,
                    "event_type": v.event_type, "kind": kind(v.kind), "detail": v.detail, "published_at": ts_string(v.published_at.as_ref())})
            })
            .collect();
        println!("{}", json!({"total": r.total, "violations": v}));
    } else if r.total == 0 {
        println!("no integrity violations");
    } else {
        for v in &r.violations {
            let pos = v.position.clone().unwrap_or_default();
            println!(
                "{}:{} {} #{} {}: {}",
                pos.stream,
                pos.seq,
                v.aggregate,
                v.aggregate_seq,
                kind(v.kind),
                v.detail
            );
        }
        println!("{} of {} shown", r.violations.len(), r.total);
    }
    Ok(ExitCode::SUCCESS)
}

/// `amai stats`.
pub(crate) async fn stats(settings: &Settings, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    let s = client.stats().await?;
    print(
        args.json,
        json!({"identities": s.identities, "events": s.events, "messages": s.messages, "per_kind": s.per_kind, "revoked": s.revoked, "integrity_violations": s.integrity_violations}),
        format!("identities: {}\nevents:     {}\nmessages:   {}\nrevoked:    {}\nviolations: {}\nper kind:   {:?}", s.identities, s.events, s.messages, s.revoked, s.integrity_violations, s.per_kind),
    );
    Ok(ExitCode::SUCCESS)
}
