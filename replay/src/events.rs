//! Reading the log for people: filtered, in commit-safe order, secrets redacted.

use parley_aggregates::secrets::redact;
use parley_eventstore::{EventFilter, EventStore, RecordedEvent};
use serde_json::{json, Value};

use crate::error::ReplayError;

/// Events matching `filter`, at most `limit` (all of them when `None`), secrets redacted.
/// `on_page` sees each page as it is read, so callers can stream output in bounded memory.
pub async fn events(
    store: &EventStore,
    filter: &EventFilter,
    limit: Option<u64>,
    mut on_page: impl FnMut(&[RecordedEvent]),
) -> Result<u64, ReplayError> {
    const PAGE: u64 = 1000;
    let mut filter = filter.clone();
    let mut seen = 0u64;
    loop {
        let want = limit.map_or(PAGE, |l| (l - seen).min(PAGE));
        if want == 0 {
            return Ok(seen);
        }
        let page = store.query(&filter, want as i64).await?;
        let Some(last) = page.last() else { return Ok(seen) };
        filter.after = last.cursor();
        seen += page.len() as u64;
        let page: Vec<RecordedEvent> = page.into_iter().map(redacted).collect();
        on_page(&page);
        if (page.len() as u64) < want {
            return Ok(seen);
        }
    }
}

/// The event with every secret field of its payload replaced by `"[redacted]"`.
pub fn redacted(mut event: RecordedEvent) -> RecordedEvent {
    redact(&mut event.payload);
    redact(&mut event.metadata);
    event
}

/// The event as one JSON object (the shape of the audit API and `--format jsonl`).
pub fn to_json(e: &RecordedEvent) -> Value {
    json!({
        "position": e.cursor().to_string(),
        "global_position": e.position,
        "event_id": e.event_id,
        "account_id": e.account_id,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "stream_type": e.stream_type,
        "stream_id": e.stream_id,
        "version": e.version,
        "data": e.payload,
        "metadata": e.metadata,
        "recorded_at": e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}
