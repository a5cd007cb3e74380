//! The blobs an event refers to: every `amai.v1.BlobRef` anywhere in its
//! payload, found by walking the encoded `EventBody` with the protobuf
//! descriptors of Amai's protos (`amai_proto::FILE_DESCRIPTOR_SET`). A new
//! payload with a `BlobRef` field, however deeply nested (repeated, in a map,
//! in a oneof), is found without a change here.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

use crate::proto::{BlobRef, SignedEvent};

const BLOB_REF: &str = ".amai.v1.BlobRef";
const EVENT_BODY: &str = ".amai.v1.EventBody";
/// Deeper nesting than this is refused (no Amai payload comes close).
const MAX_DEPTH: usize = 64;

/// A blob an event refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobReference {
    /// SHA-256 of the content (the object's key, in hex, in the blob store).
    pub sha256: [u8; 32],
    /// Size the event states.
    pub size: u64,
}

/// Why an event's blob references could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot list the blobs of an event: {0}")]
pub struct BlobScanError(String);

/// Message-typed fields of every message type, by full name.
#[derive(Default)]
struct Index {
    messages: HashMap<String, HashMap<u32, String>>,
}

impl Index {
    fn add(&mut self, prefix: &str, m: &DescriptorProto) {
        let name = format!("{prefix}.{}", m.name());
        let fields = m
            .field
            .iter()
            .filter(|f| f.r#type() == Type::Message)
            .map(|f| (f.number() as u32, f.type_name().to_string()))
            .collect();
        for nested in &m.nested_type {
            self.add(&name, nested);
        }
        self.messages.insert(name, fields);
    }
}

fn index() -> &'static Result<Index, BlobScanError> {
    static INDEX: OnceLock<Result<Index, BlobScanError>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let set = FileDescriptorSet::decode(amai_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| BlobScanError(format!("the built-in descriptors do not decode: {e}")))?;
        let mut index = Index::default();
        for file in &set.file {
            let prefix = match file.package() {
                "" => String::new(),
                p => format!(".{p}"),
            };
            for m in &file.message_type {
                index.add(&prefix, m);
            }
        }
        Ok(index)
    })
}

/// Every blob the encoded `SignedEvent` refers to, in the order they appear
/// (duplicates kept). Bytes that are not a `SignedEvent`, or whose body is
/// not an `EventBody`, are an error; a `BlobRef` whose digest is not 32
/// bytes refers to nothing and is skipped.
pub fn referenced_blobs(signed_event: &[u8]) -> Result<Vec<BlobReference>, BlobScanError> {
    let index = index().as_ref().map_err(Clone::clone)?;
    let signed = SignedEvent::decode(signed_event)
        .map_err(|e| BlobScanError(format!("not a SignedEvent: {e}")))?;
    let mut out = Vec::new();
    walk(index, &signed.body, EVENT_BODY, 0, &mut out)?;
    Ok(out)
}

