//! `amai trust ...`: trust scores, history, alerts, explanations, reports and
//! endorsements, thin wrappers over the SDK's [`amai_client::trust`]. Agent
//! arguments take an identity id or a registered name. `show` is public; the
//! other reads are signed (`--keys`: the agent itself, or an operator key).
//! Every command takes `--json` (one JSON document on stdout).

use std::process::ExitCode;
use std::time::Duration;

use amai_bus::proto;
use amai_client::{AmaiClient, ClientError, ErrorKind};
use anyhow::Context;
use serde_json::json;

use crate::client_cmd::{connect, print, Acting, Reading};
use crate::config::Settings;

/// `amai trust ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TrustCommand {
    /// An agent's live score, its components, the latest deltas and its
    /// behavioural fingerprint (public).
    Show {
        /// Id (32 hex) or name.
        agent: String,
        /// How many of the latest deltas to show (at most 100).
        #[arg(long, default_value_t = 10)]
        last: u32,
        /// As of a point in history (an RFC 3339 time or stream positions
        /// such as `AMAI_TRUST_FEED:300`): rebuilt from the streams (needs
        /// --nats-url and the trust root).
        #[arg(long)]
        as_of: Option<String>,
        /// Print JSON.
        #[arg(long, alias = "as-json")]
        json: bool,
    },
    /// Every delta of an agent's trust, oldest first (signed: the agent or an
    /// operator).
    History {
        #[command(flatten)]
        reading: Reading,
        /// Id or name (default: the --keys identity).
        agent: Option<String>,
        /// Deltas after this trust sequence.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Page size (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Trust alerts, newest first (signed: your own; an operator key lists
    /// everyone's).
    Alerts {
        #[command(flatten)]
        reading: Reading,
        /// Only this agent's (id or name).
        #[arg(long)]
        agent: Option<String>,
        /// info, warning or critical.
        #[arg(long, value_parser = ["info", "warning", "critical"])]
        min_severity: Option<String>,
        /// Alerts whose window ends at or after this time: RFC 3339, unix
        /// milliseconds, or an age such as 30m, 24h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Alerts whose window ends at or before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// At most this many (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The evidence events behind one trust delta or alert (signed: its agent
    /// or an operator).
    Explain {
        #[command(flatten)]
        reading: Reading,
        /// The id of a trust.adjusted or trust.alert_raised event.
        delta: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A markdown report on an agent (signed: the agent or an operator).
    Report {
        #[command(flatten)]
        reading: Reading,
        /// Id or name (default: the --keys identity).
        agent: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Vouch for another agent (an `agent.endorsed` on your own chain).
    Endorse {
        #[command(flatten)]
        acting: Acting,
        /// The agent to endorse: id or name.
        endorsee: String,
        /// Why, in your words (at most 512 bytes).
        #[arg(long, default_value = "")]
        statement: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Adds what to do to a refusal.
fn hint(e: ClientError) -> anyhow::Error {
    let hint = match e.kind() {
        ErrorKind::ReadNotPermitted => Some(
            "trust history, reports, alerts and explanations are read by the agent itself (--keys its key file) or an operator (--keys <data-dir>/keys/operator.json)",
        ),
        ErrorKind::SignatureMissing => Some("pass --keys FILE (or AMAI_KEYS) to sign the read"),
        ErrorKind::UnknownSigner => {
            Some("the --keys identity is not registered on this deployment")
        }
        ErrorKind::NotFound => Some(
            "unknown to the trust service: check the id or name (`amai agent show`); a new agent appears once the trust worker has seen its registration",
        ),
        ErrorKind::WorkerUnavailable => Some(
            "the trust worker is not answering: run `amai up`, or `amai worker --role trust` next to the gateway",
        ),
        ErrorKind::SelfEndorsement => Some("endorse another agent, not yourself"),
        ErrorKind::AlreadyEndorsed => Some("you endorsed this agent already; an endorsement counts once"),
        ErrorKind::EndorseeNotFound => {
            Some("no such identity: check the id or name with `amai agent show`")
        }
        ErrorKind::EndorseeNotAnAgent => Some("only agents are endorsed, not operators or services"),
        ErrorKind::EndorseeRevoked => Some("the endorsee was revoked; it cannot be endorsed"),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::Error::new(e).context(h.to_string()),
        None => anyhow::Error::new(e),
    }
}

fn milli(v: i64) -> String {
    format!("{:.3}", v as f64 / 1000.0)
}

fn time_string(ms: i64) -> String {
    if ms == 0 {
        return String::new();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn severity_name(s: i32) -> &'static str {
    match proto::TrustSeverity::try_from(s).unwrap_or_default() {
        proto::TrustSeverity::Unspecified => "unspecified",
        proto::TrustSeverity::Info => "info",
        proto::TrustSeverity::Warning => "warning",
        proto::TrustSeverity::Critical => "critical",
    }
}

fn window_json(w: Option<&proto::TrustWindow>) -> serde_json::Value {
    w.map_or(serde_json::Value::Null, |w| {
        json!({"from_ms": w.from_ms, "to_ms": w.to_ms, "first_event": w.first_event,
            "last_event": w.last_event, "count": w.count})
    })
}

pub(crate) fn delta_json(d: &proto::TrustDelta) -> serde_json::Value {
    let kind = match &d.kind {
        Some(proto::trust_delta::Kind::Adjusted(a)) => json!({"adjusted": {
            "agent_id": a.agent_id, "signal": a.signal,
            "positive_milli": a.positive_milli, "negative_milli": a.negative_milli,
            "score_before_milli": a.score_before_milli, "score_after_milli": a.score_after_milli,
            "reason": a.reason, "evidence": a.evidence, "event_time_ms": a.event_time_ms,
        }}),
        Some(proto::trust_delta::Kind::Alert(a)) => json!({"alert": {
            "agent_id": a.agent_id, "kind": a.kind, "severity": severity_name(a.severity),
            "statistic_milli": a.statistic_milli, "threshold_milli": a.threshold_milli,
            "window": window_json(a.window.as_ref()), "reason": a.reason, "evidence": a.evidence,
        }}),
        None => serde_json::Value::Null,
    };
    json!({"event_id": d.event_id, "trust_seq": d.trust_seq, "cause_id": d.cause_id,
        "cause_type": d.cause_type, "event_time_ms": d.event_time_ms, "kind": kind})
}

fn delta_line(d: &proto::TrustDelta) -> String {
    let head = format!(
        "#{:<4} {} {}",
        d.trust_seq,
        time_string(d.event_time_ms),
        d.event_id
    );
    match &d.kind {
        Some(proto::trust_delta::Kind::Adjusted(a)) => format!(
            "{head}\n      {} {} -> {} (+{} / -{}): {}",
            a.signal,
            milli(a.score_before_milli),
            milli(a.score_after_milli),
            milli(a.positive_milli),
            milli(a.negative_milli),
            a.reason
        ),
        Some(proto::trust_delta::Kind::Alert(a)) => format!(
            "{head}\n      ALERT {} {} (statistic {} over {}, {} events): {}",
            severity_name(a.severity),
            a.kind,
            milli(a.statistic_milli),
            milli(a.threshold_milli),
            a.window.as_ref().map_or(0, |w| w.count),
            a.reason
        ),
        None => head,
    }
}

fn summary_json(s: &proto::TrustSummary) -> serde_json::Value {
    let f = s.fingerprint.clone().unwrap_or_default();
    json!({
        "agent_id": s.agent_id, "score": s.score, "score_milli": s.score_milli,
        "prior_positive_milli": s.prior_positive_milli, "prior_negative_milli": s.prior_negative_milli,
        "positive_milli": s.positive_milli, "negative_milli": s.negative_milli,
        "components": s.components.iter().map(|c| json!({"signal": c.signal,
            "positive_milli": c.positive_milli, "negative_milli": c.negative_milli, "count": c.count})).collect::<Vec<_>>(),
        "last_deltas": s.last_deltas.iter().map(delta_json).collect::<Vec<_>>(),
        "clock_ms": s.clock_ms, "alert_count": s.alert_count,
        "fingerprint": {
            "action_counts": f.action_counts, "actions": f.actions,
            "rate_median_milli": f.rate_median_milli, "current_bucket_count": f.current_bucket_count,
            "bucket_ms": f.bucket_ms,
            "top_peers": f.top_peers.iter().map(|p| json!({"peer": p.peer, "interactions": p.interactions, "first_ms": p.first_ms})).collect::<Vec<_>>(),
            "peer_count": f.peer_count, "jail_runs": f.jail_runs, "llm_replay_misses": f.llm_replay_misses,
        },
        "position": s.position.as_ref().map(|p| json!({"stream": p.stream, "seq": p.seq})),
    })
}

fn summary_text(name: &str, s: &proto::TrustSummary) -> String {
    let mut out = format!(
        "{name}: trust {:.1}\n  evidence +{} / -{} (prior +{} / -{}), clock {}\n  alerts: {}",
        s.score,
        milli(s.positive_milli),
        milli(s.negative_milli),
        milli(s.prior_positive_milli),
        milli(s.prior_negative_milli),
        time_string(s.clock_ms),
        s.alert_count
    );
    if !s.components.is_empty() {
        out.push_str("\n  components:");
        for c in &s.components {
            out.push_str(&format!(
                "\n    {:<24} +{} / -{} ({} observations)",
                c.signal,
                milli(c.positive_milli),
                milli(c.negative_milli),
                c.count
            ));
        }
    }
    if let Some(f) = &s.fingerprint {
        out.push_str(&format!(
            "\n  fingerprint: {} actions, {} peers, {} jail runs, {} LLM replay misses",
            f.actions, f.peer_count, f.jail_runs, f.llm_replay_misses
        ));
    }
    if s.last_deltas.is_empty() {
        out.push_str("\n  no deltas yet");
    } else {
        out.push_str("\n  latest deltas (newest first):");
        for d in &s.last_deltas {
            out.push_str(&format!("\n    {}", delta_line(d)));
        }
    }
    out
}

/// Unix milliseconds of `s`: RFC 3339, unix milliseconds, or an age before
/// now (`30s`, `30m`, `24h`, `7d`).
fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let now = time::OffsetDateTime::now_utc();
    if let Some((n, unit)) = s
        .char_indices()
        .last()
        .map(|(i, c)| (&s[..i], c))
        .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        let n: u64 = n.parse()?;
        let secs = match unit {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            'd' => n * 86_400,
            _ => anyhow::bail!("unknown unit {unit:?} in {s:?}: use s, m, h or d"),
        };
        let t = now - Duration::from_secs(secs);
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("{s:?} is not a time: use RFC 3339 (2026-12-03T14:00:00Z), unix milliseconds, or an age such as 24h")
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The agent a signed read is about: the argument (id or name), else the signer.
async fn agent_or_signer(client: &AmaiClient, agent: Option<&str>) -> anyhow::Result<String> {
    match agent {
        Some(who) => Ok(client.resolve_id(who).await.map_err(hint)?),
        None => client
            .signer_id()
            .map(str::to_string)
            .context("name the agent, or pass --keys to read your own"),
    }
}

/// `amai trust`.
pub(crate) async fn trust(settings: &Settings, cmd: TrustCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        TrustCommand::Show {
            agent,
            last,
            as_of,
            json,
        } => {
            let (id, s) = match as_of {
                Some(at) => {
                    let s = crate::replay_cmd::trust_as_of(settings, &agent, last, &at).await?;
                    (s.agent_id.clone(), s)
                }
                None => {
                    let id = client.resolve_id(&agent).await.map_err(hint)?;
                    let s = client
                        .trust_request(proto::GetTrustRequest {
                            agent_id: id.clone(),
                            last,
                            min_position: None,
                        })
                        .await
                        .map_err(hint)?;
                    (id, s)
                }
            };
            let name = if agent == id {
                id
            } else {
                format!("{agent} ({id})")
            };
            print(json, summary_json(&s), summary_text(&name, &s));
        }
        TrustCommand::History {
            reading,
            agent,
            after,
            limit,
            json,
        } => {
            let client = reading.sign(client, settings)?;
            let id = agent_or_signer(&client, agent.as_deref()).await?;
            let page = client
                .trust_history(&id, after, limit)
                .await
                .map_err(hint)?;
            let mut text = format!("trust history of {id}");
            if page.deltas.is_empty() {
                text.push_str("\n  no deltas");
            }
            for d in &page.deltas {
                text.push_str(&format!("\n  {}", delta_line(d)));
            }
            if page.more {
                text.push_str(&format!("\n  more: --after {}", page.next_after_seq));
            }
            print(
                json,
                json!({"agent_id": id, "deltas": page.deltas.iter().map(delta_json).collect::<Vec<_>>(),
                    "next_after_seq": page.next_after_seq, "more": page.more}),
                text,
            );
        }
        TrustCommand::Alerts {
            reading,
            agent,
            min_severity,
            since,
            until,
            limit,
            json,
        } => {
            let client = reading.sign(client, settings)?;
            let agent_id = match agent.as_deref() {
                Some(who) => client.resolve_id(who).await.map_err(hint)?,
                None => String::new(),
            };
            let min_severity = match min_severity.as_deref() {
                Some("info") => proto::TrustSeverity::Info,
                Some("warning") => proto::TrustSeverity::Warning,
                Some("critical") => proto::TrustSeverity::Critical,
                _ => proto::TrustSeverity::Unspecified,
            };
            let filter = proto::ListTrustAlertsRequest {
                agent_id,
                min_severity: min_severity as i32,
                since_ms: since.as_deref().map(parse_time).transpose()?.unwrap_or(0),
                until_ms: until.as_deref().map(parse_time).transpose()?.unwrap_or(0),
                limit,
            };
            let list = client.trust_alerts(filter).await.map_err(hint)?;
            let mut text = String::new();
            if list.alerts.is_empty() {
                text.push_str("no alerts");
            }
            for (i, d) in list.alerts.iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                let agent = match &d.kind {
                    Some(proto::trust_delta::Kind::Alert(a)) => a.agent_id.as_str(),
                    _ => "",
                };
                text.push_str(&format!("{agent} {}", delta_line(d)));
            }
            print(
                json,
                json!({"alerts": list.alerts.iter().map(delta_json).collect::<Vec<_>>()}),
                text,
            );
        }
        TrustCommand::Explain {
            reading,
            delta,
            json,
        } => {
            let client = reading.sign(client, settings)?;
            let e = client.explain_trust(&delta).await.map_err(hint)?;
            let d = e.delta.clone().unwrap_or_default();
            let cited = match &d.kind {
                Some(proto::trust_delta::Kind::Adjusted(a)) => a.evidence.clone(),
                Some(proto::trust_delta::Kind::Alert(a)) => a.evidence.clone(),
                None => Vec::new(),
            };
            let shown: Vec<serde_json::Value> = e
                .evidence
                .iter()
                .map(|s| {
                    let body = s.event.as_ref().and_then(|ev| {
                        <proto::EventBody as prost::Message>::decode(ev.body.as_slice()).ok()
                    });
                    let pos = s.position.clone().unwrap_or_default();
                    json!({"stream": pos.stream, "seq": pos.seq, "subject": s.subject,
                        "hash": hex::encode(&s.hash),
                        "event_id": body.as_ref().map(|b| b.id.clone()),
                        "type": body.as_ref().map(|b| b.r#type.clone()),
                        "actor": body.as_ref().map(|b| b.actor.clone())})
                })
                .collect();
            let mut text = delta_line(&d);
            text.push_str(&format!(
                "\n  caused by {} ({})\n  evidence: {} cited, {} readable by you",
                d.cause_id,
                d.cause_type,
                cited.len(),
                shown.len()
            ));
            for v in &shown {
                text.push_str(&format!(
                    "\n    {}:{} {} {} by {}",
                    v["stream"].as_str().unwrap_or_default(),
                    v["seq"],
                    v["type"].as_str().unwrap_or_default(),
                    v["event_id"].as_str().unwrap_or_default(),
                    v["actor"].as_str().unwrap_or_default()
                ));
            }
            print(
                json,
                json!({"delta": delta_json(&d), "cited": cited, "evidence": shown}),
                text,
            );
        }
        TrustCommand::Report {
            reading,
            agent,
            json,
        } => {
            let client = reading.sign(client, settings)?;
            let id = agent_or_signer(&client, agent.as_deref()).await?;
            let r = client.trust_report(&id).await.map_err(hint)?;
            print(
                json,
                json!({"agent_id": r.agent_id, "markdown": r.markdown, "source": r.source}),
                r.markdown.clone(),
            );
        }
        TrustCommand::Endorse {
            acting,
            endorsee,
            statement,
            json,
        } => {
            let agent = acting.agent(&client)?;
            let endorsee_id = client.resolve_id(&endorsee).await.map_err(hint)?;
            let r = agent
                .endorse(&endorsee_id, &statement)
                .await
                .map_err(hint)?;
            let pos = r.position.clone().unwrap_or_default();
            print(
                json,
                json!({"endorser": agent.id(), "endorsee": endorsee_id, "aggregate_seq": r.aggregate_seq,
                    "hash": hex::encode(&r.hash), "duplicate": r.duplicate,
                    "position": {"stream": pos.stream, "seq": pos.seq}}),
                format!(
                    "{} endorsed {endorsee} ({endorsee_id}) at seq {}{}",
                    agent.id(),
                    r.aggregate_seq,
                    if r.duplicate { " (already there)" } else { "" }
                ),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_milliseconds_or_ages() {
        assert_eq!(parse_time("1700000000000").expect("ms"), 1_700_000_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").expect("rfc3339"),
            1_700_000_000_000
        );
        let day = parse_time("1d").expect("age");
        let hour = parse_time("1h").expect("age");
        assert!(day < hour);
        assert!(parse_time("1w").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
