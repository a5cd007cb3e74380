//! Reads: chain heads, single events and pages of a chain, all with leader-routed
//! `STREAM.MSG.GET` requests (never Direct Get, no consumer created, so any number
//! of readers can run at once). Events come back exactly as stored.

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::store::{
    ChainHeadInfo, ChainPage, EventStore, ReadError, HEADER_PUBLISHED_AT, HEADER_TYPE,
};
use amai_core::stored::{aggregate_seq_of, millis};
use amai_core::subjects::{Aggregate, AggregateKind};
use amai_core::{Position, StoredEvent};

/// The publish time of a message of `stream`: the time JetStream stored it
/// or, for a message an import republished, the earlier time its original
/// deployment's `stream` stored it (the [`HEADER_PUBLISHED_AT`] pair naming
/// `stream`; pairs naming other streams, or unparsable, are ignored). So an
/// imported history keeps its publish times (the trust feed's copies theirs
/// too), and whoever can publish raw messages can only date one *back* with
/// the header, never ahead (publish times are for display; dating back
/// decides nothing anywhere, see docs/architecture.md).
pub fn published_time(
    stream: &str,
    stored: time::OffsetDateTime,
    headers: Option<&HeaderMap>,
) -> time::OffsetDateTime {
    headers
        .and_then(|h| h.get(HEADER_PUBLISHED_AT))
        .and_then(|v| {
            v.as_str().split_ascii_whitespace().find_map(|pair| {
                let (s, t) = pair.split_once('=')?;
                (s == stream).then_some(())?;
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
        })
        .map_or(stored, |original| original.min(stored))
}

/// The [`HEADER_PUBLISHED_AT`] value saying each `(stream, time)` stored a
/// message at that time.
pub fn published_at_value(times: &[(&str, time::OffsetDateTime)]) -> String {
    times
        .iter()
        .map(|(stream, at)| {
            // Formatting fails only for years outside 0..=9999; readers then
            // ignore the pair and keep JetStream's time.
            let t = at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            format!("{stream}={t}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds a stored event from a stream message's parts (its publish time by
/// [`published_time`]).
pub fn stored_event(
    stream: &str,
    seq: u64,
    subject: String,
    published: time::OffsetDateTime,
    payload: Bytes,
    headers: Option<&HeaderMap>,
) -> StoredEvent {
    let event_type = headers
        .and_then(|h| h.get(HEADER_TYPE))
        .map(|v| v.as_str().to_string());
    StoredEvent::new(
        Position::new(stream, seq),
        subject,
        millis(published_time(stream, published, headers)),
        payload,
        event_type,
    )
}

/// Builds a stored event from a message read with `STREAM.MSG.GET`.
pub fn stored_from_stream_message(
    stream: &str,
    msg: async_nats::jetstream::message::StreamMessage,
) -> StoredEvent {
    stored_event(
        stream,
        msg.sequence,
        msg.subject.to_string(),
        msg.time,
        msg.payload,
        Some(&msg.headers),
    )
}

impl EventStore {
    /// A handle on `name` (no info request); NATS failures are `Unavailable`.
    async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream<()>, ReadError> {
        self.js
            .get_stream_no_info(name)
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))
    }

    /// The last message stored on an aggregate's subject, as stored (it may be
    /// an invalid event published around the store; the fold judges it).
    pub(crate) async fn head_message(
        &self,
        aggregate: &Aggregate,
    ) -> Result<Option<StoredEvent>, ReadError> {
        let stream = self.stream(aggregate.stream()).await?;
        match stream
            .get_last_raw_message_by_subject(&aggregate.subject())
            .await
        {
            Ok(msg) => Ok(Some(stored_from_stream_message(aggregate.stream(), msg))),
            Err(e) if no_message(&e) => Ok(None),
            Err(e) => Err(ReadError::Unavailable(e.to_string())),
        }
    }

    /// The head of an aggregate, read from the stream leader. Fails with
    /// `Invalid` when the last message is not a decodable event.
    pub async fn chain_head(&self, aggregate: &Aggregate) -> Result<ChainHeadInfo, ReadError> {
        let Some(stored) = self.head_message(aggregate).await? else {
            return Ok(ChainHeadInfo::empty(aggregate.clone()));
        };
        let seq = aggregate_seq_of(&stored).ok_or_else(|| {
            ReadError::Invalid(format!("the head of {aggregate} is not a valid event"))
        })?;
        Ok(ChainHeadInfo {
            aggregate: aggregate.clone(),
            aggregate_seq: seq,
            hash: stored.hash,
            stream_seq: stored.position.seq,
        })
    }

    /// One event by position.
    pub async fn get_event(&self, position: &Position) -> Result<StoredEvent, ReadError> {
        if AggregateKind::for_stream(&position.stream).is_none()
            && position.stream != crate::streams::TRUST_FEED_STREAM
        {
            return Err(ReadError::Invalid(format!(
                "unknown stream {:?}",
                position.stream
            )));
        }
        let stream = self.stream(&position.stream).await?;
        match stream.get_raw_message(position.seq).await {
            Ok(msg) => Ok(stored_from_stream_message(&position.stream, msg)),
            Err(e) if no_message(&e) => Err(ReadError::NotFound(format!("no event at {position}"))),
            Err(e) => Err(ReadError::Unavailable(e.to_string())),
        }
    }

    /// The stream sequence of an aggregate's last message (0 when empty),
    /// whatever that message is.
    pub async fn chain_head_stream_seq(&self, aggregate: &Aggregate) -> Result<u64, ReadError> {
        Ok(self
            .head_message(aggregate)
            .await?
            .map_or(0, |m| m.position.seq))
    }

    /// At most `limit` events of one aggregate with stream sequence in `from..=to`.
    pub async fn read_subject_page(
        &self,
        aggregate: &Aggregate,
        from_stream_seq: u64,
        to_stream_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let mut out = Vec::new();
        let mut next = from_stream_seq.max(1);
        while next <= to_stream_seq && out.len() < limit {
            match self.next_on_subject(aggregate, next).await? {
                Some(stored) if stored.position.seq <= to_stream_seq => {
                    next = stored.position.seq + 1;
                    out.push(stored);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Events of one aggregate with stream sequence in `from..=to`, read with
    /// leader-routed `STREAM.MSG.GET` next-by-subject requests (no consumer is
    /// created, so any number of readers can run at once).
    pub async fn read_subject(
        &self,
        aggregate: &Aggregate,
        from_stream_seq: u64,
        to_stream_seq: u64,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        self.read_subject_page(aggregate, from_stream_seq, to_stream_seq, usize::MAX)
            .await
    }

    /// The first event of `aggregate` at or after stream sequence `seq`.
    async fn next_on_subject(
        &self,
        aggregate: &Aggregate,
        seq: u64,
    ) -> Result<Option<StoredEvent>, ReadError> {
        let stream = self.stream(aggregate.stream()).await?;
        match stream
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject(aggregate.subject())
            .send()
            .await
        {
            Ok(msg) => Ok(Some(stored_from_stream_message(aggregate.stream(), msg))),
            Err(e) if no_message(&e) => Ok(None),
            Err(e) => Err(ReadError::Unavailable(e.to_string())),
        }
    }

    /// A page of an aggregate's chain starting at `from_aggregate_seq` (1-based).
    pub async fn read_chain(
        &self,
        aggregate: &Aggregate,
        from_aggregate_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        Ok(self
            .read_chain_page(aggregate, from_aggregate_seq, limit, 1)
            .await?
            .events)
    }

    /// A page of an aggregate's chain: at most `limit` events from
    /// `from_aggregate_seq` on, scanning the subject from stream sequence
    /// `scan_from_stream_seq` (1, or a previous page's `next_stream_seq`).
    /// Undecodable events are included where they sit, so verifiers see them.
    pub async fn read_chain_page(
        &self,
        aggregate: &Aggregate,
        from_aggregate_seq: u64,
        limit: usize,
        scan_from_stream_seq: u64,
    ) -> Result<ChainPage, ReadError> {
        let head = self.chain_head(aggregate).await?;
        let from = from_aggregate_seq.max(1);
        let mut page = ChainPage {
            events: Vec::new(),
            next_aggregate_seq: 0,
            next_stream_seq: 0,
        };
        if head.aggregate_seq == 0 || from > head.aggregate_seq || limit == 0 {
            return Ok(page);
        }
        let mut next = scan_from_stream_seq.max(1);
        if next == 1 && from > 1 {
            // No continuation: find where `from` sits (O(log n)) instead of
            // scanning the subject from its start.
            if let Some(start) = self
                .search_aggregate_seq(aggregate, from, head.stream_seq)
                .await?
            {
                next = start.position.seq;
            }
        }
        // Aggregate sequence of the last decodable event seen.
        let mut last_seq = 0u64;
        while next <= head.stream_seq && page.events.len() < limit {
            let Some(stored) = self.next_on_subject(aggregate, next).await? else {
                break;
            };
            if stored.position.seq > head.stream_seq {
                break;
            }
            next = stored.position.seq + 1;
            let include = match aggregate_seq_of(&stored) {
                Some(seq) => {
                    last_seq = seq;
                    seq >= from
                }
                None => last_seq + 1 >= from,
            };
            if include {
                page.events.push(stored);
            }
        }
        if page.events.len() == limit && next <= head.stream_seq {
            page.next_stream_seq = next;
            page.next_aggregate_seq = (last_seq + 1).max(from);
        }
        Ok(page)
    }

    pub(crate) async fn find_by_aggregate_seq(
        &self,
        aggregate: &Aggregate,
        seq: u64,
        head: &ChainHeadInfo,
    ) -> Result<Option<StoredEvent>, ReadError> {
        if seq == head.aggregate_seq {
            return Ok(Some(StoredEvent {
                position: Position::new(aggregate.stream(), head.stream_seq),
                subject: aggregate.subject(),
                published_ms: 0,
                payload: Bytes::new(),
                hash: head.hash,
                event_type: None,
            }));
        }
        self.search_aggregate_seq(aggregate, seq, head.stream_seq)
            .await
    }

    /// The event of `aggregate` at aggregate sequence `seq`, found by binary
    /// search over stream sequences (aggregate sequences grow with stream
    /// sequences on a subject): O(log n) reads, never a scan of the chain. An
    /// undecodable message in the way ends the search (`None`).
    pub async fn search_aggregate_seq(
        &self,
        aggregate: &Aggregate,
        seq: u64,
        last_stream_seq: u64,
    ) -> Result<Option<StoredEvent>, ReadError> {
        let (mut lo, mut hi) = (1u64, last_stream_seq);
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let Some(found) = self.next_on_subject(aggregate, mid).await? else {
                // Nothing at or after `mid`: the target is before it.
                hi = mid - 1;
                continue;
            };
            if found.position.seq > hi {
                hi = mid - 1;
                continue;
            }
            match aggregate_seq_of(&found) {
                Some(a) if a == seq => return Ok(Some(found)),
                Some(a) if a < seq => lo = found.position.seq + 1,
                Some(_) => hi = mid - 1,
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// Whether a `STREAM.MSG.GET` failed only because there is no such message.
pub(crate) fn no_message(e: &jetstream::stream::LastRawMessageError) -> bool {
    match e.kind() {
        LastRawMessageErrorKind::NoMessageFound => true,
        LastRawMessageErrorKind::JetStream(js) => {
            js.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).expect("time")
    }

    fn with_value(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_PUBLISHED_AT, value);
        h
    }

    #[test]
    fn an_imported_message_keeps_its_original_publish_time_per_stream() {
        let stored = at("2026-12-03T10:00:00Z");
        let agents = at("2026-11-01T08:30:00.123456789Z");
        let feed = at("2026-11-01T08:30:00.125Z");
        let h = with_value(&published_at_value(&[
            ("AMAI_AGENTS", agents),
            ("AMAI_TRUST_FEED", feed),
        ]));
        assert_eq!(published_time("AMAI_AGENTS", stored, Some(&h)), agents);
        assert_eq!(published_time("AMAI_TRUST_FEED", stored, Some(&h)), feed);
        assert_eq!(published_time("AMAI_LLM", stored, Some(&h)), stored);
        let ev = stored_event(
            "AMAI_AGENTS",
            1,
            "amai.agent.x".into(),
            stored,
            Bytes::new(),
            Some(&h),
        );
        assert_eq!(ev.published_ms, millis(agents));
    }

    #[test]
    fn the_header_never_dates_a_message_ahead_and_garbage_is_ignored() {
        let stored = at("2026-12-03T10:00:00Z");
        let ahead = published_at_value(&[("S", at("2030-01-01T00:00:00Z"))]);
        assert_eq!(
            published_time("S", stored, Some(&with_value(&ahead))),
            stored
        );
        for garbage in [
            "S=yesterday",
            "2026-11-01T08:30:00Z",
            "S 2026-11-01T08:30:00Z",
            "",
        ] {
            assert_eq!(
                published_time("S", stored, Some(&with_value(garbage))),
                stored,
                "{garbage:?}"
            );
        }
        assert_eq!(published_time("S", stored, None), stored);
        assert_eq!(published_time("S", stored, Some(&HeaderMap::new())), stored);
    }
}