fn walk(
    index: &Index,
    mut buf: &[u8],
    type_name: &str,
    depth: usize,
    out: &mut Vec<BlobReference>,
) -> Result<(), BlobScanError> {
    use prost::encoding::decode_varint;
    if depth > MAX_DEPTH {
        return Err(BlobScanError(format!("nested deeper than {MAX_DEPTH}")));
    }
    let fields = index
        .messages
        .get(type_name)
        .ok_or_else(|| BlobScanError(format!("unknown message type {type_name}")))?;
    let bad = |what: &str| BlobScanError(format!("{type_name}: {what}"));
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).map_err(|e| bad(&e.to_string()))?;
        let (number, wire_type) = ((key >> 3) as u32, key & 7);
        match wire_type {
            0 => {
                decode_varint(&mut buf).map_err(|e| bad(&e.to_string()))?;
            }
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                buf = buf
                    .get(n..)
                    .ok_or_else(|| bad("a fixed field is cut short"))?;
            }
            2 => {
                let len = decode_varint(&mut buf).map_err(|e| bad(&e.to_string()))?;
                let len = usize::try_from(len).map_err(|_| bad("a length overflows"))?;
                let (field, rest) = (buf.get(..len), buf.get(len..));
                let (Some(field), Some(rest)) = (field, rest) else {
                    return Err(bad("a length-delimited field is cut short"));
                };
                buf = rest;
                match fields.get(&number).map(String::as_str) {
                    Some(BLOB_REF) => {
                        let r = BlobRef::decode(field).map_err(|e| bad(&e.to_string()))?;
                        if let Ok(sha256) = <[u8; 32]>::try_from(r.sha256.as_slice()) {
                            out.push(BlobReference {
                                sha256,
                                size: r.size,
                            });
                        }
                    }
                    Some(nested) => walk(index, field, nested, depth + 1, out)?,
                    None => {}
                }
            }
            _ => return Err(bad(&format!("unsupported wire type {wire_type}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{self, payload::Kind, EventBody, Payload};

    fn event(kind: Kind) -> Vec<u8> {
        let body = EventBody {
            id: "e".into(),
            r#type: "t".into(),
            payload: Some(Payload { kind: Some(kind) }),
            ..Default::default()
        };
        SignedEvent {
            body: body.encode_to_vec(),
            signer_key: vec![1; 32],
            signature: vec![2; 64],
        }
        .encode_to_vec()
    }

    fn blob(b: u8, size: u64) -> Option<BlobRef> {
        Some(BlobRef {
            sha256: vec![b; 32],
            size,
        })
    }

    fn digests(kind: Kind) -> Vec<(u8, u64)> {
        referenced_blobs(&event(kind))
            .expect("scan")
            .into_iter()
            .map(|r| (r.sha256[0], r.size))
            .collect()
    }

    #[test]
    fn finds_a_blob_of_an_agent_action() {
        let found = digests(Kind::AgentAction(proto::AgentAction {
            json: "{}".into(),
            blob: blob(9, 100),
        }));
        assert_eq!(found, vec![(9, 100)]);
    }

    #[test]
    fn finds_every_blob_of_a_jail_run_nested_or_not() {
        let found = digests(Kind::JailRunFinished(proto::JailRunFinished {
            stdout: blob(1, 10),
            stderr: blob(2, 20),
            diff: blob(3, 30),
            network_log: blob(4, 40),
            diff_entries: blob(5, 50),
            ..Default::default()
        }));
        let mut sorted = found.clone();
        sorted.sort();
        assert_eq!(sorted, vec![(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]);
    }

    #[test]
    fn finds_blobs_inside_nested_messages_of_an_llm_recording() {
        let recorded = proto::LlmInteractionRecorded {
            request: Some(proto::LlmBody {
                blob: blob(7, 70_000),
                ..Default::default()
            }),
            events_blob: blob(8, 80_000),
            // A map field (nested entry messages) on the way.
            headers: [("content-type".to_string(), "application/json".to_string())].into(),
            ..Default::default()
        };
        let mut found = digests(Kind::LlmInteractionRecorded(recorded));
        found.sort();
        assert_eq!(found, vec![(7, 70_000), (8, 80_000)]);
    }

    #[test]
    fn events_without_blobs_and_refs_of_the_wrong_length_give_none() {
        assert!(digests(Kind::AgentRevoked(proto::AgentRevoked {
            reason: "r".into(),
        }))
        .is_empty());
        let bad = Kind::AgentAction(proto::AgentAction {
            json: "{}".into(),
            blob: Some(BlobRef {
                sha256: vec![1; 31],
                size: 1,
            }),
        });
        assert!(digests(bad).is_empty());
    }

    #[test]
    fn bytes_that_are_not_an_event_are_an_error() {
        assert!(referenced_blobs(&[0xff, 0xff, 0xff]).is_err());
    }
}
