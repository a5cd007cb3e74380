//! `amai export` and `amai import`: a deployment's stored history to a file
//! (`amai-export`'s format) and back into a fresh deployment, straight from
//! and to NATS (no gateway, no worker), with a progress bar on stderr and a
//! summary (`--json`: one object on stdout).
//!
//! **Export** reads each selected stream with an ordered consumer up to its
//! last sequence at the start (the trust feed's is taken first, so every feed
//! copy's original is in the export), keeps the messages the selection asks
//! for verbatim, adds the audit chain `audit/<stream>` of every exported
//! stream and every blob an exported event references, spools all of it,
//! then writes manifest, records and trailer to `FILE.partial` and renames it
//! to `FILE`.
//!
//! **Import** reads the whole file first and refuses it, publishing nothing,
//! unless it reads cleanly, every stream's range starts at sequence 1 without
//! gaps, the trust feed's order can be reproduced, and every stream of the
//! target is empty. Then it stores the blobs and republishes every message
//! verbatim on its subject with its `Nats-Msg-Id`, its original publish time
//! (`Amai-Published-At`) and `Nats-Expected-Last-Sequence` (so each gets
//! exactly its exported sequence number, or the import stops): unsourced
//! streams first, then the four streams `AMAI_TRUST_FEED` sources in the
//! order of the exported feed, waiting for the feed to take every message
//! before publishing one from another source stream (bounded wait). Feed
//! messages themselves are never published: the feed sources them. On a
//! failure it says exactly how far it got.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use amai_bus::blob::{BlobError, BlobStore, BLOB_BUCKET};
use amai_bus::proto;
use amai_bus::store::{HEADER_ACTOR, HEADER_AGGREGATE_SEQ, HEADER_PUBLISHED_AT, HEADER_TYPE};
use amai_bus::streams::{
    all_stream_configs, ensure_streams, StreamSettings, TRUST_FEED_SOURCES, TRUST_FEED_STREAM,
};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_export::proto::ExportedMessage;
use amai_export::{
    Deployment, ExportError, ExportReader, ExportWriter, Manifest, Record, RecordLocation,
    Selection, StreamRange,
};
use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use async_nats::HeaderMap;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Settings;

/// `amai export` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The file to write (written as FILE.partial, renamed to FILE when complete).
    #[arg(long)]
    out: PathBuf,
    /// Export this whole stream (repeatable). With neither --stream nor
    /// --aggregate, every stream. Each exported stream's audit chain
    /// (AMAI_AUDIT, `audit/<stream>`) comes with it.
    #[arg(long = "stream", value_name = "STREAM")]
    streams: Vec<String>,
    /// Export this aggregate (`kind/id`, e.g. agent/<id>), within its stream (repeatable).
    #[arg(long = "aggregate", value_name = "KIND/ID")]
    aggregates: Vec<String>,
    /// Lowest stream sequence to export (inclusive), in every selected stream.
    #[arg(long)]
    from_seq: Option<u64>,
    /// Highest stream sequence to export (inclusive), in every selected stream.
    #[arg(long)]
    to_seq: Option<u64>,
    /// Earliest publish time to export (inclusive, RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Latest publish time to export (inclusive, RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `amai import` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The export file.
    file: PathBuf,
    /// Longest wait, in seconds, for AMAI_TRUST_FEED to source a published
    /// message before the import gives up.
    #[arg(long, default_value_t = 30)]
    feed_timeout_secs: u64,
    /// Print the summary (or the refusal) as one JSON object.
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------
// Shared helpers

/// The deployment's trust root: `--trust-root` / `AMAI_TRUST_ROOT`, else the
/// operator key file in the data dir; `None` when neither is there.
fn configured_trust_root(settings: &Settings) -> anyhow::Result<Option<[u8; 32]>> {
    if let Some(bytes) = settings.trust_root_bytes()? {
        return Ok(Some(bytes));
    }
    Ok(crate::keystore::existing_operator_key(&settings.data_dir)?.map(|k| k.to_bytes()))
}

fn nats_url(settings: &Settings, command: &str) -> anyhow::Result<String> {
    settings
        .nats_url
        .clone()
        .with_context(|| format!("amai {command} needs --nats-url (or AMAI_NATS_URL)"))
}

/// Every Amai stream name, in the order streams are created.
fn amai_streams() -> Vec<String> {
    all_stream_configs(&StreamSettings::default())
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// The feed's source stream names.
fn feed_sources() -> Vec<&'static str> {
    TRUST_FEED_SOURCES.iter().map(|k| k.stream()).collect()
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn progress_bar(len: u64, message: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{msg:<28} [{bar:32}] {pos}/{len} ({per_sec}, eta {eta})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(message.to_string());
    pb
}

fn rfc3339(t: OffsetDateTime) -> String {
    // Formatting fails only for years outside 0..=9999.
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    let nanos = t.unix_timestamp_nanos();
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

fn from_timestamp(t: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
    )
    .ok()
}

fn parse_time(flag: &str, s: &str) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .with_context(|| format!("--{flag} {s:?} is not RFC 3339 (e.g. 2026-11-25T10:00:00Z)"))
}

// ---------------------------------------------------------------------------
// Export: what to read

/// How one stream is read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamPlan {
    stream: String,
    /// Selected by the user (whole or by aggregates); false for a stream
    /// read only for audit chains.
    selected: bool,
    /// Aggregate subjects selected within it; empty with `selected`: the whole stream.
    subjects: BTreeSet<String>,
    /// Audit chains (`amai.audit.<stream>`, in AMAI_AUDIT only) exported
    /// whole, whatever the ranges.
    chains: BTreeSet<String>,
}

impl StreamPlan {
    fn whole(&self) -> bool {
        self.selected && self.subjects.is_empty()
    }

    /// The server-side subject filter: none when the whole stream is read.
    fn filter(&self) -> Vec<String> {
        if self.whole() {
            Vec::new()
        } else {
            self.subjects.union(&self.chains).cloned().collect()
        }
    }
}

/// The ranges of the selection.
#[derive(Debug, Clone, Default)]
struct Ranges {
    from_seq: Option<u64>,
    to_seq: Option<u64>,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
}

impl Ranges {
    fn contains(&self, seq: u64, published: OffsetDateTime) -> bool {
        self.from_seq.is_none_or(|f| seq >= f)
            && self.to_seq.is_none_or(|t| seq <= t)
            && self.since.is_none_or(|s| published >= s)
            && self.until.is_none_or(|u| published <= u)
    }
}

/// Whether a read message is exported.
fn keep(
    plan: &StreamPlan,
    ranges: &Ranges,
    seq: u64,
    subject: &str,
    published: OffsetDateTime,
) -> bool {
    if plan.chains.contains(subject) {
        return true;
    }
    plan.selected
        && (plan.subjects.is_empty() || plan.subjects.contains(subject))
        && ranges.contains(seq, published)
}

