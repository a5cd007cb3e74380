//! The jail phase: a trivial command run in a jail through the gateway,
//! against a raw `docker run --rm` of the same image and command, in the same
//! run; then the cost of the diff step as the size of what a run writes grows.
//!
//! It needs a Docker Engine: when [`amai_jail::Engine::connect`] fails the
//! phase is skipped and the report says why (never silently). Otherwise the
//! registry's jail role starts (as under `amai up`; its preflight removes the
//! jail containers an earlier instance left on the engine), an agent
//! registers through the gateway, and:
//!
//! 1. warm-up: one jail run of [`TRIVIAL`] (it builds the `busybox` image on
//!    first use) and one `docker run --rm` of the image the jail ran;
//! 2. [`Sizes::jail_runs`] runs of each, interleaved (the order alternates
//!    every round, so both share the machine's noise): a jail run is timed
//!    from the SDK's `create_jail(run = true)` until `wait_jail` returns the
//!    jail finished; a docker run from spawning the CLI until it exits;
//! 3. [`Sizes::jail_diff_runs`] jail runs writing each size of
//!    [`DIFF_SIZES`] into `/workspace`, timed the same way.
//!
//! Besides end-to-end medians, the jail's own timestamps (JetStream publish
//! times of its events) split a run: request to `jail.run_started`, the
//! command's container (start to exit, as the role measured it), the rest of
//! the run until `jail.run_finished` (inspection, snapshot, diff, blobs) and
//! until the client saw it.

use std::time::{Duration, Instant, SystemTime};

use amai_bus::proto::{self, IdentityKind, JailState};
use amai_bus::IdentityKeys;
use amai_client::{Agent, AmaiClient};

use crate::error::{Context as _, Fail};
use crate::platform::Platform;
use crate::Sizes;

/// The trivial command both sides run.
pub(crate) const TRIVIAL: &str = r#"{"image":"busybox","command":["true"]}"#;
/// The image name jails ask for (built locally on demand).
const IMAGE: &str = "busybox";
/// The sizes the diff runs write into `/workspace` (name in the report, bytes).
pub(crate) const DIFF_SIZES: [(&str, u64); 3] = [("0", 0), ("1mib", 1 << 20), ("16mib", 16 << 20)];
/// Bound on one jail run (the first one builds the image).
const JAIL_WAIT: Duration = Duration::from_secs(120);

/// Durations of a few runs, in milliseconds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    /// Sorted.
    ms: Vec<f64>,
}

impl Samples {
    pub(crate) fn from_ms(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        Samples { ms }
    }

    /// How many runs.
    pub(crate) fn len(&self) -> usize {
        self.ms.len()
    }

    /// The median (the mean of the two middle runs of an even count); NaN
    /// without runs.
    pub(crate) fn median(&self) -> f64 {
        let n = self.ms.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => self.ms[n / 2],
            _ => (self.ms[n / 2 - 1] + self.ms[n / 2]) / 2.0,
        }
    }

    /// The 90th percentile (nearest rank); NaN without runs.
    pub(crate) fn p90(&self) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let rank = (0.9 * self.ms.len() as f64).ceil() as usize;
        self.ms[rank.clamp(1, self.ms.len()) - 1]
    }

    fn summary(&self) -> String {
        format!(
            "median {:.1} ms, p90 {:.1} ms ({} runs)",
            self.median(),
            self.p90(),
            self.len()
        )
    }
}

/// Where a jail run's time goes (one sample per timed run).
#[derive(Debug, Default, Clone)]
pub(crate) struct Breakdown {
    /// Request published to `jail.run_started` published: the request and
    /// create reactors, network, image check, container and volume creation,
    /// the snapshot before.
    pub(crate) to_started: Samples,
    /// The command's container, start to exit (`JailRunFinished::duration_ms`).
    pub(crate) container: Samples,
    /// `jail.run_started` to `jail.run_finished` minus the container:
    /// inspection and removal, the snapshot after, the diff, the blobs.
    pub(crate) after_exit: Samples,
    /// `jail.run_finished` published to the client holding the finished jail.
    pub(crate) to_client: Samples,
}

impl Breakdown {
    fn new(parts: &[Parts]) -> Self {
        let pick = |f: fn(&Parts) -> f64| Samples::from_ms(parts.iter().map(f).collect());
        Breakdown {
            to_started: pick(|p| p.to_started),
            container: pick(|p| p.container),
            after_exit: pick(|p| p.after_exit),
            to_client: pick(|p| p.to_client),
        }
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "request->run_started {:.1} ms, container {:.1} ms, after exit {:.1} ms, run_finished->client {:.1} ms (medians)",
            self.to_started.median(),
            self.container.median(),
            self.after_exit.median(),
            self.to_client.median()
        )
    }
}

