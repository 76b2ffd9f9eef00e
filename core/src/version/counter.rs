//! Counters as state-based PN-counter CRDTs (`INCR`, `INCRBY`, `DECR`, `DECRBY`).
//!
//! A counter is a `base` (the integer it started from) plus one slot per actor, each slot the
//! pair (increments, decrements) that actor ever applied. Its value is
//! `base + Σ (increments − decrements)`. Only the actor itself ever raises its own slot, one
//! increment at a time from its own durable record, so the merge of two states is the
//! per-actor maximum of each component: commutative, associative and idempotent, which is what
//! lets replicas exchange whole states through writes, read repair, hints and anti-entropy, in
//! any order and any number of times, without counting an increment twice. (An increment
//! *message* is not idempotent, which is why only one replica applies each; see
//! `node::counter`.)
//!
//! Slots are keyed by [`ActorId`], a node's data incarnation, not by the node: a replica whose
//! disk was wiped starts its slot again from zero under a new actor, where reusing the old slot
//! would make its new increments vanish under the old, higher maximum (PITFALLS: "Identity
//! survives restarts").
//!
//! Counters coexist with last-write-wins values through `epoch`, a [`LwwVersion`]: the record
//! with the higher of (lww version, counter epoch) wins whole, and at equal versions the counter
//! wins because it was made from that very value. So a `SET` or `DEL` after a counter replaces
//! it, and a counter made from a plain integer value or a tombstone takes that record's version
//! as its epoch and base: two replicas converting the same value concurrently make the same
//! epoch and base, and their slots merge. A counter made where nothing is stored has the zero
//! epoch, so every replica that starts one on an empty key agrees too (a fresh per-replica
//! stamp, as first designed, would let the highest-stamped replica's counter win whole and drop
//! the increments acknowledged under the others).

use super::{ActorId, LwwVersion, Record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The state of one counter key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct CounterRecord {
    /// Which incarnation of the key this counter is: the version of the plain record it was made
    /// from (zero when made from nothing). A higher epoch, or a newer plain value, replaces it.
    pub epoch: LwwVersion,
    /// The integer the counter started from.
    pub base: i64,
    /// Per actor: (increments, decrements) it ever applied, each only ever growing.
    pub slots: BTreeMap<ActorId, (u64, u64)>,
}

/// One applied increment, as the slot it left: the record includes it once its actor's slot
/// under `epoch` reached both components (or a newer epoch or value replaced the counter).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct CounterDot {
    /// The counter's epoch when the increment was applied.
    pub epoch: LwwVersion,
    /// The replica's data incarnation that applied it.
    pub actor: ActorId,
    /// Its slot's increments after it.
    pub increments: u64,
    /// Its slot's decrements after it.
    pub decrements: u64,
}

/// Why an increment was refused before it had any effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterError {
    /// The key holds a plain value that is not a Redis integer (or siblings).
    NotAnInteger,
    /// The value after the increment would leave the range of a signed 64-bit integer (or a
    /// slot would leave the range of its unsigned 64-bit components).
    Overflow,
}

impl CounterRecord {
    /// The counter's value. Wider than `i64` because increments merged from several replicas can
    /// together pass what any single increment was allowed to reach.
    pub fn value(&self) -> i128 {
        self.slots
            .values()
            .fold(i128::from(self.base), |sum, &(inc, dec)| {
                sum + i128::from(inc) - i128::from(dec)
            })
    }

    /// The merge of two states of one key (see the module documentation).
    pub fn join(&self, other: &CounterRecord) -> CounterRecord {
        if self.epoch != other.epoch {
            return if other.epoch > self.epoch {
                other.clone()
            } else {
                self.clone()
            };
        }
        let mut slots = self.slots.clone();
        for (actor, &(inc, dec)) in &other.slots {
            let slot = slots.entry(*actor).or_insert((0, 0));
            slot.0 = slot.0.max(inc);
            slot.1 = slot.1.max(dec);
        }
        CounterRecord {
            epoch: self.epoch,
            // Equal epochs come from the same plain value, hence the same base; the maximum
            // keeps the merge commutative even if they somehow differ.
            base: self.base.max(other.base),
            slots,
        }
    }

