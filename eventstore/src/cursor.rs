//! Log cursors: a place in the commit-safe order of the log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A place in the log's commit-safe order: the `(transaction_id, position)` of an event.
///
/// Readers order events by this pair (see DESIGN.md, invariant 2). Its text form is opaque to
/// clients and uses only URL- and header-safe characters: `"0"` is the beginning of the log,
/// otherwise `<transaction_id>_<position>` in decimal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogCursor {
    pub transaction_id: u64,
    pub position: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid log cursor")]
pub struct CursorError;

impl LogCursor {
    /// Before every event.
    pub const START: LogCursor = LogCursor { transaction_id: 0, position: 0 };

    pub fn new(transaction_id: u64, position: i64) -> Self {
        Self { transaction_id, position }
    }

    pub fn is_start(&self) -> bool {
        *self == Self::START
    }

    /// The transaction id as Postgres text, for binding as `$n::text::xid8`.
    pub fn transaction_id_text(&self) -> String {
        self.transaction_id.to_string()
    }
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_start() {
            f.write_str("0")
        } else {
            write!(f, "{}_{}", self.transaction_id, self.position)
        }
    }
}

impl FromStr for LogCursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "0" {
            return Ok(Self::START);
        }
        let (tx, pos) = s.split_once('_').ok_or(CursorError)?;
        let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(tx) || !digits(pos) {
            return Err(CursorError);
        }
        let transaction_id = tx.parse().map_err(|_| CursorError)?;
        let position: i64 = pos.parse().map_err(|_| CursorError)?;
        if transaction_id == 0 || position <= 0 {
            return Err(CursorError);
        }
        Ok(Self { transaction_id, position })
    }
}

impl Serialize for LogCursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogCursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_text() {
        for c in [LogCursor::START, LogCursor::new(7, 1), LogCursor::new(u64::MAX, i64::MAX)] {
            assert_eq!(c.to_string().parse::<LogCursor>(), Ok(c));
        }
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for s in ["", "_", "1_", "_1", "a_1", "1_1_1", "-1_2", "0_5", "5_0", "1.2", " 1_2"] {
            assert_eq!(s.parse::<LogCursor>(), Err(CursorError), "{s:?}");
        }
    }

    #[test]
    fn cursors_order_by_transaction_then_position() {
        assert!(LogCursor::new(5, 100) < LogCursor::new(6, 1));
        assert!(LogCursor::new(5, 1) < LogCursor::new(5, 2));
        assert!(LogCursor::START < LogCursor::new(1, 1));
    }
}
