//! The portable copy of the log (`parley replay export | import`): JSON lines, a header and then
//! one event per line, in log order.
//!
//! ```text
//! {"format":"parley-log","version":1,"events":N,"heads":{"<stream_type>/<stream_id>":"<hex hash>",...}}
//! {"position":1,"event_id":"…","account_id":"…","stream_type":"Account","stream_id":"…","version":1,
//!  "event_type":"AccountCreated","schema_version":1,"payload":{…},"metadata":{…},
//!  "recorded_at":"2026-11-22T10:00:00.123456Z","prev_hash":"<hex>","hash":"<hex>"}
//! ```
//!
//! Everything an event's hash covers is in its line, with its position and both links of its
//! stream's chain, so an import can recompute every chain before it writes anything. Transaction
//! ids are not: the imported events carry the importing transaction's.

mod export;
mod import;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use export::{export, export_to_file, Exported};
pub use import::{import, import_file, Imported};

/// The `format` of the header line.
pub const FORMAT: &str = "parley-log";
/// The version of the format this build writes and reads.
pub const VERSION: u64 = 1;

/// The first line of a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u64,
    /// How many event lines follow.
    pub events: u64,
    /// Every stream of the file, as `<stream_type>/<stream_id>`, with its last event's hash (hex).
    pub heads: BTreeMap<String, String>,
}

/// One event line: the stored columns of an event but its transaction id; hashes in hex.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    pub position: i64,
    pub event_id: Uuid,
    pub account_id: Uuid,
    pub stream_type: String,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

/// The key of a stream in the header's `heads`.
pub fn head_key(stream_type: &str, stream_id: &str) -> String {
    format!("{stream_type}/{stream_id}")
}

/// Told how far an export or import is (a progress bar, in the CLI).
pub trait Progress: Sync {
    /// The number of events there are to go through.
    fn total(&self, _events: u64) {}
    /// `events` more were gone through.
    fn advance(&self, _events: u64) {}
}

/// No progress to show.
impl Progress for () {}

/// Why an export or an import did not happen. Each is one line, fit for an operator.
#[derive(Debug, thiserror::Error)]
pub enum PortableError {
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("not a parley-log file: {0}")]
    NotParleyLog(String),
    #[error("parley-log version {0} is not supported (this parley reads version {VERSION})")]
    UnsupportedVersion(Value),
    #[error("line {line} is not a JSON event line: {detail}")]
    NotJson { line: u64, detail: String },
    #[error("line {line} is cut short: the file is truncated")]
    Truncated { line: u64 },
    #[error("line {line} ({stream} version {version}): {detail}")]
    Damaged { line: u64, stream: String, version: i64, detail: String },
    #[error("the file does not match its header: {0}")]
    Mismatch(String),
    #[error("the target store is not empty ({0}): import only into an empty store")]
    NotEmpty(String),
    #[error("deriving the write side's rows: {0}")]
    WriteSide(#[from] parley_commands::DispatchError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}
