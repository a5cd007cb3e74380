//! [`ExportWriter`]: writes an export file, refusing anything the reader
//! would refuse, so a file it finishes always reads cleanly.

use std::collections::HashMap;
use std::io::Write;

use sha2::{Digest, Sha256};

use crate::error::{ExportError, ExportErrorKind};
use crate::frame::HashingWriter;
use crate::manifest::Manifest;
use crate::proto::{export_record, ExportRecord, ExportTrailer, ExportedBlob, ExportedMessage};
use crate::DEFAULT_MAX_RECORD_BYTES;

/// What a finished (or fully read) export file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Messages (every stream).
    pub messages: u64,
    /// Blobs.
    pub blobs: u64,
    /// Size of the file in bytes, trailer included.
    pub bytes: u64,
    /// The trailer's SHA-256: of every byte before the trailer record.
    pub sha256: [u8; 32],
}

impl ExportSummary {
    /// The digest, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Per-stream bookkeeping shared by the writer and the reader: every message
/// of a listed stream, in increasing sequence, within the listed range, and
/// at the end exactly the listed count, first and last sequence.
#[derive(Debug, Default)]
pub(crate) struct StreamTally {
    pub(crate) count: u64,
    pub(crate) first: u64,
    pub(crate) last: u64,
}

pub(crate) struct Tallies {
    streams: HashMap<String, StreamTally>,
}

impl Tallies {
    pub(crate) fn new(manifest: &Manifest) -> Self {
        Self {
            streams: manifest
                .streams
                .iter()
                .map(|s| (s.stream.clone(), StreamTally::default()))
                .collect(),
        }
    }

    /// Counts a message, checking its place; `at` says where (for messages).
    pub(crate) fn message(
        &mut self,
        manifest: &Manifest,
        m: &ExportedMessage,
        at: &str,
    ) -> Result<(), ExportError> {
        if m.stream.is_empty() || m.seq == 0 {
            return Err(ExportError::new(
                ExportErrorKind::Malformed,
                format!("{at}: a message needs a stream name and a sequence >= 1"),
            ));
        }
        let (Some(range), Some(tally)) =
            (manifest.stream(&m.stream), self.streams.get_mut(&m.stream))
        else {
            return Err(ExportError::new(
                ExportErrorKind::ManifestMismatch,
                format!(
                    "{at}: message {}:{} is of a stream the manifest does not list",
                    m.stream, m.seq
                ),
            ));
        };
        if tally.count > 0 && m.seq <= tally.last {
            return Err(ExportError::new(
                ExportErrorKind::OutOfOrder,
                format!(
                    "{at}: message {}:{} follows {}:{}: messages of a stream must be in increasing sequence",
                    m.stream, m.seq, m.stream, tally.last
                ),
            ));
        }
        if m.seq < range.first_seq || m.seq > range.last_seq {
            return Err(ExportError::new(
                ExportErrorKind::ManifestMismatch,
                format!(
                    "{at}: message {}:{} is outside the range the manifest lists ({}..={})",
                    m.stream, m.seq, range.first_seq, range.last_seq
                ),
            ));
        }
        if tally.count == 0 {
            tally.first = m.seq;
        }
        tally.last = m.seq;
        tally.count += 1;
        Ok(())
    }

