//! [`ExportReader`]: reads an export file record by record, checking every
//! rule of the format, and the trailer at the end.
//!
//! **A record is only known good once the reader has reached the end**: the
//! trailer's digest covers the whole file, and a changed byte in a message is
//! only detectable there. Whoever acts on records (an import) reads the file
//! to its end first ([`ExportReader::read_to_end`] or a loop over
//! [`ExportReader::next_located`]), then acts; [`read_record_at`] reads a
//! record again by its [`RecordLocation`] and checks it is the same bytes.

use std::io::{Read, Seek, SeekFrom};

use crate::error::{ExportError, ExportErrorKind};
use crate::frame::{read_raw, RawRecord};
use crate::manifest::Manifest;
use crate::proto::{export_record, ExportedBlob, ExportedMessage};
use crate::writer::{check_blob, ExportSummary, Tallies};
use crate::DEFAULT_MAX_RECORD_BYTES;
use sha2::{Digest, Sha256};

/// A message or blob record (the manifest and trailer are the reader's).
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A stored JetStream message.
    Message(ExportedMessage),
    /// A blob an exported event refers to.
    Blob(ExportedBlob),
}

/// Where a record lies in a file, and the SHA-256 of its bytes (length prefix
/// and body), to read it again with [`read_record_at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLocation {
    /// Offset of its length prefix.
    pub offset: u64,
    /// Its length, prefix included.
    pub len: u64,
    /// SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

#[derive(Debug)]
enum State {
    Messages,
    Blobs,
    Done(ExportSummary),
    Failed(ExportError),
}

/// Reads an export file (see the module docs for when its records may be
/// trusted).
pub struct ExportReader<R: Read> {
    r: R,
    offset: u64,
    hasher: Sha256,
    manifest: Manifest,
    tallies: Tallies,
    messages: u64,
    blobs: u64,
    last_blob: Option<[u8; 32]>,
    max_record_bytes: u64,
    state: State,
}

impl<R: Read> std::fmt::Debug for ExportReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportReader")
            .field("offset", &self.offset)
            .field("messages", &self.messages)
            .field("blobs", &self.blobs)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn unexpected(offset: u64, what: &str) -> ExportError {
    ExportError::new(
        ExportErrorKind::UnexpectedRecord,
        format!("record at byte {offset}: {what}"),
    )
}

impl<R: Read> ExportReader<R> {
    /// Reads and checks the manifest (the first record).
    pub fn new(r: R) -> Result<Self, ExportError> {
        Self::with_max_record_bytes(r, DEFAULT_MAX_RECORD_BYTES)
    }

