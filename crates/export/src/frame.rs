//! Framing: each record is preceded by its length as a protobuf varint
//! (prost's `encode_length_delimited`), and both sides hash every byte they
//! pass, length prefixes included, for the trailer's digest.

use std::io::{Read, Write};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{ExportError, ExportErrorKind};
use crate::proto::ExportRecord;

/// Longest varint of a `u64`.
const MAX_VARINT_BYTES: usize = 10;

/// The length prefix of a record of `len` bytes.
pub(crate) fn length_prefix(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_VARINT_BYTES);
    prost::encoding::encode_varint(len as u64, &mut out);
    out
}

/// A writer that hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Writes one record, hashed unless `hashed` is false (the trailer).
    pub(crate) fn write_record(
        &mut self,
        record: &ExportRecord,
        hashed: bool,
    ) -> Result<u64, ExportError> {
        let body = record.encode_to_vec();
        let prefix = length_prefix(body.len());
        for part in [&prefix, &body] {
            self.inner
                .write_all(part)
                .map_err(|e| ExportError::io("cannot write the export file", e))?;
            if hashed {
                self.hasher.update(part);
            }
        }
        let n = (prefix.len() + body.len()) as u64;
        self.bytes += n;
        Ok(n)
    }

    /// The digest of everything hashed so far.
    pub(crate) fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn flush(&mut self) -> Result<(), ExportError> {
        self.inner
            .flush()
            .map_err(|e| ExportError::io("cannot flush the export file", e))
    }
}

/// One record as read: its bytes (prefix and body) and where it starts.
pub(crate) struct RawRecord {
    pub(crate) offset: u64,
    pub(crate) prefix: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

impl RawRecord {
    pub(crate) fn len(&self) -> u64 {
        (self.prefix.len() + self.body.len()) as u64
    }

    /// SHA-256 of the record's bytes (prefix and body).
    pub(crate) fn sha256(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(&self.prefix);
        h.update(&self.body);
        h.finalize().into()
    }

    pub(crate) fn decode(&self) -> Result<ExportRecord, ExportError> {
        ExportRecord::decode(self.body.as_slice()).map_err(|e| {
            ExportError::new(
                ExportErrorKind::Malformed,
                format!("record at byte {} does not decode: {e}", self.offset),
            )
        })
    }
}

/// Reads one byte; `None` at the end of the input.
fn read_byte<R: Read>(r: &mut R) -> Result<Option<u8>, ExportError> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ExportError::io("cannot read the export file", e)),
        }
    }
}

/// Reads the next record starting at `offset`: `None` at a clean end of the
/// input (no byte at all); a record cut short is [`ExportErrorKind::Truncated`],
/// a length over `max` [`ExportErrorKind::RecordTooLarge`] (nothing is
/// allocated for it).
pub(crate) fn read_raw<R: Read>(
    r: &mut R,
    offset: u64,
    max: u64,
) -> Result<Option<RawRecord>, ExportError> {
    let mut prefix = Vec::with_capacity(MAX_VARINT_BYTES);
    let mut len: u64 = 0;
    loop {
        let Some(b) = read_byte(r)? else {
            if prefix.is_empty() {
                return Ok(None);
            }
            return Err(ExportError::new(
                ExportErrorKind::Truncated,
                format!("the file ends inside the length of the record at byte {offset}"),
            ));
        };
        if prefix.len() == MAX_VARINT_BYTES {
            return Err(ExportError::new(
                ExportErrorKind::Malformed,
                format!("the length of the record at byte {offset} is not a varint"),
            ));
        }
        let shift = 7 * prefix.len() as u32;
        let part = u64::from(b & 0x7f);
        if shift == 63 && part > 1 {
            return Err(ExportError::new(
                ExportErrorKind::Malformed,
                format!("the length of the record at byte {offset} overflows"),
            ));
        }
        len |= part << shift;
        prefix.push(b);
        if b & 0x80 == 0 {
            break;
        }
    }
    if len > max {
        return Err(ExportError::new(
            ExportErrorKind::RecordTooLarge,
            format!("the record at byte {offset} is {len} bytes long, over the cap of {max} bytes"),
        ));
    }
    let mut body = Vec::new();
    let got = r
        .take(len)
        .read_to_end(&mut body)
        .map_err(|e| ExportError::io("cannot read the export file", e))?;
    if (got as u64) < len {
        return Err(ExportError::new(
            ExportErrorKind::Truncated,
            format!("the file ends inside the record at byte {offset} ({got} of its {len} bytes)"),
        ));
    }
    Ok(Some(RawRecord {
        offset,
        prefix,
        body,
    }))
}