    /// True if this state already holds the effect of `dot`.
    pub fn includes(&self, dot: &CounterDot) -> bool {
        if self.epoch != dot.epoch {
            return self.epoch > dot.epoch;
        }
        self.slots
            .get(&dot.actor)
            .is_some_and(|&(inc, dec)| inc >= dot.increments && dec >= dot.decrements)
    }

    /// TEST ONLY (the broken-counters scenario): the wrong merge that adds slots instead of
    /// taking their maximum, so a state received twice counts its increments twice.
    pub fn join_adding(&self, other: &CounterRecord) -> CounterRecord {
        if self.epoch != other.epoch {
            return self.join(other);
        }
        let mut slots = self.slots.clone();
        for (actor, &(inc, dec)) in &other.slots {
            let slot = slots.entry(*actor).or_insert((0, 0));
            slot.0 = slot.0.saturating_add(inc);
            slot.1 = slot.1.saturating_add(dec);
        }
        CounterRecord {
            epoch: self.epoch,
            base: self.base,
            slots,
        }
    }
}

/// The counter an increment starts from, given what a replica stores for the key: the counter
/// itself, a new one from a plain integer value (its version becomes the epoch), a new one from
/// zero over a tombstone (same rule) or over nothing (the zero epoch). A pure policy.
pub fn counter_of(local: Option<&Record>) -> Result<CounterRecord, CounterError> {
    match local {
        None => Ok(CounterRecord::default()),
        Some(Record::Counter(counter)) => Ok(counter.clone()),
        Some(Record::Lww(r)) => {
            let base = match &r.value {
                None => 0,
                Some(bytes) => parse_integer(bytes).ok_or(CounterError::NotAnInteger)?,
            };
            Ok(CounterRecord {
                epoch: r.version,
                base,
                slots: BTreeMap::new(),
            })
        }
        Some(Record::Causal(_)) => Err(CounterError::NotAnInteger),
    }
}

/// Applies `delta` to `actor`'s own slot of `counter`; returns the new state and the dot naming
/// the increment. Refused when the value would leave `i64` (Redis: "increment or decrement
/// would overflow"), so a value a client reads back is always a Redis integer when it was
/// reached on one replica. A pure policy.
pub fn increment(
    counter: &CounterRecord,
    actor: ActorId,
    delta: i64,
) -> Result<(CounterRecord, CounterDot), CounterError> {
    let value = counter.value().checked_add(i128::from(delta));
    if value.is_none_or(|v| i64::try_from(v).is_err()) {
        return Err(CounterError::Overflow);
    }
    let mut next = counter.clone();
    let slot = next.slots.entry(actor).or_insert((0, 0));
    let magnitude = delta.unsigned_abs();
    if delta >= 0 {
        slot.0 = slot
            .0
            .checked_add(magnitude)
            .ok_or(CounterError::Overflow)?;
    } else {
        slot.1 = slot
            .1
            .checked_add(magnitude)
            .ok_or(CounterError::Overflow)?;
    }
    let dot = CounterDot {
        epoch: next.epoch,
        actor,
        increments: slot.0,
        decrements: slot.1,
    };
    Ok((next, dot))
}

