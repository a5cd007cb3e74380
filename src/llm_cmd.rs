//! `amai llm ...`: LLM recording sessions, thin wrappers over the SDK's
//! [`amai_client::llm`]. Session keys are printed once, on stdout, and never
//! logged. Cassettes (export/import) are `amai_llm::cassette::Cassette` JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use amai_bus::proto::{self, payload::Kind, LlmMode, LlmUpstream};
use amai_client::llm::{LlmExport, SessionKey};
use amai_client::{Agent, ClientError, ErrorKind};
use amai_llm::cassette::{
    Base64Bytes, Body, Cassette, CassetteInteraction, CassetteMatchOptions, CassetteMiss,
    CassetteMode, CassetteOutcome, CassetteSession, CassetteSseEvent, CassetteUpstream,
    CassetteUsage, Sha256Hex,
};
use anyhow::Context;
use prost::Message;
use serde_json::json;

use crate::client_cmd::{connect, print, Acting};
use crate::config::Settings;

/// Largest cassette `amai llm import` reads (the gateway's blob limit decides
/// what it stores).
const MAX_CASSETTE_BYTES: u64 = 64 * 1024 * 1024;

/// `amai llm ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum LlmCommand {
    /// Sessions: create, switch mode, show, list, delete.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Session keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// A session's recordings and misses, one line each.
    Recordings {
        #[command(flatten)]
        acting: Acting,
        /// The session id.
        session: String,
        /// Print JSON (one array).
        #[arg(long)]
        json: bool,
    },
    /// Export a session (recordings, misses, blobs inlined) as a cassette file.
    Export {
        #[command(flatten)]
        acting: Acting,
        /// The session id.
        session: String,
        /// Where to write the cassette JSON; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a cassette as a new replay session; prints its id and key.
    Import {
        #[command(flatten)]
        acting: Acting,
        /// The cassette JSON file.
        cassette: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The first step where two sessions' recordings diverge, with a
    /// field-level diff of the requests.
    Diff {
        #[command(flatten)]
        acting: Acting,
        /// The first session id.
        a: String,
        /// The second session id.
        b: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `amai llm session ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SessionCommand {
    /// Open a session; prints its id and its first key (shown once).
    Create {
        #[command(flatten)]
        acting: Acting,
        /// record (forward and record) or replay (answer from the recording).
        #[arg(long, value_parser = ["record", "replay"])]
        mode: String,
        /// Which API to serve: openai, anthropic or all.
        #[arg(long, default_value = "all", value_parser = ["openai", "anthropic", "all"])]
        upstream: String,
        #[command(flatten)]
        options: OptionArgs,
        /// Print JSON: {"session_id": ..., "key": ...}.
        #[arg(long)]
        json: bool,
    },
    /// Switch to replay; returns once every recording is ready to be served.
    Replay {
        #[command(flatten)]
        acting: Acting,
        /// The session id.
        session: String,
    },
    /// Switch back to recording.
    Record {
        #[command(flatten)]
        acting: Acting,
        /// The session id.
        session: String,
    },
    /// Show a session.
    Show {
        #[command(flatten)]
        acting: Acting,
        /// The session id.
        session: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your sessions (an operator key lists every session).
    Ls {
        #[command(flatten)]
        acting: Acting,
        /// Print JSON (one array).
        #[arg(long)]
        json: bool,
    },
    /// Delete a session (its recordings stay on the stream, verifiable).
    Rm {
        #[command(flatten)]
        acting: Acting,
        /// The session id.
        session: String,
        /// Why.
        #[arg(long, default_value = "deleted by owner")]
        reason: String,
    },
}

/// `amai llm key ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeyCommand {
    /// Issue another key for a session; prints it once.
    Issue {
        #[command(flatten)]
        acting: Acting,
        /// The session id.
        session: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key of a session (the key itself, or its SHA-256 in hex).
    Revoke {
        #[command(flatten)]
        acting: Acting,
        /// The session id.
        session: String,
        /// The key (`amai-sk-...`) or its SHA-256 (64 hex digits).
        key: String,
    },
}

/// How requests are matched.
#[derive(Debug, clap::Args)]
pub(crate) struct OptionArgs {
    /// A request field left out of the match (dotted path), repeatable.
    #[arg(long = "ignore-field")]
    ignore_fields: Vec<String>,
    /// strict: the k-th request matches the k-th recording; any: any order.
    #[arg(long, default_value = "strict", value_parser = ["strict", "any"])]
    order: String,
    /// Serve the last recording again once every occurrence was served.
    #[arg(long)]
    allow_repeats: bool,
    /// instant: stream as fast as the client reads; recorded: at recorded offsets.
    #[arg(long, default_value = "instant", value_parser = ["instant", "recorded"])]
    timing: String,
}

impl OptionArgs {
    fn to_proto(&self) -> proto::LlmMatchOptions {
        let mut options = proto::LlmMatchOptions {
            ignore_fields: self.ignore_fields.clone(),
            allow_repeats: self.allow_repeats,
            ..Default::default()
        };
        options.set_order(if self.order == "any" {
            proto::LlmReplayOrder::Any
        } else {
            proto::LlmReplayOrder::Strict
        });
        options.set_timing(if self.timing == "recorded" {
            proto::LlmReplayTiming::Recorded
        } else {
            proto::LlmReplayTiming::Instant
        });
        options
    }
}

/// Adds what to do to a refused LLM command or read.
fn hint(e: ClientError) -> anyhow::Error {
    let hint = match e.kind() {
        ErrorKind::SessionNotFound => Some("check the id with `amai llm session ls --keys FILE`"),
        ErrorKind::NotSessionOwner | ErrorKind::ReadNotPermitted => Some(
            "only the session's owner (or an operator, for reads) may do this: pass the owner's --keys",
        ),
        ErrorKind::SessionDeleted => Some("the session was deleted: create a new one"),
        ErrorKind::KeyInUse => Some("that key already belongs to a session; issue a new key"),
        ErrorKind::KeyNotFound => Some("that key is not one of this session's keys (see `amai llm session show`)"),
        ErrorKind::WorkerUnavailable => Some("no llm worker answers: start one (`amai worker --role llm`, or `amai up`)"),
        ErrorKind::UnknownSigner => Some("the --keys identity is not registered on this deployment"),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::Error::new(e).context(h.to_string()),
        None => anyhow::Error::new(e),
    }
}

fn mode_name(mode: i32) -> &'static str {
    match LlmMode::try_from(mode) {
        Ok(LlmMode::Record) => "record",
        Ok(LlmMode::Replay) => "replay",
        _ => "unspecified",
    }
}

fn upstream_name(u: i32) -> &'static str {
    match LlmUpstream::try_from(u) {
        Ok(LlmUpstream::Openai) => "openai",
        Ok(LlmUpstream::Anthropic) => "anthropic",
        _ => "unspecified",
    }
}

fn session_json(s: &proto::LlmSession) -> serde_json::Value {
    let options = s.options.clone().unwrap_or_default();
    json!({
        "session_id": s.session_id, "owner": s.owner, "mode": mode_name(s.mode),
        "upstreams": s.upstreams.iter().map(|u| upstream_name(*u)).collect::<Vec<_>>(),
        "options": {"ignore_fields": options.ignore_fields, "keep_default_fields": options.keep_default_fields,
            "order": options.order().as_str_name(), "allow_repeats": options.allow_repeats, "timing": options.timing().as_str_name()},
        "keys": s.keys.iter().map(|k| json!({"key_sha256": hex::encode(&k.key_sha256), "revoked": k.revoked})).collect::<Vec<_>>(),
        "deleted": s.deleted, "deleted_reason": s.deleted_reason, "recordings": s.recordings, "misses": s.misses,
        "head_seq": s.head_seq, "replay_from": s.replay_from, "owner_revoked": s.owner_revoked,
        "import": s.import.as_ref().map(|i| json!({"imported": i.imported, "total": i.total, "error": i.error, "done": i.done})),
    })
}

fn session_text(s: &proto::LlmSession) -> String {
    let upstreams = if s.upstreams.is_empty() {
        "all".to_string()
    } else {
        s.upstreams
            .iter()
            .map(|u| upstream_name(*u))
            .collect::<Vec<_>>()
            .join(",")
    };
    let keys = s
        .keys
        .iter()
        .map(|k| {
            format!(
                "\n  {}{}",
                hex::encode(&k.key_sha256),
                if k.revoked { " (revoked)" } else { "" }
            )
        })
        .collect::<String>();
    format!(
        "session {}\nowner:      {}\nmode:       {}\nupstreams:  {upstreams}\nrecordings: {}\nmisses:     {}\ndeleted:    {}\nkeys (sha256):{keys}",
        s.session_id,
        s.owner,
        mode_name(s.mode),
        s.recordings,
        s.misses,
        if s.deleted { format!("yes ({})", s.deleted_reason) } else { "no".into() },
    )
}

/// Prints a new session's id and key (the only time the key is shown).
fn print_key(json_out: bool, session_id: &str, key: &SessionKey) {
    print(
        json_out,
        json!({"session_id": session_id, "key": key.expose()}),
        format!(
            "session {session_id}\nkey:     {}\n(the key is shown once: keep it; only its SHA-256 is recorded)",
            key.expose()
        ),
    );
}

/// `amai llm`.
pub(crate) async fn llm(settings: &Settings, cmd: LlmCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        LlmCommand::Session(cmd) => session(&client, cmd).await,
        LlmCommand::Key(KeyCommand::Issue {
            acting,
            session,
            json,
        }) => {
            let agent = acting.agent(&client)?;
            let (s, key) = agent.issue_llm_key(&session).await.map_err(hint)?;
            print_key(json, &s.session_id, &key);
            Ok(ExitCode::SUCCESS)
        }
        LlmCommand::Key(KeyCommand::Revoke {
            acting,
            session,
            key,
        }) => {
            let agent = acting.agent(&client)?;
            let sha256 = key_hash(&key)?;
            agent.revoke_llm_key(&session, sha256).await.map_err(hint)?;
            println!("revoked key {} of {session}", hex::encode(sha256));
            Ok(ExitCode::SUCCESS)
        }
        LlmCommand::Recordings {
            acting,
            session,
            json,
        } => recordings(&acting.agent(&client)?, &session, json).await,
        LlmCommand::Export {
            acting,
            session,
            out,
        } => {
            if out.exists() {
                anyhow::bail!(
                    "{} exists; choose another --out (export never overwrites)",
                    out.display()
                );
            }
            let agent = acting.agent(&client)?;
            let export = agent.export_llm_session(&session).await.map_err(hint)?;
            let cassette = to_cassette(&export)?;
            let text = cassette.to_json_pretty()?;
            std::fs::write(&out, text)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!(
                "exported {} recordings and {} misses of {session} to {}",
                cassette.interactions.len(),
                cassette.misses.len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LlmCommand::Import {
            acting,
            cassette,
            json,
        } => {
            let size = std::fs::metadata(&cassette)
                .with_context(|| format!("cannot read {}", cassette.display()))?
                .len();
            if size > MAX_CASSETTE_BYTES {
                anyhow::bail!(
                    "{} is {size} bytes, over the {MAX_CASSETTE_BYTES} byte limit",
                    cassette.display()
                );
            }
            let bytes = std::fs::read(&cassette)
                .with_context(|| format!("cannot read {}", cassette.display()))?;
            // Checked here too, so a bad file is refused with its JSON path
            // before anything is uploaded.
            let total = Cassette::from_json(&bytes)
                .with_context(|| format!("{} is not a valid cassette", cassette.display()))?
                .interactions
                .len() as u64;
            let agent = acting.agent(&client)?;
            let (s, key) = agent.import_llm_cassette(bytes).await.map_err(hint)?;
            // The llm role appends the interactions after the session opens:
            // return once they are all there, so the session replays in full.
            wait_for_import(&agent, &s.session_id, total).await?;
            print_key(json, &s.session_id, &key);
            Ok(ExitCode::SUCCESS)
        }
        LlmCommand::Diff { acting, a, b, json } => {
            diff(&acting.agent(&client)?, &a, &b, json).await
        }
    }
}

/// Waits (with a progress line on stderr) until the imported session holds
/// `total` recordings; fails naming where to look when the import stalls.
async fn wait_for_import(agent: &Agent, session: &str, total: u64) -> anyhow::Result<()> {
    let patience = std::time::Duration::from_secs(30);
    let mut last = (0u64, std::time::Instant::now());
    loop {
        let s = agent.llm_session(session).await.map_err(hint)?;
        if s.recordings >= total {
            if total > 0 {
                eprintln!("imported {total}/{total} interactions");
            }
            return Ok(());
        }
        if s.recordings > last.0 {
            eprint!("\rimporting: {}/{total} interactions", s.recordings);
            last = (s.recordings, std::time::Instant::now());
        } else if last.1.elapsed() > patience {
            anyhow::bail!(
                "the import of llm session {session} stalled at {}/{total} interactions for {} s; \
                 is an llm worker running? its refusal, if any, is on failure/llm \
                 (amai events tail --stream AMAI_FAILURES --all with an operator key)",
                s.recordings,
                patience.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn session(
    client: &amai_client::AmaiClient,
    cmd: SessionCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionCommand::Create {
            acting,
            mode,
            upstream,
            options,
            json,
        } => {
            let agent = acting.agent(client)?;
            let mode = if mode == "replay" {
                LlmMode::Replay
            } else {
                LlmMode::Record
            };
            let upstreams = match upstream.as_str() {
                "openai" => vec![LlmUpstream::Openai],
                "anthropic" => vec![LlmUpstream::Anthropic],
                _ => Vec::new(),
            };
            let (s, key) = agent
                .create_llm_session(mode, upstreams, options.to_proto())
                .await
                .map_err(hint)?;
            print_key(json, &s.session_id, &key);
        }
        SessionCommand::Replay { acting, session } => {
            let agent = acting.agent(client)?;
            let s = agent
                .set_llm_mode(&session, LlmMode::Replay, None)
                .await
                .map_err(hint)?;
            println!("{session}: replaying {} recordings", s.recordings);
        }
        SessionCommand::Record { acting, session } => {
            let agent = acting.agent(client)?;
            agent
                .set_llm_mode(&session, LlmMode::Record, None)
                .await
                .map_err(hint)?;
            println!("{session}: recording");
        }
        SessionCommand::Show {
            acting,
            session,
            json,
        } => {
            let agent = acting.agent(client)?;
            let s = agent.llm_session(&session).await.map_err(hint)?;
            print(json, session_json(&s), session_text(&s));
        }
        SessionCommand::Ls { acting, json } => {
            let agent = acting.agent(client)?;
            let mut all = Vec::new();
            let mut after = String::new();
            loop {
                let page = agent.llm_sessions(&after, 0).await.map_err(hint)?;
                all.extend(page.sessions);
                if page.next_after.is_empty() {
                    break;
                }
                after = page.next_after;
            }
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(all.iter().map(session_json).collect())
                );
            } else if all.is_empty() {
                println!("no sessions");
            } else {
                for s in &all {
                    println!(
                        "{} {} {} recordings{}",
                        s.session_id,
                        mode_name(s.mode),
                        s.recordings,
                        if s.deleted { " (deleted)" } else { "" }
                    );
                }
            }
        }
        SessionCommand::Rm {
            acting,
            session,
            reason,
        } => {
            let agent = acting.agent(client)?;
            agent
                .delete_llm_session(&session, &reason)
                .await
                .map_err(hint)?;
            println!("deleted {session}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A key (`amai-sk-...`) or the 64 hex digits of its SHA-256.
fn key_hash(key: &str) -> anyhow::Result<[u8; 32]> {
    if key.starts_with(amai_bus::llm::SESSION_KEY_PREFIX) {
        return Ok(amai_bus::llm::key_sha256(key));
    }
    let bytes = hex::decode(key)
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| {
            format!(
                "{key:?} is neither a session key ({}...) nor a SHA-256 of 64 hex digits",
                amai_bus::llm::SESSION_KEY_PREFIX
            )
        })?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

fn body_of(e: &proto::StoredEvent) -> Option<proto::EventBody> {
    e.event
        .as_ref()
        .and_then(|s| proto::EventBody::decode(s.body.as_slice()).ok())
}

fn kind_of(e: &proto::StoredEvent) -> Option<(proto::EventBody, Kind)> {
    let body = body_of(e)?;
    let kind = body.payload.clone().and_then(|p| p.kind)?;
    Some((body, kind))
}

/// Every event of a session's stream, page by page.
async fn all_recordings(agent: &Agent, session: &str) -> anyhow::Result<Vec<proto::StoredEvent>> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = agent
            .llm_recordings_page(session, after, 0)
            .await
            .map_err(hint)?;
        all.extend(page.events);
        if page.next_after_seq == 0 {
            return Ok(all);
        }
        after = page.next_after_seq;
    }
}

fn outcome_name(o: i32) -> &'static str {
    proto::LlmOutcome::try_from(o)
        .map(|o| o.as_str_name())
        .unwrap_or("LLM_OUTCOME_UNSPECIFIED")
}

async fn recordings(agent: &Agent, session: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let events = all_recordings(agent, session).await?;
    let mut rows = Vec::new();
    for e in &events {
        let Some((body, kind)) = kind_of(e) else {
            continue;
        };
        let row = match kind {
            Kind::LlmInteractionRecorded(r) => {
                json!({"seq": body.aggregate_seq, "kind": "recording",
                "request_hash": hex::encode(&r.request_hash), "occurrence": r.occurrence, "method": r.method, "path": r.path,
                "status": r.status, "outcome": outcome_name(r.outcome), "latency_us": r.latency_us, "streamed": r.streamed,
                "model": r.upstream_model})
            }
            Kind::LlmReplayMissed(m) => json!({"seq": body.aggregate_seq, "kind": "miss",
                "request_hash": hex::encode(&m.request_hash), "occurrence": m.occurrence, "method": m.method, "path": m.path,
                "run_id": m.run_id, "step": m.step, "nearest_seq": m.nearest_seq, "diff": m.diff, "reason": m.reason}),
            _ => continue,
        };
        rows.push(row);
    }
    if json_out {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no recordings");
    }
    for r in &rows {
        if r["kind"] == "recording" {
            println!(
                "#{} occ {} {} {} -> {} {} {:.1} ms",
                r["seq"],
                r["occurrence"],
                r["method"].as_str().unwrap_or_default(),
                r["path"].as_str().unwrap_or_default(),
                r["status"],
                r["outcome"].as_str().unwrap_or_default(),
                r["latency_us"].as_u64().unwrap_or_default() as f64 / 1000.0
            );
        } else {
            println!(
                "#{} step {} {} {} MISS (nearest #{}): {}",
                r["seq"],
                r["step"],
                r["method"].as_str().unwrap_or_default(),
                r["path"].as_str().unwrap_or_default(),
                r["nearest_seq"],
                r["reason"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A body's bytes: inline, or from the export's blobs.
fn body_bytes(body: Option<&proto::LlmBody>, export: &LlmExport) -> anyhow::Result<Vec<u8>> {
    let Some(body) = body else {
        return Ok(Vec::new());
    };
    match &body.blob {
        None => Ok(body.inline.clone()),
        Some(blob) => {
            let digest: [u8; 32] = blob
                .sha256
                .as_slice()
                .try_into()
                .context("a body references a blob whose digest is not 32 bytes")?;
            export
                .blobs
                .get(&digest)
                .cloned()
                .with_context(|| format!("the export lacks blob {}", hex::encode(digest)))
        }
    }
}

fn sha(bytes: &[u8]) -> anyhow::Result<Sha256Hex> {
    let a: [u8; 32] = bytes.try_into().context("a request hash is not 32 bytes")?;
    Ok(Sha256Hex(a))
}

/// The cassette of an export (blobs inlined, each signed event kept in `event_b64`).
fn to_cassette(export: &LlmExport) -> anyhow::Result<Cassette> {
    let s = &export.session;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("cannot format the export time")?;
    let mut cassette = Cassette::new(
        now,
        CassetteSession {
            session_id: s.session_id.clone(),
            owner: s.owner.clone(),
            mode: if s.mode == LlmMode::Replay as i32 {
                CassetteMode::Replay
            } else {
                CassetteMode::Record
            },
            upstreams: s
                .upstreams
                .iter()
                .filter_map(|u| LlmUpstream::try_from(*u).ok())
                .filter_map(CassetteUpstream::from_proto)
                .collect(),
            options: CassetteMatchOptions::from(&s.options.clone().unwrap_or_default()),
        },
    );
    for e in &export.events {
        let Some((body, kind)) = kind_of(e) else {
            anyhow::bail!("the session stream holds an undecodable event; verify it with `amai chain verify llm/{}`", s.session_id);
        };
        // The bytes exactly as stored, which `event_hash` covers.
        let raw = e.raw.clone();
        let event_hash = sha(&e.hash)?;
        match kind {
            Kind::LlmInteractionRecorded(r) => {
                let events = if r.streamed {
                    let list = match &r.events_blob {
                        Some(blob) => {
                            let bytes = body_bytes(
                                Some(&proto::LlmBody {
                                    inline: Vec::new(),
                                    blob: Some(blob.clone()),
                                }),
                                export,
                            )?;
                            proto::LlmSseEvents::decode(bytes.as_slice())
                                .context("a recorded stream blob does not decode")?
                                .events
                        }
                        None => r.events.clone(),
                    };
                    Some(
                        list.into_iter()
                            .map(|ev| CassetteSseEvent {
                                offset_us: ev.offset_us,
                                data: Body(ev.raw.into()),
                            })
                            .collect(),
                    )
                } else {
                    None
                };
                let response = if r.streamed {
                    None
                } else {
                    Some(Body(body_bytes(r.response.as_ref(), export)?.into()))
                };
                cassette.interactions.push(CassetteInteraction {
                    seq: body.aggregate_seq,
                    event_id: body.id.clone(),
                    event_hash,
                    request_hash: sha(&r.request_hash)?,
                    occurrence: r.occurrence,
                    upstream: LlmUpstream::try_from(r.upstream)
                        .ok()
                        .and_then(CassetteUpstream::from_proto)
                        .unwrap_or(CassetteUpstream::Openai),
                    method: r.method.clone(),
                    path: r.path.clone(),
                    request: Body(body_bytes(r.request.as_ref(), export)?.into()),
                    status: u16::try_from(r.status).unwrap_or(0),
                    headers: r.headers.clone(),
                    streamed: r.streamed,
                    response,
                    events,
                    outcome: proto::LlmOutcome::try_from(r.outcome)
                        .ok()
                        .and_then(CassetteOutcome::from_proto)
                        .unwrap_or(CassetteOutcome::UpstreamError),
                    usage: r
                        .usage
                        .map(|u| CassetteUsage {
                            input_tokens: u.input_tokens,
                            output_tokens: u.output_tokens,
                        })
                        .unwrap_or_default(),
                    latency_us: r.latency_us,
                    upstream_model: r.upstream_model.clone(),
                    detail: r.detail.clone(),
                    event_b64: Base64Bytes(raw.into()),
                });
            }
            Kind::LlmReplayMissed(m) => cassette.misses.push(CassetteMiss {
                seq: body.aggregate_seq,
                event_id: body.id.clone(),
                request_hash: sha(&m.request_hash)?,
                occurrence: m.occurrence,
                method: m.method,
                path: m.path,
                run_id: m.run_id,
                step: m.step,
                nearest_seq: m.nearest_seq,
                diff: m.diff,
                reason: m.reason,
                event_b64: Base64Bytes(raw.into()),
            }),
            _ => {}
        }
    }
    cassette.validate()?;
    Ok(cassette)
}

/// One recording, as far as a diff compares it.
struct Step {
    seq: u64,
    request_hash: Vec<u8>,
    status: u32,
    request: Vec<u8>,
    response: Vec<u8>,
    method: String,
    path: String,
}

async fn steps(agent: &Agent, session: &str) -> anyhow::Result<Vec<Step>> {
    let export = agent.export_llm_session(session).await.map_err(hint)?;
    let mut out = Vec::new();
    for e in &export.events {
        let Some((body, Kind::LlmInteractionRecorded(r))) = kind_of(e) else {
            continue;
        };
        let response = if r.streamed {
            match &r.events_blob {
                Some(_) => r
                    .events_blob
                    .as_ref()
                    .map(|b| b.sha256.clone())
                    .unwrap_or_default(),
                None => r.events.iter().flat_map(|ev| ev.raw.clone()).collect(),
            }
        } else {
            body_bytes(r.response.as_ref(), &export)?
        };
        out.push(Step {
            seq: body.aggregate_seq,
            request_hash: r.request_hash.clone(),
            status: r.status,
            request: body_bytes(r.request.as_ref(), &export)?,
            response,
            method: r.method,
            path: r.path,
        });
    }
    Ok(out)
}

async fn diff(agent: &Agent, a: &str, b: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let (left, right) = (steps(agent, a).await?, steps(agent, b).await?);
    let diverged = (0..left.len().max(right.len())).find(|&i| match (left.get(i), right.get(i)) {
        (Some(l), Some(r)) => {
            l.request_hash != r.request_hash || l.status != r.status || l.response != r.response
        }
        _ => true,
    });
    let Some(step) = diverged else {
        print(
            json_out,
            json!({"diverged": false, "steps": left.len()}),
            format!("{a} and {b} agree on all {} steps", left.len()),
        );
        return Ok(ExitCode::SUCCESS);
    };
    let (l, r) = (left.get(step), right.get(step));
    let what = match (l, r) {
        (Some(_), None) => format!("{b} ends before step {step}"),
        (None, Some(_)) => format!("{a} ends before step {step}"),
        (Some(l), Some(r)) if l.request_hash != r.request_hash => "the requests differ".into(),
        (Some(l), Some(r)) if l.status != r.status => {
            format!("status {} != {}", l.status, r.status)
        }
        _ => "the responses differ".into(),
    };
    let fields = match (l, r) {
        (Some(l), Some(r)) if l.request_hash != r.request_hash => {
            let parse = |b: &[u8]| {
                serde_json::from_slice::<serde_json::Value>(b).unwrap_or(serde_json::Value::Null)
            };
            amai_llm::diff::field_diff(&parse(&l.request), &parse(&r.request))
                .iter()
                .map(ToString::to_string)
                .collect()
        }
        _ => Vec::new(),
    };
    let side = |s: Option<&Step>| {
        s.map(|s| json!({"seq": s.seq, "method": s.method, "path": s.path, "status": s.status, "request_hash": hex::encode(&s.request_hash)}))
    };
    let mut text = format!("{a} and {b} diverge at step {step}: {what}");
    for (name, s) in [(a, l), (b, r)] {
        if let Some(s) = s {
            text.push_str(&format!(
                "\n  {name}: #{} {} {} -> {}",
                s.seq, s.method, s.path, s.status
            ));
        }
    }
    for f in &fields {
        text.push_str(&format!("\n  {f}"));
    }
    print(
        json_out,
        json!({"diverged": true, "step": step, "what": what, "a": side(l), "b": side(r), "request_diff": fields}),
        text,
    );
    Ok(ExitCode::FAILURE)
}