/// The streams to read, in the order streams are created: the selected
/// streams and aggregates, and AMAI_AUDIT for the audit chains of them all.
fn plan_streams(streams: &[String], aggregates: &[Aggregate]) -> anyhow::Result<Vec<StreamPlan>> {
    let known = amai_streams();
    for s in streams {
        if !known.contains(s) {
            anyhow::bail!(
                "--stream {s}: not an Amai stream (one of {})",
                known.join(", ")
            );
        }
    }
    let everything = streams.is_empty() && aggregates.is_empty();
    let mut plans: Vec<StreamPlan> = known
        .iter()
        .map(|s| StreamPlan {
            stream: s.clone(),
            selected: everything || streams.contains(s),
            subjects: BTreeSet::new(),
            chains: BTreeSet::new(),
        })
        .collect();
    for a in aggregates {
        if let Some(p) = plans.iter_mut().find(|p| p.stream == a.stream()) {
            if !streams.contains(&p.stream) {
                p.selected = true;
                p.subjects.insert(a.subject());
            }
        }
    }
    let audit = AggregateKind::Audit.stream();
    let chains: BTreeSet<String> = plans
        .iter()
        .filter(|p| p.selected && p.stream != audit)
        .filter_map(|p| Aggregate::new(AggregateKind::Audit, p.stream.clone()).ok())
        .map(|a| a.subject())
        .collect();
    if let Some(p) = plans.iter_mut().find(|p| p.stream == audit) {
        p.chains = chains;
    }
    plans.retain(|p| p.selected || !p.chains.is_empty());
    Ok(plans)
}

// ---------------------------------------------------------------------------
// Export: spooling

/// The spool: messages then blobs, as `tag (1 message, 2 blob) || u32 LE
/// length || bytes`, read back once to write the file behind its manifest
/// (which needs the counts first).
struct Spool {
    file: BufWriter<tempfile::NamedTempFile>,
}

impl Spool {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let file = tempfile::Builder::new()
            .prefix(".amai-export-spool-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a spool file in {}", dir.display()))?;
        Ok(Self {
            file: BufWriter::new(file),
        })
    }

    fn put(&mut self, tag: u8, bytes: &[u8]) -> anyhow::Result<()> {
        let len = u32::try_from(bytes.len()).context("a record over 4 GiB")?;
        self.file.write_all(&[tag])?;
        self.file.write_all(&len.to_le_bytes())?;
        self.file.write_all(bytes)?;
        Ok(())
    }

    /// Reads every spooled record back, in order.
    fn replay(self, mut f: impl FnMut(u8, Vec<u8>) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        let mut r = BufReader::new(file.reopen()?);
        loop {
            let mut head = [0u8; 5];
            match r.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut bytes = vec![0u8; len];
            r.read_exact(&mut bytes)?;
            f(head[0], bytes)?;
        }
    }
}

const SPOOL_MESSAGE: u8 = 1;
const SPOOL_BLOB: u8 = 2;

/// What was exported of one stream.
#[derive(Debug, Default, Clone)]
struct Tally {
    first: u64,
    last: u64,
    count: u64,
}

impl Tally {
    fn add(&mut self, seq: u64) {
        if self.count == 0 {
            self.first = seq;
        }
        self.last = seq;
        self.count += 1;
    }
}