/// Parses a Redis integer: optional `-`, no `+`, no leading zeros, no spaces, within `i64`
/// (what Redis's `string2ll` accepts, so `INCR` refuses exactly what Redis refuses).
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == bytes.len(), // "-0" is refused, as Redis does
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical || bytes.len() > 20 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::version::{DataEpoch, LwwRecord};
    use bytes::Bytes;

    fn actor(node: u32) -> ActorId {
        ActorId::new(NodeId(node), DataEpoch(7))
    }

    fn version(ts: u64) -> LwwVersion {
        LwwVersion {
            timestamp_micros: ts,
            node: NodeId(1),
            nonce: 0,
        }
    }

    fn plain(ts: u64, value: Option<&'static [u8]>) -> Record {
        Record::Lww(LwwRecord {
            version: version(ts),
            value: value.map(Bytes::from_static),
            expires_at_micros: None,
        })
    }

    fn bump(counter: &CounterRecord, node: u32, delta: i64) -> CounterRecord {
        increment(counter, actor(node), delta)
            .map(|(next, _)| next)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn merge_takes_each_slots_maximum_in_any_order_and_any_number_of_times() {
        let start = CounterRecord::default();
        let a = bump(&bump(&start, 1, 5), 1, -2); // n1: +5 -2
        let b = bump(&start, 2, 10); // n2: +10
        let c = bump(&a, 3, -4); // n3 saw a: +5 -2 -4
        let all = a.join(&b).join(&c);
        assert_eq!(all.value(), 5 - 2 + 10 - 4);
        assert_eq!(c.join(&b).join(&a), all);
        assert_eq!(b.join(&c.join(&a)), all);
        assert_eq!(all.join(&all), all);
        assert_eq!(all.join(&a).join(&b).join(&c), all, "idempotent");
        // The broken merge counts a state received twice twice.
        assert_ne!(a.join_adding(&a).value(), a.value());
    }

    #[test]
    fn a_newer_epoch_or_a_newer_plain_value_wins_whole() {
        let old = bump(&CounterRecord::default(), 1, 3);
        let newer = CounterRecord {
            epoch: version(50),
            base: 7,
            slots: BTreeMap::new(),
        };
        assert_eq!(old.join(&newer), newer);
        assert_eq!(newer.join(&old), newer);
        let counter = Record::Counter(bump(&newer, 2, 1));
        let set_after = plain(60, Some(b"x"));
        let set_before = plain(40, Some(b"y"));
        assert_eq!(counter.merge(&set_after), set_after);
        assert_eq!(set_after.merge(&counter), set_after);
        assert_eq!(counter.merge(&set_before), counter);
        assert_eq!(set_before.merge(&counter), counter);
        // Made from the value of version 50 itself: the counter wins the tie both ways.
        let source = plain(50, Some(b"7"));
        assert_eq!(counter.merge(&source), counter);
        assert_eq!(source.merge(&counter), counter);
    }

    #[test]
    fn two_replicas_converting_one_integer_agree_and_their_slots_merge() {
        let source = plain(50, Some(b"-12"));
        let one = bump(&counter_of(Some(&source)).unwrap_or_default(), 1, 1);
        let two = bump(&counter_of(Some(&source)).unwrap_or_default(), 2, 1);
        assert_eq!(one.epoch, version(50));
        assert_eq!(one.join(&two).value(), -10);
        let fresh = counter_of(Some(&plain(70, None))).unwrap_or_default();
        assert_eq!((fresh.epoch, fresh.value()), (version(70), 0));
        assert_eq!(
            counter_of(Some(&plain(70, Some(b"abc")))),
            Err(CounterError::NotAnInteger)
        );
        assert_eq!(counter_of(None), Ok(CounterRecord::default()));
    }

    #[test]
    fn increments_that_would_overflow_are_refused_and_dots_name_the_slot() {
        let near = CounterRecord {
            base: i64::MAX - 1,
            ..CounterRecord::default()
        };
        assert!(increment(&near, actor(1), 1).is_ok());
        assert_eq!(increment(&near, actor(1), 2), Err(CounterError::Overflow));
        let low = CounterRecord {
            base: i64::MIN + 1,
            ..CounterRecord::default()
        };
        assert_eq!(
            increment(&low, actor(1), i64::MIN),
            Err(CounterError::Overflow)
        );
        let (next, dot) = increment(&CounterRecord::default(), actor(4), -3).unwrap_or_default();
        assert_eq!((dot.increments, dot.decrements), (0, 3));
        assert!(next.includes(&dot));
        assert!(!CounterRecord::default().includes(&dot));
        let reset = CounterRecord {
            epoch: version(9),
            ..CounterRecord::default()
        };
        assert!(reset.includes(&dot), "a newer epoch supersedes");
    }

    #[test]
    fn integers_parse_as_redis_parses_them() {
        for (text, expected) in [
            (&b"0"[..], Some(0)),
            (b"-5", Some(-5)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"+5", None),
            (b"05", None),
            (b"-0", None),
            (b" 5", None),
            (b"5 ", None),
            (b"", None),
            (b"-", None),
            (b"1.5", None),
            (b"abc", None),
        ] {
            assert_eq!(
                parse_integer(text),
                expected,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
