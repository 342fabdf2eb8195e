//! Verification of the log (DESIGN.md, invariant 5): every stream's hash chain is recomputed
//! from the stored columns; every row whose content, order or presence was altered is named.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parley_eventstore::hash::CanonicalEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::chain::{follow, Link, Tip};
use crate::error::ReplayError;

/// What is wrong with a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Its content does not hash to its stored hash.
    Altered,
    /// Versions before it are missing from its stream.
    Missing,
    /// Its `prev_hash` is not the hash of the event before it: the chain was rewritten or reordered.
    BrokenLink,
    /// It stands before an earlier version of its stream in the global order.
    Reordered,
    /// Its stream ends before the head recorded in a heads file (truncated or deleted).
    Truncated,
}

/// One finding, naming the row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub position: Option<i64>,
    pub event_id: Option<Uuid>,
    pub stream_type: String,
    pub stream_id: String,
    pub version: i64,
    pub detail: String,
}

/// The last link of a stream's chain; kept elsewhere, it detects truncation and rewritten tails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub stream_type: String,
    pub stream_id: String,
    pub version: i64,
    pub hash: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub streams: u64,
    pub events: u64,
    pub problems: Vec<Problem>,
    pub heads: Vec<ChainHead>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The chain state of the stream being walked.
struct Walk {
    stream_type: String,
    stream_id: String,
    tip: Tip,
}

/// Recomputes every chain (of one account, or all), in pages, in bounded memory except for the
/// chain heads it returns. `known_heads`, if given, are heads recorded earlier: a stream now
/// shorter than its recorded head, or whose event at that version has another hash, is reported.
pub async fn verify(
    pool: &PgPool,
    account: Option<Uuid>,
    known_heads: &[ChainHead],
) -> Result<VerifyReport, ReplayError> {
    const PAGE: i64 = 5000;
    let mut report = VerifyReport::default();
    let mut walk: Option<Walk> = None;
    let mut after: (String, String, i64) = (String::new(), String::new(), 0);
    let mut hashes_at_known: HashMap<(String, String, i64), Vec<u8>> = HashMap::new();
    let known: HashMap<(String, String), &ChainHead> =
        known_heads.iter().map(|h| ((h.stream_type.clone(), h.stream_id.clone()), h)).collect();
    loop {
        let rows = sqlx::query(
            "SELECT position, event_id, account_id, stream_type, stream_id, version, event_type, schema_version, \
                    payload, metadata, recorded_at, prev_hash, hash \
             FROM events \
             WHERE (stream_type, stream_id, version) > ($1, $2, $3) AND ($4::uuid IS NULL OR account_id = $4) \
             ORDER BY stream_type, stream_id, version LIMIT $5",
        )
        .bind(&after.0)
        .bind(&after.1)
        .bind(after.2)
        .bind(account)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            let position: i64 = row.try_get("position")?;
            let event_id: Uuid = row.try_get("event_id")?;
            let stream_type: String = row.try_get("stream_type")?;
            let stream_id: String = row.try_get("stream_id")?;
            let version: i64 = row.try_get("version")?;
            let event_type: String = row.try_get("event_type")?;
            let payload: Value = row.try_get("payload")?;
            let metadata: Value = row.try_get("metadata")?;
            let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
            let prev_hash: Vec<u8> = row.try_get("prev_hash")?;
            let hash: Vec<u8> = row.try_get("hash")?;
            let new_stream =
                walk.as_ref().is_none_or(|w| w.stream_type != stream_type || w.stream_id != stream_id);
            if new_stream {
                if let Some(done) = walk.take() {
                    report.heads.push(head_of(&done));
                }
                report.streams += 1;
                walk = Some(Walk {
                    stream_type: stream_type.clone(),
                    stream_id: stream_id.clone(),
                    tip: Tip::genesis(),
                });
            }
            let Some(w) = walk.as_mut() else { continue };
            let link = Link {
                event: CanonicalEvent {
                    stream_type: &stream_type,
                    stream_id: &stream_id,
                    version,
                    event_type: &event_type,
                    schema_version: row.try_get("schema_version")?,
                    event_id,
                    account_id: row.try_get("account_id")?,
                    payload: &payload,
                    metadata: &metadata,
                    recorded_at,
                },
                position,
                prev_hash: &prev_hash,
                hash: &hash,
            };
            for (kind, detail) in follow(&mut w.tip, &link) {
                report.problems.push(Problem {
                    kind,
                    position: Some(position),
                    event_id: Some(event_id),
                    stream_type: stream_type.clone(),
                    stream_id: stream_id.clone(),
                    version,
                    detail,
                });
            }
            if let Some(h) = known.get(&(stream_type.clone(), stream_id.clone())) {
                if h.version == version {
                    hashes_at_known.insert((stream_type.clone(), stream_id.clone(), version), hash.clone());
                }
            }
            report.events += 1;
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => {
                after = (last.try_get("stream_type")?, last.try_get("stream_id")?, last.try_get("version")?);
            }
            _ => break,
        }
    }
    if let Some(done) = walk.take() {
        report.heads.push(head_of(&done));
    }
    compare_heads(&mut report, known_heads, &hashes_at_known);
    Ok(report)
}

fn head_of(w: &Walk) -> ChainHead {
    ChainHead {
        stream_type: w.stream_type.clone(),
        stream_id: w.stream_id.clone(),
        version: w.tip.version,
        hash: hex::encode(&w.tip.hash),
    }
}

/// Streams shorter than a recorded head, or whose event at the recorded version changed.
fn compare_heads(
    report: &mut VerifyReport,
    known: &[ChainHead],
    hashes_at: &HashMap<(String, String, i64), Vec<u8>>,
) {
    let current: HashMap<(&str, &str), i64> =
        report.heads.iter().map(|h| ((h.stream_type.as_str(), h.stream_id.as_str()), h.version)).collect();
    let mut found = Vec::new();
    for k in known {
        let now = current.get(&(k.stream_type.as_str(), k.stream_id.as_str())).copied().unwrap_or(0);
        let detail = if now < k.version {
            Some(format!("ends at version {now}, but version {} was recorded", k.version))
        } else {
            match hashes_at.get(&(k.stream_type.clone(), k.stream_id.clone(), k.version)) {
                Some(h) if hex::encode(h) != k.hash => {
                    Some(format!("version {} has another hash than recorded", k.version))
                }
                _ => None,
            }
        };
        if let Some(detail) = detail {
            found.push(Problem {
                kind: ProblemKind::Truncated,
                position: None,
                event_id: None,
                stream_type: k.stream_type.clone(),
                stream_id: k.stream_id.clone(),
                version: k.version,
                detail,
            });
        }
    }
    report.problems.extend(found);
}