    /// [`ExportReader::new`] with another record size cap.
    pub fn with_max_record_bytes(mut r: R, max_record_bytes: u64) -> Result<Self, ExportError> {
        let Some(raw) = read_raw(&mut r, 0, max_record_bytes)? else {
            return Err(ExportError::new(
                ExportErrorKind::Truncated,
                "the file is empty: an export starts with its manifest",
            ));
        };
        let manifest = match raw.decode()?.record {
            Some(export_record::Record::Manifest(json)) => Manifest::from_json(&json)?,
            _ => return Err(unexpected(0, "the first record must be the manifest")),
        };
        let mut hasher = Sha256::new();
        hasher.update(&raw.prefix);
        hasher.update(&raw.body);
        Ok(Self {
            r,
            offset: raw.len(),
            hasher,
            tallies: Tallies::new(&manifest),
            manifest,
            messages: 0,
            blobs: 0,
            last_blob: None,
            max_record_bytes,
            state: State::Messages,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Once the end was reached cleanly: what the file holds.
    pub fn summary(&self) -> Option<&ExportSummary> {
        match &self.state {
            State::Done(s) => Some(s),
            _ => None,
        }
    }

    /// The next message or blob; `None` once the trailer has been read and
    /// checked (counts, digest, nothing after it, the records against the
    /// manifest). After an error every call returns that error again.
    pub fn next_record(&mut self) -> Result<Option<Record>, ExportError> {
        Ok(self.next_located()?.map(|(_, r)| r))
    }

    /// [`ExportReader::next_record`] with the record's location.
    pub fn next_located(&mut self) -> Result<Option<(RecordLocation, Record)>, ExportError> {
        match &self.state {
            State::Done(_) => return Ok(None),
            State::Failed(e) => return Err(e.duplicate()),
            State::Messages | State::Blobs => {}
        }
        match self.step() {
            Ok(r) => Ok(r),
            Err(e) => {
                self.state = State::Failed(e.duplicate());
                Err(e)
            }
        }
    }

    /// Reads every remaining record and returns the summary.
    pub fn read_to_end(&mut self) -> Result<ExportSummary, ExportError> {
        while self.next_located()?.is_some() {}
        match &self.state {
            State::Done(s) => Ok(s.clone()),
            // `next_located` returns None only in Done.
            _ => Err(ExportError::new(
                ExportErrorKind::Truncated,
                "the reader stopped before the trailer",
            )),
        }
    }

    fn step(&mut self) -> Result<Option<(RecordLocation, Record)>, ExportError> {
        let offset = self.offset;
        let Some(raw) = read_raw(&mut self.r, offset, self.max_record_bytes)? else {
            return Err(ExportError::new(
                ExportErrorKind::Truncated,
                format!(
                    "the file ends at byte {offset} without a trailer (after {} messages and {} blobs): it was cut short or never finished",
                    self.messages, self.blobs
                ),
            ));
        };
        self.offset += raw.len();
        let record = raw.decode()?.record;
        let at = format!("record at byte {offset}");
        let out = match record {
            None => return Err(unexpected(offset, "an empty record")),
            Some(export_record::Record::Manifest(_)) => {
                return Err(unexpected(offset, "a second manifest"))
            }
            Some(export_record::Record::Trailer(t)) => {
                self.trailer(&raw, t)?;
                return Ok(None);
            }
            Some(export_record::Record::Message(m)) => {
                if matches!(self.state, State::Blobs) {
                    return Err(unexpected(
                        offset,
                        &format!(
                            "message {}:{} after a blob: every message comes before the blobs",
                            m.stream, m.seq
                        ),
                    ));
                }
                self.tallies.message(&self.manifest, &m, &at)?;
                self.messages += 1;
                Record::Message(m)
            }
            Some(export_record::Record::Blob(b)) => {
                let digest = check_blob(self.last_blob.as_ref(), &b.sha256, &b.data, &at)?;
                self.last_blob = Some(digest);
                self.state = State::Blobs;
                self.blobs += 1;
                Record::Blob(b)
            }
        };
        self.hasher.update(&raw.prefix);
        self.hasher.update(&raw.body);
        let location = RecordLocation {
            offset,
            len: raw.len(),
            sha256: raw.sha256(),
        };
        Ok(Some((location, out)))
    }

    fn trailer(
        &mut self,
        raw: &RawRecord,
        t: crate::proto::ExportTrailer,
    ) -> Result<(), ExportError> {
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        if t.sha256 != digest.as_slice() {
            return Err(ExportError::new(
                ExportErrorKind::DigestMismatch,
                format!(
                    "the trailer's SHA-256 {} is not the digest of the {} bytes before it ({}): the file was changed",
                    hex::encode(&t.sha256),
                    raw.offset,
                    hex::encode(digest)
                ),
            ));
        }
        if (t.messages, t.blobs) != (self.messages, self.blobs) {
            return Err(ExportError::new(
                ExportErrorKind::CountMismatch,
                format!(
                    "the trailer counts {} messages and {} blobs, the file holds {} and {}",
                    t.messages, t.blobs, self.messages, self.blobs
                ),
            ));
        }
        self.tallies.finish(&self.manifest, self.blobs)?;
        let mut extra = [0u8; 1];
        let more = loop {
            match self.r.read(&mut extra) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ExportError::io("cannot read the export file", e)),
            }
        };
        if more > 0 {
            return Err(ExportError::new(
                ExportErrorKind::TrailingData,
                format!(
                    "bytes follow the trailer (which ends at byte {}): the file is not one export",
                    self.offset
                ),
            ));
        }
        self.state = State::Done(ExportSummary {
            messages: self.messages,
            blobs: self.blobs,
            bytes: self.offset,
            sha256: digest,
        });
        Ok(())
    }
}

impl<R: Read> Iterator for ExportReader<R> {
    type Item = Result<Record, ExportError>;

    /// Records until the end; an error once, then `None`.
    fn next(&mut self) -> Option<Self::Item> {
        if matches!(self.state, State::Failed(_)) {
            return None;
        }
        self.next_record().transpose()
    }
}

/// Reads the message or blob record at `location` of a file that was read
/// (and so verified) before, and checks its bytes are the ones read then
/// ([`ExportErrorKind::Changed`] otherwise).
pub fn read_record_at<R: Read + Seek>(
    r: &mut R,
    location: &RecordLocation,
) -> Result<Record, ExportError> {
    r.seek(SeekFrom::Start(location.offset))
        .map_err(|e| ExportError::io("cannot seek in the export file", e))?;
    let changed = || {
        ExportError::new(
            ExportErrorKind::Changed,
            format!(
                "the record at byte {} is not the one read before: the file changed since it was verified",
                location.offset
            ),
        )
    };
    let raw = match read_raw(r, location.offset, location.len) {
        Ok(Some(raw)) => raw,
        Ok(None) => return Err(changed()),
        Err(e) if e.kind() == ExportErrorKind::Io => return Err(e),
        Err(_) => return Err(changed()),
    };
    if raw.len() != location.len || raw.sha256() != location.sha256 {
        return Err(changed());
    }
    match raw.decode()?.record {
        Some(export_record::Record::Message(m)) => Ok(Record::Message(m)),
        Some(export_record::Record::Blob(b)) => Ok(Record::Blob(b)),
        _ => Err(changed()),
    }
}
