//! `amai replay --as-of <point>` and the `--as-of` of `amai agent show` and
//! `amai trust show`: the roles' projections rebuilt as of a point in history
//! into a scratch directory (straight from the streams, verified as live
//! projections are; nothing is appended), and queries answered from them.
//! A point is an RFC 3339 time or stream positions (`AMAI_AGENTS:120,...`).
//! Needs NATS (`--nats-url`) and the trust root, like `amai gateway`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use amai_bus::proto;
use amai_bus::query::{IDENTITY_GET, TRUST_GET};
use amai_workers::as_of::{AsOf, AsOfPoint};
use anyhow::Context;
use serde_json::json;

use crate::client_cmd::print;
use crate::config::Settings;

/// How long a replay may take per projection.
const REPLAY_WAIT: Duration = Duration::from_secs(600);

/// `amai replay` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// The point: an RFC 3339 time, or stream positions
    /// (`AMAI_AGENTS:120,AMAI_TRUST:40`).
    #[arg(long)]
    as_of: String,
    /// Roles whose projections to rebuild (repeat; default: every role with
    /// projections).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Keep the rebuilt projections here (default: a temporary directory,
    /// removed at the end).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// A scratch directory: the given one, or a temporary one.
enum Scratch {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Scratch {
    fn new(given: Option<PathBuf>) -> anyhow::Result<Self> {
        Ok(match given {
            Some(p) => {
                std::fs::create_dir_all(&p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                Scratch::Kept(p)
            }
            None => Scratch::Temp(tempfile::Builder::new().prefix("amai-as-of-").tempdir()?),
        })
    }

    fn path(&self) -> &std::path::Path {
        match self {
            Scratch::Kept(p) => p,
            Scratch::Temp(t) => t.path(),
        }
    }
}

/// Rebuilds `role` as of `point` under `scratch/<role>`.
async fn rebuild(
    settings: &Settings,
    role: &str,
    point: &AsOfPoint,
    scratch: &std::path::Path,
) -> anyhow::Result<AsOf> {
    let role = amai_workers::roles::find(role)?;
    let (client, store) = crate::server::nats_store(settings, "amai-replay").await?;
    let dir = scratch.join(role.name());
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "amai replay: rebuilding the {} role's projections as of the point…",
        role.name()
    );
    Ok(AsOf::build(role, client, store, point, &dir, REPLAY_WAIT).await?)
}

fn point(s: &str) -> anyhow::Result<AsOfPoint> {
    Ok(s.parse::<AsOfPoint>()?)
}

/// `amai replay`.
pub(crate) async fn replay(settings: &Settings, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let point = point(&args.as_of)?;
    let scratch = Scratch::new(args.scratch.clone())?;
    let roles: Vec<String> = if args.roles.is_empty() {
        amai_workers::roles::registry()
            .iter()
            .filter(|r| !r.projections().is_empty())
            .map(|r| r.name().to_string())
            .collect()
    } else {
        args.roles.clone()
    };
    let mut out = Vec::new();
    let mut text = String::new();
    for role in &roles {
        let as_of = rebuild(settings, role, &point, scratch.path()).await?;
        let mut bounds: Vec<_> = as_of.bounds().iter().collect();
        bounds.sort();
        for p in as_of.projections() {
            text.push_str(&format!(
                "{role}/{}: {} entries\n",
                p.name(),
                p.tree().len()
            ));
        }
        text.push_str(&format!(
            "  as of {}\n",
            bounds
                .iter()
                .map(|(s, q)| format!("{s}:{q}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
        out.push(json!({
            "role": role,
            "projections": as_of.projections().iter().map(|p| json!({"name": p.name(), "entries": p.tree().len()})).collect::<Vec<_>>(),
            "positions": as_of.bounds(),
        }));
        as_of.close().await;
    }
    if let Scratch::Kept(p) = &scratch {
        text.push_str(&format!("projections kept in {}", p.display()));
    }
    print(
        args.json,
        json!({ "as_of": args.as_of, "roles": out, "scratch": args.scratch }),
        text.trim_end().to_string(),
    );
    Ok(ExitCode::SUCCESS)
}

fn selector(who: &str) -> proto::get_identity_request::Selector {
    use proto::get_identity_request::Selector;
    if who.len() == 32 && who.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Selector::Id(who.to_string())
    } else {
        Selector::Name(who.to_string())
    }
}

/// `amai agent show --as-of`: the identity (and its trust score) as of the point.
pub(crate) async fn identity_as_of(
    settings: &Settings,
    who: &str,
    at: &str,
) -> anyhow::Result<proto::Identity> {
    let point = point(at)?;
    let scratch = Scratch::new(None)?;
    let identity = rebuild(settings, "identity", &point, scratch.path()).await?;
    let mut i: proto::Identity = identity
        .ask(
            IDENTITY_GET,
            &proto::GetIdentityRequest {
                selector: Some(selector(who)),
                min_position: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    identity.close().await;
    if let Ok(trust) = rebuild(settings, "trust", &point, scratch.path()).await {
        let s: Result<proto::TrustSummary, _> = trust
            .ask(
                TRUST_GET,
                &proto::GetTrustRequest {
                    agent_id: i.id.clone(),
                    last: 0,
                    min_position: None,
                },
            )
            .await;
        if let Ok(s) = s {
            i.trust_score = Some(s.score);
        }
        trust.close().await;
    }
    Ok(i)
}

/// `amai trust show --as-of`: the trust summary as of the point.
pub(crate) async fn trust_as_of(
    settings: &Settings,
    who: &str,
    last: u32,
    at: &str,
) -> anyhow::Result<proto::TrustSummary> {
    let point = point(at)?;
    let scratch = Scratch::new(None)?;
    let id = match selector(who) {
        proto::get_identity_request::Selector::Id(id) => id,
        proto::get_identity_request::Selector::Name(_) => {
            identity_as_of(settings, who, at).await?.id
        }
    };
    let trust = rebuild(settings, "trust", &point, scratch.path()).await?;
    let s = trust
        .ask(
            TRUST_GET,
            &proto::GetTrustRequest {
                agent_id: id,
                last,
                min_position: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    trust.close().await;
    Ok(s)
}
