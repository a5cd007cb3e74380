//! [`EventRef`]: an event id as the model stores it. Models are stored after
//! every event, and the ids of a window (up to 64 per detector) are most of
//! their size, so a canonical UUID (lowercase, hyphenated: every Amai event
//! id) is kept as its 16 bytes; any other string is kept as it is. The id
//! reads back exactly as it was given.

use serde::{Deserialize, Serialize};

/// An event id, compact when it is a canonical UUID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum EventRef {
    /// A canonical UUID's bytes.
    Uuid([u8; 16]),
    /// Anything else, verbatim.
    Other(String),
}

const HYPHENS: [usize; 4] = [8, 13, 18, 23];

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl EventRef {
    /// The reference of `id`.
    pub(crate) fn new(id: &str) -> Self {
        Self::parse_uuid(id).map_or_else(|| Self::Other(id.to_owned()), Self::Uuid)
    }

    fn parse_uuid(id: &str) -> Option<[u8; 16]> {
        let b = id.as_bytes();
        if b.len() != 36 || HYPHENS.iter().any(|&i| b[i] != b'-') {
            return None;
        }
        let mut digits = b
            .iter()
            .enumerate()
            .filter(|(i, _)| !HYPHENS.contains(i))
            .map(|(_, &c)| hex_value(c));
        let mut out = [0u8; 16];
        for byte in &mut out {
            *byte = (digits.next()?? << 4) | digits.next()??;
        }
        Some(out)
    }

    /// Whether it refers to `id`.
    pub(crate) fn is(&self, id: &str) -> bool {
        match self {
            Self::Other(s) => s == id,
            Self::Uuid(bytes) => Self::parse_uuid(id).as_ref() == Some(bytes),
        }
    }
}

impl std::fmt::Display for EventRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Other(s) => f.write_str(s),
            Self::Uuid(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuids_are_compact_and_every_id_reads_back_as_given() {
        let uuid = "0192f0c4-1a2b-7c3d-8e4f-0123456789ab";
        let r = EventRef::new(uuid);
        assert!(matches!(r, EventRef::Uuid(_)));
        assert_eq!(r.to_string(), uuid);
        assert!(r.is(uuid));
        assert!(!r.is("0192f0c4-1a2b-7c3d-8e4f-0123456789ac"));
        for other in [
            "e1",
            "0192F0C4-1A2B-7C3D-8E4F-0123456789AB",
            "0192f0c41a2b7c3d8e4f0123456789ab",
            "0192f0c4-1a2b-7c3d-8e4f-0123456789ag",
            "",
        ] {
            let r = EventRef::new(other);
            assert!(matches!(r, EventRef::Other(_)), "{other}");
            assert_eq!(r.to_string(), other);
            assert!(r.is(other));
        }
    }
}
