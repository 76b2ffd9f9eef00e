//! Conditional writes as commands: `SET key value [NX|XX] [GET]` and `KV.CAS` (issue #13, item
//! 2). Both become one [`ClientRequest::Conditional`](crate::client::ClientRequest), which the
//! coordinator always runs as a Paxos round (`node::paxos`), whatever the level: a condition
//! judged on a quorum read and then written with a quorum write is not atomic (PITFALLS).
//!
//! How "expected absent" is written for `KV.CAS`: as its own keyword, `KV.CAS key ABSENT new`,
//! with the expected bytes behind another, `KV.CAS key VALUE expected new`. An empty string
//! cannot stand for "absent" because an empty value exists (`SET k ""`), and no byte string can:
//! every byte string is a value a key may hold.

use super::SetCondition;
use super::SetOptions;
use crate::client::WriteCondition;
use bytes::Bytes;

/// The condition a `SET` with `options` is written under; `None` for a plain `SET` (no `NX`,
/// `XX` or `GET`), which stays an ordinary write at the cluster's level. `GET` alone is a
/// conditional write whose condition always holds: only the previous value is wanted, and it
/// must be the value the write replaced, which only the Paxos path can tell. A pure policy.
pub fn set_condition(options: &SetOptions) -> Option<WriteCondition> {
    match (options.condition, options.get) {
        (Some(SetCondition::Absent), _) => Some(WriteCondition::Absent),
        (Some(SetCondition::Present), _) => Some(WriteCondition::Present),
        (None, true) => Some(WriteCondition::Always),
        (None, false) => None,
    }
}

/// The condition of `KV.CAS` with `expected` (`None`: the key must be absent). A pure policy.
pub fn cas_condition(expected: Option<Bytes>) -> WriteCondition {
    match expected {
        None => WriteCondition::Absent,
        Some(value) => WriteCondition::Equals(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_options_map_to_conditions() {
        let with = |condition, get| SetOptions {
            condition,
            get,
            ..SetOptions::default()
        };
        assert_eq!(set_condition(&with(None, false)), None);
        assert_eq!(
            set_condition(&with(None, true)),
            Some(WriteCondition::Always)
        );
        assert_eq!(
            set_condition(&with(Some(SetCondition::Absent), true)),
            Some(WriteCondition::Absent)
        );
        assert_eq!(
            set_condition(&with(Some(SetCondition::Present), false)),
            Some(WriteCondition::Present)
        );
        assert_eq!(cas_condition(None), WriteCondition::Absent);
        let empty = Bytes::new();
        assert_eq!(
            cas_condition(Some(empty.clone())),
            WriteCondition::Equals(empty),
            "an expected empty value is a value, not absence"
        );
    }
}