    /// Checks the end: every stream's count and range, and the blob count,
    /// as the manifest lists them.
    pub(crate) fn finish(&self, manifest: &Manifest, blobs: u64) -> Result<(), ExportError> {
        for range in &manifest.streams {
            let t = self
                .streams
                .get(&range.stream)
                .map_or((0, 0, 0), |t| (t.count, t.first, t.last));
            if t != (range.messages, range.first_seq, range.last_seq) {
                return Err(ExportError::new(
                    ExportErrorKind::ManifestMismatch,
                    format!(
                        "stream {}: the manifest lists {} messages in {}..={}, the file holds {} in {}..={}",
                        range.stream, range.messages, range.first_seq, range.last_seq, t.0, t.1, t.2
                    ),
                ));
            }
        }
        if blobs != manifest.blobs {
            return Err(ExportError::new(
                ExportErrorKind::ManifestMismatch,
                format!(
                    "the manifest lists {} blobs, the file holds {blobs}",
                    manifest.blobs
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a blob's digest and its place after `previous`.
pub(crate) fn check_blob(
    previous: Option<&[u8; 32]>,
    sha256: &[u8],
    data: &[u8],
    at: &str,
) -> Result<[u8; 32], ExportError> {
    let digest: [u8; 32] = Sha256::digest(data).into();
    if sha256 != digest.as_slice() {
        return Err(ExportError::new(
            ExportErrorKind::BlobDigestMismatch,
            format!(
                "{at}: blob {} does not hash to its digest (its data hashes to {})",
                hex::encode(sha256),
                hex::encode(digest)
            ),
        ));
    }
    if previous.is_some_and(|p| p >= &digest) {
        return Err(ExportError::new(
            ExportErrorKind::OutOfOrder,
            format!(
                "{at}: blob {} is not after the previous one: blobs come in increasing digest order, each once",
                hex::encode(digest)
            ),
        ));
    }
    Ok(digest)
}

/// Writes an export file: the manifest (in [`ExportWriter::new`]), then
/// messages, then blobs, then the trailer ([`ExportWriter::finish`]).
///
/// Every record is checked as the reader will check it: messages of the
/// streams the manifest lists, within their ranges, in increasing sequence
/// per stream; no message after a blob; blobs in increasing digest order
/// whose data hash to their digest; nothing over the record cap. `finish`
/// writes the trailer only if the records match the manifest's counts and
/// ranges, so a file left without a trailer (an error, a crash) never reads
/// as complete.
pub struct ExportWriter<W: Write> {
    out: HashingWriter<W>,
    manifest: Manifest,
    tallies: Tallies,
    messages: u64,
    blobs: u64,
    last_blob: Option<[u8; 32]>,
    max_record_bytes: u64,
}

impl<W: Write> ExportWriter<W> {
    /// Validates `manifest` and writes it as the first record.
    pub fn new(w: W, manifest: &Manifest) -> Result<Self, ExportError> {
        Self::with_max_record_bytes(w, manifest, DEFAULT_MAX_RECORD_BYTES)
    }

    /// [`ExportWriter::new`] with another record size cap.
    pub fn with_max_record_bytes(
        w: W,
        manifest: &Manifest,
        max_record_bytes: u64,
    ) -> Result<Self, ExportError> {
        let json = manifest.to_json()?;
        let mut writer = Self {
            out: HashingWriter::new(w),
            manifest: manifest.clone(),
            tallies: Tallies::new(manifest),
            messages: 0,
            blobs: 0,
            last_blob: None,
            max_record_bytes,
        };
        writer.write(export_record::Record::Manifest(json), true)?;
        Ok(writer)
    }

    fn write(&mut self, record: export_record::Record, hashed: bool) -> Result<(), ExportError> {
        let record = ExportRecord {
            record: Some(record),
        };
        let len = prost::Message::encoded_len(&record) as u64;
        if len > self.max_record_bytes {
            return Err(ExportError::new(
                ExportErrorKind::RecordTooLarge,
                format!(
                    "a record of {len} bytes is over the cap of {} bytes",
                    self.max_record_bytes
                ),
            ));
        }
        self.out.write_record(&record, hashed)?;
        Ok(())
    }

    /// Writes one stored message.
    pub fn message(&mut self, m: &ExportedMessage) -> Result<(), ExportError> {
        if self.blobs > 0 {
            return Err(ExportError::new(
                ExportErrorKind::UnexpectedRecord,
                format!(
                    "message {}:{} after a blob: every message comes before the blobs",
                    m.stream, m.seq
                ),
            ));
        }
        self.tallies.message(&self.manifest, m, "writing")?;
        self.write(export_record::Record::Message(m.clone()), true)?;
        self.messages += 1;
        Ok(())
    }

    /// Writes one blob; `sha256` must be the digest of `data`.
    pub fn blob(&mut self, sha256: &[u8; 32], data: &[u8]) -> Result<(), ExportError> {
        let digest = check_blob(self.last_blob.as_ref(), sha256, data, "writing")?;
        self.write(
            export_record::Record::Blob(ExportedBlob {
                sha256: sha256.to_vec(),
                data: data.to_vec(),
            }),
            true,
        )?;
        self.last_blob = Some(digest);
        self.blobs += 1;
        Ok(())
    }

    /// Checks the records against the manifest, writes the trailer and
    /// flushes. On an error no trailer is written.
    pub fn finish(mut self) -> Result<ExportSummary, ExportError> {
        self.tallies.finish(&self.manifest, self.blobs)?;
        let sha256 = self.out.digest();
        self.write(
            export_record::Record::Trailer(ExportTrailer {
                messages: self.messages,
                blobs: self.blobs,
                sha256: sha256.to_vec(),
            }),
            false,
        )?;
        self.out.flush()?;
        Ok(ExportSummary {
            messages: self.messages,
            blobs: self.blobs,
            bytes: self.out.bytes(),
            sha256,
        })
    }
}
