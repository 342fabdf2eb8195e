//! Following one stream's hash chain, event by event: the rule `replay verify` checks on the
//! stored log and `replay import` checks on a file before anything is written, in one place.

use parley_eventstore::hash::{canonical_bytes, chain, CanonicalEvent, GENESIS};

use crate::verify::ProblemKind;

/// Where a stream's chain stands after the events followed so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    pub version: i64,
    pub hash: Vec<u8>,
    pub position: i64,
}

impl Tip {
    /// Before a stream's first event.
    pub fn genesis() -> Self {
        Self { version: 0, hash: GENESIS.to_vec(), position: 0 }
    }
}

/// One event as the chain sees it: the facts its hash covers, its place and its stored links.
pub(crate) struct Link<'a> {
    pub event: CanonicalEvent<'a>,
    pub position: i64,
    pub prev_hash: &'a [u8],
    pub hash: &'a [u8],
}

/// Checks `link` against the chain at `tip` and moves the tip onto it: every finding, with a
/// sentence saying what is wrong (empty when the event follows its stream as it should).
pub(crate) fn follow(tip: &mut Tip, link: &Link<'_>) -> Vec<(ProblemKind, String)> {
    let mut problems = Vec::new();
    let version = link.event.version;
    if version > tip.version + 1 {
        problems.push((
            ProblemKind::Missing,
            format!("versions {}..{} are missing", tip.version + 1, version - 1),
        ));
    } else if version <= tip.version {
        problems.push((
            ProblemKind::Reordered,
            format!("version {version} comes after version {} of its stream", tip.version),
        ));
    } else if link.prev_hash != tip.hash.as_slice() {
        problems.push((ProblemKind::BrokenLink, "prev_hash is not the previous event's hash".into()));
    }
    if link.position < tip.position {
        problems.push((ProblemKind::Reordered, format!("stands before version {} in the log", tip.version)));
    }
    if chain(link.prev_hash, &canonical_bytes(&link.event)) != link.hash {
        problems.push((ProblemKind::Altered, "content does not match its hash".into()));
    }
    *tip = Tip { version, hash: link.hash.to_vec(), position: link.position };
    problems
}