/// Reads `plan.stream` up to `stop` with an ordered consumer and spools what
/// the selection keeps.
#[allow(clippy::too_many_arguments)]
async fn read_stream(
    js: &jetstream::Context,
    plan: &StreamPlan,
    ranges: &Ranges,
    stop: u64,
    spool: &mut Spool,
    blobs: &mut BTreeMap<[u8; 32], u64>,
    tally: &mut Tally,
    pb: &ProgressBar,
) -> anyhow::Result<()> {
    let (start, stop) = if plan.chains.is_empty() {
        (
            ranges.from_seq.unwrap_or(1).max(1),
            ranges.to_seq.map_or(stop, |t| t.min(stop)),
        )
    } else {
        (1, stop)
    };
    if stop == 0 || start > stop {
        return Ok(());
    }
    let deliver_policy = match (start, ranges.since, plan.chains.is_empty()) {
        (1, Some(since), true) => DeliverPolicy::ByStartTime { start_time: since },
        (1, _, _) => DeliverPolicy::All,
        (s, _, _) => DeliverPolicy::ByStartSequence { start_sequence: s },
    };
    let stream = js
        .get_stream_no_info(&plan.stream)
        .await
        .with_context(|| format!("cannot open stream {}", plan.stream))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subjects: plan.filter(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot read stream {}", plan.stream))?;
    let pending = consumer.cached_info().num_pending;
    if pending == 0 {
        return Ok(());
    }
    pb.inc_length(pending.min(stop - start + 1));
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("cannot read stream {}", plan.stream))?;
    while let Some(m) = messages.next().await {
        let m = m.with_context(|| format!("reading stream {}", plan.stream))?;
        let (seq, pending, stored_at) = {
            let info = m
                .info()
                .map_err(|e| anyhow::anyhow!("reading stream {}: {e}", plan.stream))?;
            (info.stream_sequence, info.pending, info.published)
        };
        if seq > stop {
            break;
        }
        let published =
            amai_bus::reads::published_time(&plan.stream, stored_at, m.headers.as_ref());
        let subject = m.subject.to_string();
        if keep(plan, ranges, seq, &subject, published) {
            let msg_id = m
                .headers
                .as_ref()
                .and_then(|h| h.get_last(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            // An event that is not decodable (published around the store)
            // refers to no blob; it is exported all the same.
            if let Ok(refs) = amai_export::referenced_blobs(&m.payload) {
                for r in refs {
                    blobs.insert(r.sha256, r.size);
                }
            }
            let exported = ExportedMessage {
                stream: plan.stream.clone(),
                seq,
                subject,
                published_at: Some(timestamp(published)),
                data: m.payload.to_vec(),
                msg_id,
            };
            spool.put(SPOOL_MESSAGE, &exported.encode_to_vec())?;
            tally.add(seq);
        }
        pb.inc(1);
        if seq >= stop || pending == 0 {
            break;
        }
    }
    Ok(())
}

/// `amai export`.
pub(crate) async fn export(settings: &Settings, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let root = configured_trust_root(settings)?.context(
        "amai export names the deployment in its manifest: pass --trust-root <hex> (or set \
         AMAI_TRUST_ROOT), or run it with the data dir holding keys/operator.json",
    )?;
    let aggregates = args
        .aggregates
        .iter()
        .map(|a| {
            a.parse::<Aggregate>()
                .with_context(|| format!("--aggregate {a}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ranges = Ranges {
        from_seq: args.from_seq,
        to_seq: args.to_seq,
        since: args
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
    };
    if let (Some(f), Some(t)) = (ranges.from_seq, ranges.to_seq) {
        anyhow::ensure!(f <= t, "--from-seq {f} is after --to-seq {t}");
    }
    if let (Some(s), Some(u)) = (ranges.since, ranges.until) {
        anyhow::ensure!(s <= u, "--since is after --until");
    }
    let plans = plan_streams(&args.streams, &aggregates)?;
    let selection = Selection {
        streams: args.streams.clone(),
        aggregates: aggregates.iter().map(ToString::to_string).collect(),
        from_seq: args.from_seq,
        to_seq: args.to_seq,
        since: ranges.since.map(rfc3339),
        until: ranges.until.map(rfc3339),
    };
    let out_dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let url = nats_url(settings, "export")?;
    let client = crate::server::connect_nats(&url, "amai-export").await?;
    let js = jetstream::new(client.clone());

    // Last sequences at the start, the feed's first: every copy in the feed
    // up to its last then has its original within the sources' ranges.
    let mut order: Vec<&StreamPlan> = plans.iter().collect();
    order.sort_by_key(|p| p.stream != TRUST_FEED_STREAM);
    let mut last = HashMap::new();
    for p in order {
        let info = js.get_stream(&p.stream).await.with_context(|| {
            format!(
                "cannot read stream {} (run `amai streams ensure`?)",
                p.stream
            )
        })?;
        last.insert(p.stream.clone(), info.cached_info().state.last_sequence);
    }

    let started = Instant::now();
    let mut spool = Spool::new(&out_dir)?;
    let mut blobs = BTreeMap::new();
    let mut tallies: Vec<Tally> = Vec::new();
    let pb = progress_bar(0, "reading streams");
    for p in &plans {
        pb.set_message(p.stream.clone());
        let mut tally = Tally::default();
        let stop = last.get(&p.stream).copied().unwrap_or(0);
        read_stream(
            &js, p, &ranges, stop, &mut spool, &mut blobs, &mut tally, &pb,
        )
        .await?;
        tallies.push(tally);
    }
    pb.finish_and_clear();

    // Blobs, in digest order.
    let mut missing = Vec::new();
    let mut stored_blobs = 0u64;
    if !blobs.is_empty() {
        let store = match js.get_object_store(BLOB_BUCKET).await {
            Ok(_) => Some(BlobStore::open(&js, 1, usize::MAX).await?),
            Err(_) => None,
        };
        let pb = progress_bar(blobs.len() as u64, "blobs");
        for sha256 in blobs.keys() {
            let got = match &store {
                Some(s) => s.get(sha256).await,
                None => Err(BlobError::NotFound(hex::encode(sha256))),
            };
            match got {
                Ok(data) => {
                    let mut bytes = sha256.to_vec();
                    bytes.extend_from_slice(&data);
                    spool.put(SPOOL_BLOB, &bytes)?;
                    stored_blobs += 1;
                }
                Err(BlobError::NotFound(_)) => missing.push(hex::encode(sha256)),
                Err(BlobError::DigestMismatch(key)) => {
                    tracing::warn!(blob = %key, "stored blob is corrupt: exported as missing");
                    missing.push(key);
                }
                Err(e) => return Err(e).context("reading the blob store"),
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
    }
    missing.sort();

    let streams: Vec<StreamRange> = plans
        .iter()
        .zip(&tallies)
        .map(|(p, t)| {
            let stream_last = last.get(&p.stream).copied().unwrap_or(0);
            StreamRange {
                stream: p.stream.clone(),
                first_seq: t.first,
                last_seq: t.last,
                messages: t.count,
                complete: t.count == stream_last && (t.count == 0 || t.first == 1),
            }
        })
        .collect();
    let manifest = Manifest::new(
        OffsetDateTime::now_utc(),
        Deployment::from_trust_root(&root),
        selection,
        streams,
        stored_blobs,
        missing,
    );

    // The file: FILE.partial, renamed when complete.
    let partial = {
        let mut name = args.out.clone().into_os_string();
        name.push(".partial");
        PathBuf::from(name)
    };
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::new(file);
    let mut writer = ExportWriter::new(&mut out, &manifest)?;
    spool.replay(|tag, bytes| {
        match tag {
            SPOOL_MESSAGE => writer.message(&ExportedMessage::decode(bytes.as_slice())?)?,
            _ => {
                let (sha, data) = bytes.split_at(32.min(bytes.len()));
                let sha: [u8; 32] = sha
                    .try_into()
                    .context("a spooled blob without its digest")?;
                writer.blob(&sha, data)?;
            }
        }
        Ok(())
    })?;
    let summary = writer.finish()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, &args.out).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            args.out.display()
        )
    })?;
    let _ = client.flush().await;

    let elapsed = started.elapsed();
    if args.json {
        println!(
            "{}",
            json!({
                "file": args.out.display().to_string(),
                "bytes": summary.bytes,
                "sha256": summary.sha256_hex(),
                "messages": summary.messages,
                "blobs": summary.blobs,
                "missing_blobs": manifest.missing_blobs,
                "deployment": manifest.deployment,
                "streams": manifest.streams,
                "seconds": elapsed.as_secs_f64(),
            })
        );
    } else {
        println!(
            "exported {} messages and {} blobs to {} ({} bytes, sha256 {}) in {:.1} s",
            summary.messages,
            summary.blobs,
            args.out.display(),
            summary.bytes,
            summary.sha256_hex(),
            elapsed.as_secs_f64()
        );
        for s in &manifest.streams {
            println!(
                "  {:<16} {:>8} messages  {}..={}  {}",
                s.stream,
                s.messages,
                s.first_seq,
                s.last_seq,
                if s.complete { "complete" } else { "partial" }
            );
        }
        if !manifest.missing_blobs.is_empty() {
            println!(
                "  {} referenced blobs were not in the blob store (listed in the manifest)",
                manifest.missing_blobs.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// Import

/// Why an import stopped: a kind to match on (the file's
/// [`amai_export::ExportErrorKind`] names, or one of the import's own) and
/// what to do.
#[derive(Debug)]
struct Failure {
    kind: &'static str,
    message: String,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]", self.message, self.kind)
    }
}

impl From<ExportError> for Failure {
    fn from(e: ExportError) -> Self {
        Failure::new(
            e.kind().as_str(),
            format!("the export file does not read cleanly: {e}"),
        )
    }
}

/// The import's own failure kinds.
mod kind {
    /// The file reads cleanly but cannot be reproduced sequence for sequence.
    pub(super) const NOT_IMPORTABLE: &str = "not_importable";
    /// The configured trust root is not the export's.
    pub(super) const TRUST_ROOT_MISMATCH: &str = "trust_root_mismatch";
    /// A stream of the target holds messages.
    pub(super) const TARGET_NOT_EMPTY: &str = "target_not_empty";
    /// A stream of the target has consumers (workers are running).
    pub(super) const TARGET_IN_USE: &str = "target_in_use";
    /// NATS could not be reached or set up (nothing published).
    pub(super) const NATS: &str = "nats";
    /// A publish failed or a message did not get its exported sequence.
    pub(super) const PUBLISH_FAILED: &str = "publish_failed";
    /// The trust feed did not source a message in time.
    pub(super) const FEED_TIMEOUT: &str = "feed_timeout";
    /// The file could not be opened or read again.
    pub(super) const IO: &str = "io";
}

/// One message of the file: its sequence, where it is, whether it is
/// published with its `Nats-Msg-Id` (not when an earlier message of its
/// stream has the same id: the dedup window would swallow it), and for a
/// message the exported trust feed holds a copy of, when the feed stored it.
#[derive(Debug, Clone)]
struct MessageAt {
    seq: u64,
    location: RecordLocation,
    with_id: bool,
    feed_published_at: Option<prost_types::Timestamp>,
}

/// A message's identity for matching feed copies with their originals.
type ContentKey = (String, [u8; 32]);

/// What the verification pass learned of a file that reads cleanly.
struct Verified {
    manifest: Manifest,
    summary: amai_export::ExportSummary,
    messages: BTreeMap<String, Vec<MessageAt>>,
    blobs: Vec<RecordLocation>,
    /// The feed's messages in feed order, by content, with their publish time.
    feed: Vec<(ContentKey, Option<prost_types::Timestamp>)>,
    /// The feed sources' messages by content: (stream, sequence), in order.
    originals: HashMap<ContentKey, VecDeque<(String, u64)>>,
}

/// Whether `subject` is one `stream` binds (`amai.<kind>.<token>` of the
/// stream's kind; the trust feed: its sources'), whatever the token.
fn subject_belongs(stream: &str, subject: &str) -> bool {
    let mut parts = subject.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("amai"), Some(kind), Some(token), None) if !token.is_empty() => {
            AggregateKind::parse(kind).is_some_and(|k| k.may_be_stored_in(stream))
        }
        _ => false,
    }
}

fn content_key(m: &ExportedMessage) -> ContentKey {
    (m.subject.clone(), Sha256::digest(&m.data).into())
}

/// Reads the whole file, checking everything the format says, and indexes
/// its records.
fn verify_file(path: &Path) -> Result<Verified, Failure> {
    let file = File::open(path)
        .map_err(|e| Failure::new(kind::IO, format!("cannot open {}: {e}", path.display())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = ExportReader::new(BufReader::new(file))?;
    let sources = feed_sources();
    let pb = progress_bar(size, "verifying");
    let mut messages: BTreeMap<String, Vec<MessageAt>> = BTreeMap::new();
    let mut ids: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    let mut blobs = Vec::new();
    let mut feed = Vec::new();
    let mut originals: HashMap<ContentKey, VecDeque<(String, u64)>> = HashMap::new();
    let mut misplaced = None;
    while let Some((location, record)) = reader.next_located()? {
        pb.set_position(reader.offset());
        match record {
            Record::Message(m) => {
                if misplaced.is_none() && !subject_belongs(&m.stream, &m.subject) {
                    misplaced = Some(format!(
                        "{}:{} is on subject {}",
                        m.stream, m.seq, m.subject
                    ));
                }
                let with_id = !m.msg_id.is_empty()
                    && ids
                        .entry(m.stream.clone())
                        .or_default()
                        .insert(m.msg_id.clone());
                if m.stream == TRUST_FEED_STREAM {
                    feed.push((content_key(&m), m.published_at));
                } else if sources.contains(&m.stream.as_str()) {
                    originals
                        .entry(content_key(&m))
                        .or_default()
                        .push_back((m.stream.clone(), m.seq));
                }
                messages.entry(m.stream).or_default().push(MessageAt {
                    seq: m.seq,
                    location,
                    with_id,
                    feed_published_at: None,
                });
            }
            Record::Blob(_) => blobs.push(location),
        }
    }
    pb.finish_and_clear();
    if let Some(m) = misplaced {
        return Err(Failure::new(
            kind::NOT_IMPORTABLE,
            format!("{m}, which that stream does not hold here: a republished message would land elsewhere"),
        ));
    }
    let summary = reader
        .summary()
        .cloned()
        .ok_or_else(|| Failure::new("truncated", "the file ended before its trailer"))?;
    Ok(Verified {
        manifest: reader.manifest().clone(),
        summary,
        messages,
        blobs,
        feed,
        originals,
    })
}

/// The order an import publishes in.
#[derive(Debug, PartialEq, Eq)]
struct ImportPlan {
    /// Streams no feed sources from (and not the feed), published first, whole.
    unsourced: Vec<String>,
    /// For each message of the exported feed, in feed order, the source
    /// stream whose next message is published.
    feed_order: Vec<String>,
    /// The feed's source streams in the file: what the feed order did not
    /// publish of them is published after it.
    sources: Vec<String>,
}

/// The originals of the exported feed's messages, in feed order: each feed
/// message matched with its original (the same subject and bytes; among
/// equal ones, in order), each source stream's originals in increasing
/// sequence from 1; with the feed message's publish time.
fn feed_order(
    feed: &[(ContentKey, Option<prost_types::Timestamp>)],
    originals: &mut HashMap<ContentKey, VecDeque<(String, u64)>>,
) -> Result<Vec<(String, u64, Option<prost_types::Timestamp>)>, Failure> {
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut order = Vec::with_capacity(feed.len());
    for (i, (key, published_at)) in feed.iter().enumerate() {
        let Some((stream, seq)) = originals.get_mut(key).and_then(VecDeque::pop_front) else {
            return Err(Failure::new(
                kind::NOT_IMPORTABLE,
                format!(
                    "message {} of {TRUST_FEED_STREAM} ({}) has no original in the export's source streams ({}): the feed's order cannot be reproduced; export the feed together with its source streams",
                    i + 1,
                    key.0,
                    feed_sources().join(", ")
                ),
            ));
        };
        let expected = next.entry(stream.clone()).or_insert(1);
        if seq != *expected {
            return Err(Failure::new(
                kind::NOT_IMPORTABLE,
                format!(
                    "message {} of {TRUST_FEED_STREAM} is {stream}:{seq}, but the feed has not yet taken {stream}:{expected}: a feed takes each source in order, so this feed cannot be reproduced",
                    i + 1
                ),
            ));
        }
        *expected += 1;
        order.push((stream, seq, *published_at));
    }
    Ok(order)
}

/// Checks the file can be reproduced sequence for sequence and plans the
/// order of publishing.
fn plan_import(v: &mut Verified) -> Result<ImportPlan, Failure> {
    let known = amai_streams();
    for s in &v.manifest.streams {
        if !known.contains(&s.stream) {
            return Err(Failure::new(
                kind::NOT_IMPORTABLE,
                format!(
                    "the export holds stream {}, which is not an Amai stream",
                    s.stream
                ),
            ));
        }
        if !s.starts_at_one_without_gaps() {
            return Err(Failure::new(
                kind::NOT_IMPORTABLE,
                format!(
                    "{} holds {} messages in sequences {}..={}: JetStream numbers messages itself, so an import reproduces sequence numbers only for a stream exported from sequence 1 without gaps; export whole streams (no --aggregate, --from-seq or time range)",
                    s.stream, s.messages, s.first_seq, s.last_seq
                ),
            ));
        }
    }
    let sources = feed_sources();
    let in_file = |s: &str| v.manifest.stream(s).is_some_and(|r| r.messages > 0);
    let mut order = Vec::with_capacity(v.feed.len());
    for (stream, seq, published_at) in feed_order(&v.feed, &mut v.originals)? {
        // Sources start at 1 without gaps (checked above): seq - 1 is the index.
        if let Some(at) = v
            .messages
            .get_mut(&stream)
            .and_then(|m| m.get_mut((seq - 1) as usize))
        {
            at.feed_published_at = published_at;
        }
        order.push(stream);
    }
    Ok(ImportPlan {
        unsourced: known
            .iter()
            .filter(|s| {
                s.as_str() != TRUST_FEED_STREAM && !sources.contains(&s.as_str()) && in_file(s)
            })
            .cloned()
            .collect(),
        feed_order: order,
        sources: sources
            .iter()
            .filter(|s| in_file(s))
            .map(|s| s.to_string())
            .collect(),
    })
}

/// How far an import got.
#[derive(Debug, Default)]
struct Progress {
    /// Whether anything was sent to the target (a publish whose
    /// acknowledgement was lost may be stored).
    attempted: bool,
    blobs: (u64, u64),
    /// Per stream: messages acknowledged with their exported sequence, total.
    streams: BTreeMap<String, (u64, u64)>,
}

impl Progress {
    fn published_anything(&self) -> bool {
        self.attempted
    }

    fn describe(&self) -> String {
        let mut parts = vec![format!("blobs {}/{}", self.blobs.0, self.blobs.1)];
        for (s, (done, total)) in &self.streams {
            parts.push(format!("{s} {done}/{total}"));
        }
        parts.join(", ")
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "blobs": {"stored": self.blobs.0, "total": self.blobs.1},
            "streams": self.streams.iter().map(|(s, (done, total))| {
                json!({"stream": s, "published": done, "total": total})
            }).collect::<Vec<_>>(),
        })
    }
}

/// Most publishes awaiting their acknowledgement at once.
const MAX_IN_FLIGHT: usize = 256;

/// Publishes messages in order, pipelined, each with the sequence it must get.
struct Publisher {
    js: jetstream::Context,
    file: File,
    in_flight: VecDeque<(String, u64, jetstream::context::PublishAckFuture)>,
    progress: Progress,
    pb: ProgressBar,
}

/// The headers of a republished message: its id, its sequence (as the last
/// sequence it must follow), its original publish time (and the feed's, for
/// the feed's copy), and the `Amai-*` headers the store sets, derived from
/// the event.
fn republish_headers(m: &ExportedMessage, at: &MessageAt) -> HeaderMap {
    let mut h = HeaderMap::new();
    if at.with_id {
        h.insert(async_nats::header::NATS_MESSAGE_ID, m.msg_id.as_str());
    }
    h.insert(
        async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
        (m.seq - 1).to_string().as_str(),
    );
    let times: Vec<(&str, OffsetDateTime)> = [
        (m.stream.as_str(), m.published_at.as_ref()),
        (TRUST_FEED_STREAM, at.feed_published_at.as_ref()),
    ]
    .into_iter()
    .filter_map(|(stream, t)| Some((stream, from_timestamp(t?)?)))
    .collect();
    if !times.is_empty() {
        h.insert(
            HEADER_PUBLISHED_AT,
            amai_bus::reads::published_at_value(&times).as_str(),
        );
    }
    if let Some(body) = proto::SignedEvent::decode(m.data.as_slice())
        .ok()
        .and_then(|s| proto::EventBody::decode(s.body.as_slice()).ok())
    {
        h.insert(HEADER_TYPE, body.r#type.as_str());
        h.insert(
            HEADER_AGGREGATE_SEQ,
            body.aggregate_seq.to_string().as_str(),
        );
        h.insert(HEADER_ACTOR, body.actor.as_str());
    }
    h
}

impl Publisher {
    fn read(&mut self, location: &RecordLocation) -> Result<Record, Failure> {
        amai_export::read_record_at(&mut self.file, location).map_err(|e| {
            Failure::new(
                e.kind().as_str(),
                format!("reading the export file again: {e}"),
            )
        })
    }

    /// Publishes the message of `stream` at `at`.
    async fn message(&mut self, stream: &str, at: &MessageAt) -> Result<(), Failure> {
        let m = match self.read(&at.location)? {
            Record::Message(m) if m.stream == stream && m.seq == at.seq => m,
            _ => {
                return Err(Failure::new(
                    "changed",
                    format!(
                        "the record of {stream}:{} changed since it was verified",
                        at.seq
                    ),
                ))
            }
        };
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.settle_one().await?;
        }
        let headers = republish_headers(&m, at);
        self.progress.attempted = true;
        let ack = self
            .js
            .publish_with_headers(m.subject.clone(), headers, m.data.into())
            .await
            .map_err(|e| {
                Failure::new(
                    kind::PUBLISH_FAILED,
                    format!("publishing {stream}:{} on {}: {e}", at.seq, m.subject),
                )
            })?;
        self.in_flight.push_back((stream.to_string(), at.seq, ack));
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<(), Failure> {
        let Some((stream, seq, ack)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let ack = ack.await.map_err(|e| {
            Failure::new(
                kind::PUBLISH_FAILED,
                format!("{stream}:{seq} was not stored: {e} (a wrong last sequence means something else publishes into the target)"),
            )
        })?;
        if ack.stream != stream || ack.sequence != seq || ack.duplicate {
            return Err(Failure::new(
                kind::PUBLISH_FAILED,
                format!(
                    "{stream}:{seq} was stored as {}:{}{}: the target does not reproduce the export",
                    ack.stream,
                    ack.sequence,
                    if ack.duplicate { " (a duplicate)" } else { "" }
                ),
            ));
        }
        if let Some(p) = self.progress.streams.get_mut(&stream) {
            p.0 += 1;
        }
        self.pb.inc(1);
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), Failure> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }

    /// After a failure: counts what the publishes still in flight stored,
    /// so the report says exactly how far the import got.
    async fn settle_remaining(&mut self) {
        while !self.in_flight.is_empty() {
            let _ = self.settle_one().await;
        }
    }
}

/// Waits (bounded) until the trust feed holds exactly `target` messages.
async fn wait_feed(js: &jetstream::Context, target: u64, timeout: Duration) -> Result<(), Failure> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        let last = js
            .get_stream(TRUST_FEED_STREAM)
            .await
            .map_err(|e| {
                Failure::new(
                    kind::PUBLISH_FAILED,
                    format!("cannot read {TRUST_FEED_STREAM}: {e}"),
                )
            })?
            .cached_info()
            .state
            .last_sequence;
        if last == target {
            return Ok(());
        }
        if last > target {
            return Err(Failure::new(
                kind::PUBLISH_FAILED,
                format!("{TRUST_FEED_STREAM} holds {last} messages where the import expects {target}: something else publishes into the target"),
            ));
        }
        if start.elapsed() >= timeout {
            return Err(Failure::new(
                kind::FEED_TIMEOUT,
                format!(
                    "{TRUST_FEED_STREAM} sourced {last} of {target} messages within {} s (--feed-timeout-secs); is its sourcing running (nats-server log)?",
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// What an import did.
struct Imported {
    verified_sha256: String,
    deployment: Deployment,
    streams: Vec<(String, u64)>,
    blobs: u64,
    feed_messages: u64,
    feed_in_export_order: u64,
}

async fn run_import(
    settings: &Settings,
    args: &ImportArgs,
    progress_out: &mut Progress,
) -> Result<Imported, Failure> {
    let mut v = tokio::task::block_in_place(|| verify_file(&args.file))?;
    let plan = plan_import(&mut v)?;
    if let Some(root) = configured_trust_root(settings)
        .map_err(|e| Failure::new(kind::TRUST_ROOT_MISMATCH, format!("{e:#}")))?
    {
        if hex::encode(root) != v.manifest.deployment.trust_root {
            return Err(Failure::new(
                kind::TRUST_ROOT_MISMATCH,
                format!(
                    "the export is of deployment {} (trust root {}), but this data dir / --trust-root names trust root {}: processes configured so would refuse the imported history; pass --trust-root {} (or another --data-dir)",
                    v.manifest.deployment.id,
                    v.manifest.deployment.trust_root,
                    hex::encode(root),
                    v.manifest.deployment.trust_root
                ),
            ));
        }
    }

    let nats = |e: &dyn std::fmt::Display| Failure::new(kind::NATS, format!("{e}"));
    let url = nats_url(settings, "import").map_err(|e| nats(&format!("{e:#}")))?;
    let client = crate::server::connect_nats(&url, "amai-import")
        .await
        .map_err(|e| nats(&format!("{e:#}")))?;
    let js = jetstream::new(client.clone());
    ensure_streams(
        &js,
        &StreamSettings {
            replicas: settings.stream_replicas,
            dedup_window: settings.dedup_window(),
        },
    )
    .await
    .map_err(|e| nats(&e))?;
    let blob_store = BlobStore::open(&js, settings.stream_replicas, usize::MAX)
        .await
        .map_err(|e| nats(&e))?;

    // The target must be a fresh deployment: every stream empty, nobody consuming.
    let mut not_empty = Vec::new();
    let mut in_use = Vec::new();
    for stream in amai_streams() {
        let info = js
            .get_stream(&stream)
            .await
            .map_err(|e| nats(&format!("cannot read stream {stream}: {e}")))?;
        let state = &info.cached_info().state;
        if state.messages > 0 || state.last_sequence > 0 {
            not_empty.push(format!("{stream} holds {} messages", state.messages));
        }
        if state.consumer_count > 0 {
            in_use.push(format!("{stream} has {} consumers", state.consumer_count));
        }
    }
    if !not_empty.is_empty() {
        return Err(Failure::new(
            kind::TARGET_NOT_EMPTY,
            format!(
                "the target deployment is not empty ({}): import only into a fresh deployment (a new nats-server store, before any `amai up` or worker runs on it); nothing was published",
                not_empty.join(", ")
            ),
        ));
    }
    if !in_use.is_empty() {
        return Err(Failure::new(
            kind::TARGET_IN_USE,
            format!(
                "the target deployment is in use ({}): stop its workers and gateways first (their reactors would append to the history being imported); nothing was published",
                in_use.join(", ")
            ),
        ));
    }

    let file = File::open(&args.file).map_err(|e| {
        Failure::new(
            kind::IO,
            format!("cannot open {} again: {e}", args.file.display()),
        )
    })?;
    let total = v.summary.messages
        - v.messages
            .get(TRUST_FEED_STREAM)
            .map_or(0, |m| m.len() as u64);
    let mut p = Publisher {
        js: js.clone(),
        file,
        in_flight: VecDeque::new(),
        progress: Progress {
            attempted: false,
            blobs: (0, v.blobs.len() as u64),
            streams: v
                .messages
                .iter()
                .filter(|(s, _)| s.as_str() != TRUST_FEED_STREAM)
                .map(|(s, m)| (s.clone(), (0, m.len() as u64)))
                .collect(),
        },
        pb: progress_bar(total + v.blobs.len() as u64, "importing"),
    };
    let result = publish_all(&mut p, &blob_store, &v, &plan, args).await;
    if result.is_err() {
        p.settle_remaining().await;
    }
    p.pb.finish_and_clear();
    *progress_out = std::mem::take(&mut p.progress);
    let feed_messages = result?;
    let _ = client.flush().await;

    // Every stream holds what the file held, at the same sequences.
    for (stream, messages) in &v.messages {
        if stream == TRUST_FEED_STREAM {
            continue;
        }
        let info = js.get_stream(stream).await.map_err(|e| {
            Failure::new(
                kind::PUBLISH_FAILED,
                format!("cannot read {stream} back: {e}"),
            )
        })?;
        let state = &info.cached_info().state;
        let n = messages.len() as u64;
        if state.messages != n || state.last_sequence != n {
            return Err(Failure::new(
                kind::PUBLISH_FAILED,
                format!(
                    "{stream} holds {} messages up to sequence {} after the import, not {n}",
                    state.messages, state.last_sequence
                ),
            ));
        }
    }
    Ok(Imported {
        verified_sha256: v.summary.sha256_hex(),
        deployment: v.manifest.deployment.clone(),
        streams: v
            .messages
            .iter()
            .filter(|(s, _)| s.as_str() != TRUST_FEED_STREAM)
            .map(|(s, m)| (s.clone(), m.len() as u64))
            .collect(),
        blobs: v.blobs.len() as u64,
        feed_messages,
        feed_in_export_order: plan.feed_order.len() as u64,
    })
}

/// Stores the blobs, then publishes every message in the plan's order;
/// returns how many messages the trust feed holds at the end.
async fn publish_all(
    p: &mut Publisher,
    blob_store: &BlobStore,
    v: &Verified,
    plan: &ImportPlan,
    args: &ImportArgs,
) -> Result<u64, Failure> {
    for location in &v.blobs {
        let Record::Blob(b) = p.read(location)? else {
            return Err(Failure::new(
                "changed",
                "a blob record changed since it was verified",
            ));
        };
        p.progress.attempted = true;
        blob_store.put(&b.data).await.map_err(|e| {
            Failure::new(
                kind::PUBLISH_FAILED,
                format!("storing blob {}: {e}", hex::encode(&b.sha256)),
            )
        })?;
        p.progress.blobs.0 += 1;
        p.pb.inc(1);
    }
    let empty = Vec::new();
    let of = |s: &str| v.messages.get(s).unwrap_or(&empty);
    for stream in &plan.unsourced {
        for at in of(stream) {
            p.message(stream, at).await?;
        }
    }
    p.drain().await?;

    // The sources in the exported feed's order: a run of one source at a
    // time, the feed having taken everything before the next run starts.
    let timeout = Duration::from_secs(args.feed_timeout_secs);
    let mut next: HashMap<&str, usize> = HashMap::new();
    let mut fed = 0u64;
    let mut run: Option<&str> = None;
    for stream in &plan.feed_order {
        if run.is_some_and(|r| r != stream.as_str()) {
            p.drain().await?;
            wait_feed(&p.js, fed, timeout).await?;
        }
        run = Some(stream.as_str());
        let i = next.entry(stream.as_str()).or_insert(0);
        let Some(at) = of(stream).get(*i) else {
            return Err(Failure::new(
                kind::NOT_IMPORTABLE,
                format!("the feed order names more {stream} messages than the export holds"),
            ));
        };
        p.message(stream, at).await?;
        *i += 1;
        fed += 1;
    }
    p.drain().await?;
    wait_feed(&p.js, fed, timeout).await?;
    // What the exported feed had not taken yet, stream by stream.
    for stream in &plan.sources {
        let from = next.get(stream.as_str()).copied().unwrap_or(0);
        for at in &of(stream)[from.min(of(stream).len())..] {
            p.message(stream, at).await?;
            fed += 1;
        }
        p.drain().await?;
        wait_feed(&p.js, fed, timeout).await?;
    }
    Ok(fed)
}

/// `amai import`.
pub(crate) async fn import(settings: &Settings, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut progress = Progress::default();
    match run_import(settings, &args, &mut progress).await {
        Ok(done) => {
            let seconds = started.elapsed().as_secs_f64();
            if args.json {
                println!(
                    "{}",
                    json!({
                        "file": args.file.display().to_string(),
                        "sha256": done.verified_sha256,
                        "deployment": done.deployment,
                        "streams": done.streams.iter().map(|(s, n)| json!({"stream": s, "messages": n})).collect::<Vec<_>>(),
                        "blobs": done.blobs,
                        "feed": {"messages": done.feed_messages, "in_export_order": done.feed_in_export_order},
                        "seconds": seconds,
                    })
                );
            } else {
                let total: u64 = done.streams.iter().map(|(_, n)| n).sum();
                println!(
                    "imported {total} messages and {} blobs from {} in {seconds:.1} s; {} reproduced {} messages in the export's order ({} in all)",
                    done.blobs,
                    args.file.display(),
                    TRUST_FEED_STREAM,
                    done.feed_in_export_order,
                    done.feed_messages
                );
                for (s, n) in &done.streams {
                    println!("  {s:<16} {n:>8} messages");
                }
                println!(
                    "deployment {} (trust root {}): start workers with --trust-root {}",
                    done.deployment.id, done.deployment.trust_root, done.deployment.trust_root
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            let partial = progress.published_anything();
            let tail = if partial {
                format!(
                    "; the target now holds a partial import ({}), which cannot be resumed or removed (streams deny deletes): import again into a fresh deployment",
                    progress.describe()
                )
            } else {
                String::new()
            };
            if args.json {
                println!(
                    "{}",
                    json!({
                        "error": {"kind": f.kind, "message": format!("{}{tail}", f.message)},
                        "published_anything": partial,
                        "progress": progress.to_json(),
                    })
                );
            } else {
                eprintln!("amai import: {}{tail} [{}]", f.message, f.kind);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(streams: &[&str], aggregates: &[&str]) -> Vec<StreamPlan> {
        let streams: Vec<String> = streams.iter().map(|s| s.to_string()).collect();
        let aggregates: Vec<Aggregate> = aggregates
            .iter()
            .map(|a| a.parse().expect("aggregate"))
            .collect();
        plan_streams(&streams, &aggregates).expect("plan")
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn everything_is_every_stream_whole_with_every_audit_chain() {
        let p = plans(&[], &[]);
        assert_eq!(
            p.iter().map(|p| p.stream.clone()).collect::<Vec<_>>(),
            amai_streams()
        );
        assert!(p.iter().all(StreamPlan::whole));
        let audit = p.iter().find(|p| p.stream == "AMAI_AUDIT").expect("audit");
        assert!(audit.chains.contains("amai.audit.AMAI_AGENTS"));
        assert!(audit.chains.contains("amai.audit.AMAI_TRUST_FEED"));
        assert!(!audit.chains.contains("amai.audit.AMAI_AUDIT"));
        assert!(audit.filter().is_empty(), "the whole stream is read");
    }

    #[test]
    fn a_stream_brings_its_audit_chain_and_an_aggregate_only_its_subject() {
        let p = plans(&["AMAI_NAMES"], &["agent/abc"]);
        assert_eq!(p.len(), 3, "{p:?}");
        let agents = &p[0];
        assert_eq!(agents.stream, "AMAI_AGENTS");
        assert_eq!(agents.subjects, set(&["amai.agent.abc"]));
        assert_eq!(agents.filter(), vec!["amai.agent.abc".to_string()]);
        assert!(p[1].whole() && p[1].stream == "AMAI_NAMES");
        let audit = &p[2];
        assert!(!audit.selected);
        assert_eq!(
            audit.chains,
            set(&["amai.audit.AMAI_AGENTS", "amai.audit.AMAI_NAMES"])
        );
        assert_eq!(audit.filter().len(), 2);
        assert!(plan_streams(&["AMAI_NOPE".into()], &[]).is_err());
    }

    #[test]
    fn ranges_select_messages_and_audit_chains_come_whole() {
        let p = plans(&["AMAI_AGENTS"], &[]);
        let t = |s: &str| OffsetDateTime::parse(s, &Rfc3339).expect("time");
        let r = Ranges {
            from_seq: Some(5),
            to_seq: Some(9),
            since: Some(t("2026-01-01T00:00:00Z")),
            until: None,
        };
        let at = t("2026-06-01T00:00:00Z");
        assert!(keep(&p[0], &r, 5, "amai.agent.x", at));
        assert!(!keep(&p[0], &r, 4, "amai.agent.x", at));
        assert!(!keep(&p[0], &r, 10, "amai.agent.x", at));
        assert!(!keep(
            &p[0],
            &r,
            6,
            "amai.agent.x",
            t("2025-12-31T23:59:59Z")
        ));
        // The audit chain of the stream, whatever its sequence and time.
        assert!(keep(
            &p[1],
            &r,
            1,
            "amai.audit.AMAI_AGENTS",
            t("2020-01-01T00:00:00Z")
        ));
        assert!(!keep(&p[1], &r, 6, "amai.audit.AMAI_LLM", at));
    }

    fn key(subject: &str, data: &str) -> ContentKey {
        (subject.to_string(), Sha256::digest(data.as_bytes()).into())
    }

    fn originals(
        items: &[(&str, &str, &str, u64)],
    ) -> HashMap<ContentKey, VecDeque<(String, u64)>> {
        let mut out: HashMap<ContentKey, VecDeque<(String, u64)>> = HashMap::new();
        for (subject, data, stream, seq) in items {
            out.entry(key(subject, data))
                .or_default()
                .push_back((stream.to_string(), *seq));
        }
        out
    }

    #[test]
    fn the_feed_order_names_each_copys_original_in_feed_order() {
        let mut o = originals(&[
            ("amai.agent.a", "x", "AMAI_AGENTS", 1),
            ("amai.agent.a", "y", "AMAI_AGENTS", 2),
            // Two identical messages: matched in order.
            ("amai.agent.a", "x", "AMAI_AGENTS", 3),
            ("amai.llm.s", "z", "AMAI_LLM", 1),
        ]);
        let feed: Vec<_> = [
            key("amai.agent.a", "x"),
            key("amai.llm.s", "z"),
            key("amai.agent.a", "y"),
            key("amai.agent.a", "x"),
        ]
        .into_iter()
        .map(|k| (k, None))
        .collect();
        let order: Vec<(String, u64)> = feed_order(&feed, &mut o)
            .expect("order")
            .into_iter()
            .map(|(s, q, _)| (s, q))
            .collect();
        assert_eq!(
            order,
            vec![
                ("AMAI_AGENTS".to_string(), 1),
                ("AMAI_LLM".to_string(), 1),
                ("AMAI_AGENTS".to_string(), 2),
                ("AMAI_AGENTS".to_string(), 3),
            ]
        );
    }

    #[test]
    fn a_feed_that_cannot_be_reproduced_is_refused() {
        // A copy whose original is not in the export.
        let mut o = originals(&[("amai.agent.a", "x", "AMAI_AGENTS", 1)]);
        let feed = vec![(key("amai.llm.s", "z"), None)];
        let e = feed_order(&feed, &mut o).expect_err("no original");
        assert_eq!(e.kind, kind::NOT_IMPORTABLE);
        // A source's messages out of their order.
        let mut o = originals(&[
            ("amai.agent.a", "x", "AMAI_AGENTS", 1),
            ("amai.agent.a", "y", "AMAI_AGENTS", 2),
        ]);
        let feed = vec![
            (key("amai.agent.a", "y"), None),
            (key("amai.agent.a", "x"), None),
        ];
        let e = feed_order(&feed, &mut o).expect_err("out of order");
        assert_eq!(e.kind, kind::NOT_IMPORTABLE);
    }

    fn verified(ranges: Vec<StreamRange>) -> Verified {
        let location = RecordLocation {
            offset: 0,
            len: 0,
            sha256: [0; 32],
        };
        let mut messages = BTreeMap::new();
        for r in &ranges {
            let list: Vec<MessageAt> = (r.first_seq..=r.last_seq)
                .take(r.messages as usize)
                .map(|seq| MessageAt {
                    seq,
                    location,
                    with_id: true,
                    feed_published_at: None,
                })
                .collect();
            messages.insert(r.stream.clone(), list);
        }
        Verified {
            manifest: Manifest::new(
                OffsetDateTime::UNIX_EPOCH,
                Deployment::from_trust_root(&[1; 32]),
                Selection::default(),
                ranges,
                0,
                Vec::new(),
            ),
            summary: amai_export::ExportSummary {
                messages: 0,
                blobs: 0,
                bytes: 0,
                sha256: [0; 32],
            },
            messages,
            blobs: Vec::new(),
            feed: Vec::new(),
            originals: HashMap::new(),
        }
    }

    fn range(stream: &str, first: u64, last: u64, messages: u64) -> StreamRange {
        StreamRange {
            stream: stream.into(),
            first_seq: first,
            last_seq: last,
            messages,
            complete: false,
        }
    }

    #[test]
    fn only_streams_from_sequence_one_without_gaps_are_importable() {
        let plan = plan_import(&mut verified(vec![
            range("AMAI_AGENTS", 1, 3, 3),
            range("AMAI_NAMES", 1, 2, 2),
            range("AMAI_LLM", 0, 0, 0),
        ]))
        .expect("importable");
        assert_eq!(plan.unsourced, vec!["AMAI_NAMES".to_string()]);
        assert_eq!(plan.sources, vec!["AMAI_AGENTS".to_string()]);
        assert!(plan.feed_order.is_empty());
        for bad in [range("AMAI_AGENTS", 2, 4, 3), range("AMAI_AGENTS", 1, 4, 3)] {
            let e = plan_import(&mut verified(vec![bad])).expect_err("refused");
            assert_eq!(e.kind, kind::NOT_IMPORTABLE, "{}", e.message);
            assert!(
                e.message.contains("sequence 1 without gaps"),
                "{}",
                e.message
            );
        }
        let e = plan_import(&mut verified(vec![range("OTHER", 1, 1, 1)])).expect_err("unknown");
        assert_eq!(e.kind, kind::NOT_IMPORTABLE);
    }

    #[test]
    fn republished_headers_carry_the_sequence_the_times_and_the_event_headers() {
        let m = ExportedMessage {
            stream: "AMAI_AGENTS".into(),
            seq: 7,
            subject: "amai.agent.a".into(),
            published_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 5,
            }),
            data: b"not an event".to_vec(),
            msg_id: "id-7".into(),
        };
        let at = MessageAt {
            seq: 7,
            location: RecordLocation {
                offset: 0,
                len: 0,
                sha256: [0; 32],
            },
            with_id: true,
            feed_published_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_001,
                nanos: 0,
            }),
        };
        let h = republish_headers(&m, &at);
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string());
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("id-7"));
        assert_eq!(get("Nats-Expected-Last-Sequence").as_deref(), Some("6"));
        assert_eq!(get(HEADER_TYPE), None, "undecodable: no event headers");
        // JetStream stored the republished message later than both.
        let stored = OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time");
        let agents = amai_bus::reads::published_time("AMAI_AGENTS", stored, Some(&h));
        let feed = amai_bus::reads::published_time(TRUST_FEED_STREAM, stored, Some(&h));
        assert_eq!(agents.unix_timestamp_nanos(), 1_800_000_000_000_000_005);
        assert_eq!(feed.unix_timestamp(), 1_800_000_001);
        let without_id = MessageAt {
            with_id: false,
            ..at
        };
        assert!(republish_headers(&m, &without_id)
            .get("Nats-Msg-Id")
            .is_none());
    }

    #[test]
    fn a_subject_belongs_to_the_stream_that_binds_it() {
        assert!(subject_belongs("AMAI_AGENTS", "amai.agent.abc"));
        assert!(subject_belongs("AMAI_NAMES", "amai.name.Not_A_Valid_Name"));
        assert!(subject_belongs("AMAI_TRUST_FEED", "amai.llm.s"));
        assert!(!subject_belongs("AMAI_TRUST_FEED", "amai.trust.a"));
        assert!(!subject_belongs("AMAI_AGENTS", "amai.llm.s"));
        assert!(!subject_belongs("AMAI_AGENTS", "amai.agent.a.b"));
        assert!(!subject_belongs("AMAI_AGENTS", "other.agent.a"));
    }

    #[test]
    fn the_manifests_deployment_id_is_the_one_the_runtime_uses() {
        let key = amai_bus::IdentityKeys::generate().public_key();
        let runtime = amai_workers::role::PreflightContext {
            trust_root: Some(key),
        }
        .deployment();
        assert_eq!(Deployment::from_trust_root(key.as_bytes()).id, runtime);
    }
}