/// One run's split, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Parts {
    to_started: f64,
    container: f64,
    after_exit: f64,
    to_client: f64,
}

/// What the jail phase measured.
#[derive(Debug, Default)]
pub(crate) struct JailFigures {
    /// Why the phase did not run (no Docker Engine answered).
    pub(crate) skipped: Option<String>,
    /// The engine's version.
    pub(crate) engine_version: String,
    /// The image both sides ran (`sha256:…`).
    pub(crate) image_id: String,
    /// End to end, request to finished jail visible.
    pub(crate) jail_run: Samples,
    /// `docker run --rm <image> true`.
    pub(crate) docker_run: Samples,
    /// Where the jail runs' time went.
    pub(crate) breakdown: Breakdown,
    /// Per [`DIFF_SIZES`] entry: end to end, and the time after exit.
    pub(crate) diff: Vec<(&'static str, Samples, Samples)>,
}

impl JailFigures {
    /// Ratio of the medians (NaN when skipped).
    pub(crate) fn jail_vs_docker_run(&self) -> f64 {
        self.jail_run.median() / self.docker_run.median()
    }
}

/// Runs the jail phase (see the module docs); a missing engine is a skip,
/// anything else that fails is an error.
pub(crate) async fn measure(p: &mut Platform, sizes: &Sizes) -> Result<JailFigures, Fail> {
    let engine = match amai_jail::Engine::connect().await {
        Ok(engine) => engine,
        Err(e) => {
            let reason = e.to_string();
            p.say(&format!("jail phase skipped: {reason}"));
            return Ok(JailFigures {
                skipped: Some(reason),
                ..JailFigures::default()
            });
        }
    };
    let mut out = JailFigures {
        engine_version: engine.version().server_version.clone(),
        ..JailFigures::default()
    };
    drop(engine);
    p.start_jail_role().await?;
    p.say(&format!(
        "jail role up on Docker Engine {}",
        out.engine_version
    ));
    let sdk = AmaiClient::connect(p.gateway_url.clone()).await?;
    let agent = sdk.agent(IdentityKeys::generate());
    agent
        .register(
            &format!("bench-jailer-{}", p.run_id),
            IdentityKind::Agent,
            Default::default(),
        )
        .await
        .context("cannot register the jail owner")?;

    // 1. Warm-up (builds the image; the image id is the one the jail ran).
    let (warm, _) = jail_run(&agent, TRIVIAL.as_bytes()).await?;
    out.image_id = warm.image_id.clone();
    if out.image_id.is_empty() {
        return Err(Fail::msg("the warm-up jail finished without an image id"));
    }
    docker_run(&out.image_id).await?;
    p.say(&format!("jail warm-up done ({IMAGE} is {})", out.image_id));

    // 2. Interleaved: jail then docker on even rounds, docker then jail on odd.
    let (mut jail_ms, mut docker_ms, mut parts) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..sizes.jail_runs {
        if round % 2 == 1 {
            docker_ms.push(docker_run(&out.image_id).await?);
        }
        let (jail, elapsed) = jail_run(&agent, TRIVIAL.as_bytes()).await?;
        jail_ms.push(elapsed);
        parts.push(split(&jail)?);
        if round % 2 == 0 {
            docker_ms.push(docker_run(&out.image_id).await?);
        }
    }
    out.jail_run = Samples::from_ms(jail_ms);
    out.docker_run = Samples::from_ms(docker_ms);
    out.breakdown = Breakdown::new(&parts);
    p.say(&format!("jail run      {}", out.jail_run.summary()));
    p.say(&format!(
        "docker run    {}  (jail {:.2}x docker)",
        out.docker_run.summary(),
        out.jail_vs_docker_run()
    ));
    p.say(&format!("jail split    {}", out.breakdown.summary()));

    // 3. The diff step against the size written.
    for (name, bytes) in DIFF_SIZES {
        let spec = diff_spec(bytes);
        let (mut ms, mut after) = (Vec::new(), Vec::new());
        for _ in 0..sizes.jail_diff_runs {
            let (jail, elapsed) = jail_run(&agent, spec.as_bytes()).await?;
            ms.push(elapsed);
            after.push(split(&jail)?.after_exit);
        }
        let (ms, after) = (Samples::from_ms(ms), Samples::from_ms(after));
        p.say(&format!(
            "jail diff {name:>5}  {}; after exit median {:.1} ms",
            ms.summary(),
            after.median()
        ));
        out.diff.push((name, ms, after));
    }
    Ok(out)
}

/// A spec writing `bytes` zero bytes to `/workspace/f` (an empty file for 0).
fn diff_spec(bytes: u64) -> String {
    serde_json::json!({
        "image": IMAGE,
        "command": ["sh", "-c", format!("head -c {bytes} /dev/zero > /workspace/f")],
    })
    .to_string()
}

/// Creates a jail running `spec` and waits until it is finished: (the
/// finished jail, milliseconds from the request until the client held it).
async fn jail_run(agent: &Agent, spec: &[u8]) -> Result<(proto::Jail, f64), Fail> {
    let started = Instant::now();
    let created = agent.create_jail(spec, true).await.context("create_jail")?;
    // The gateway may answer before the run ends (its own bound): ask again.
    let deadline = started + JAIL_WAIT;
    let jail = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let jail = agent
            .client()
            .wait_jail(&created.jail_id, left)
            .await
            .context("wait_jail")?;
        let ended = [JailState::Finished, JailState::Failed, JailState::Deleted]
            .iter()
            .any(|s| *s as i32 == jail.state);
        if ended || left.is_zero() {
            break jail;
        }
    };
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    if jail.state != JailState::Finished as i32 {
        let why = jail
            .failed
            .as_ref()
            .map(|f| f.detail.clone())
            .unwrap_or_else(|| format!("state {:?}", JailState::try_from(jail.state)));
        return Err(Fail::msg(format!(
            "jail {} did not finish: {why}",
            created.jail_id
        )));
    }
    match &jail.finished {
        Some(f) if f.exit_code == 0 => {}
        other => {
            return Err(Fail::msg(format!(
                "jail {} exited with {:?}",
                created.jail_id,
                other.as_ref().map(|f| f.exit_code)
            )))
        }
    }
    Ok((jail, elapsed))
}

/// Milliseconds since the epoch of a protobuf timestamp.
fn ms(t: Option<&prost_types::Timestamp>) -> Option<f64> {
    t.map(|t| t.seconds as f64 * 1e3 + f64::from(t.nanos) / 1e6)
}

/// A finished jail's split (see [`Breakdown`]), the client's side taken now.
fn split(jail: &proto::Jail) -> Result<Parts, Fail> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs_f64()
        * 1e3;
    let missing = || Fail::msg(format!("jail {} lacks a timestamp", jail.jail_id));
    let requested = ms(jail.requested_at.as_ref()).ok_or_else(missing)?;
    let started = ms(jail.started_at.as_ref()).ok_or_else(missing)?;
    let finished = ms(jail.finished_at.as_ref()).ok_or_else(missing)?;
    let container = jail.finished.as_ref().map_or(0, |f| f.duration_ms) as f64;
    Ok(Parts {
        to_started: started - requested,
        container,
        after_exit: finished - started - container,
        to_client: now - finished,
    })
}

/// `docker run --rm <image> true` through the CLI: milliseconds from spawning
/// it until it exited (successfully).
async fn docker_run(image: &str) -> Result<f64, Fail> {
    let started = Instant::now();
    let output = tokio::process::Command::new("docker")
        .args(["run", "--rm", image, "true"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run the docker CLI")?;
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    if !output.status.success() {
        return Err(Fail::msg(format!(
            "docker run --rm {image} true failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(Samples::from_ms(vec![4.0, 1.0, 3.0, 2.0]).median(), 2.5);
        assert_eq!(Samples::from_ms(vec![5.0, 1.0, 3.0]).median(), 3.0);
        assert!(Samples::default().median().is_nan());
    }

    #[test]
    fn the_p90_is_the_nearest_rank() {
        let s = Samples::from_ms((1..=10).map(f64::from).collect());
        assert_eq!(s.p90(), 9.0);
        assert_eq!(Samples::from_ms(vec![7.0]).p90(), 7.0);
    }

    #[test]
    fn the_specs_parse() {
        amai_jail_spec::JailSpec::from_json(TRIVIAL.as_bytes()).expect("trivial");
        for (_, bytes) in DIFF_SIZES {
            amai_jail_spec::JailSpec::from_json(diff_spec(bytes).as_bytes()).expect("diff");
        }
    }
}
