//! A floor for the hybrid clock that survives restarts.
//!
//! PITFALLS ("Last-write-wins loses acknowledged writes"): a node's timestamps must never go
//! backwards, and a restart must not be an exception. A restarted node whose wall clock was set
//! back would otherwise stamp a client's next write below the one it acknowledged before the
//! restart, and last-write-wins would keep the older value. The hash-tree rebuild at start-up
//! folds in every timestamp the node stores, but a coordinator does not store the keys it does
//! not replicate, so the node also keeps a bound in its own storage (reserved key, never
//! replicated): before stamping within `CLOCK_FLOOR_MARGIN_MICROS` of the bound it stages a new
//! bound `CLOCK_FLOOR_WINDOW_MICROS` ahead, made durable with the next persist. A restart starts
//! the clock at the bound, so at worst its first stamps run one window ahead of its wall clock.

use super::context::Context;
use crate::codec;
use crate::storage::Storage;
use crate::time::WallMicros;
use crate::version::{LwwRecord, LwwVersion, Record};
use bytes::Bytes;

/// Where the bound lives.
pub const CLOCK_FLOOR_KEY: &[u8] = b"\xff\xffmeta/clock-floor";
/// How far ahead of the latest stamp a new bound is set.
const CLOCK_FLOOR_WINDOW_MICROS: u64 = 1_000_000;
/// A new bound is staged once stamps come this close to the current one.
const CLOCK_FLOOR_MARGIN_MICROS: u64 = 500_000;

impl<S: Storage> Context<S> {
    /// At start-up: the persisted bound, if any, becomes the clock's floor.
    pub(super) fn load_clock_floor(&mut self) {
        if let Ok(Some(Record::Lww(LwwRecord {
            value: Some(bytes), ..
        }))) = self.storage.get(CLOCK_FLOOR_KEY)
        {
            if let Ok(bound) = codec::decode_value::<u64>(&bytes) {
                self.clock.observe(bound);
                self.clock_floor = bound;
            }
        }
    }

    /// A fresh timestamp; keeps the persisted bound ahead of it.
    pub(super) fn stamp(&mut self, wall: WallMicros) -> u64 {
        let stamp = self.clock.stamp(wall);
        self.raise_clock_floor(stamp);
        stamp
    }

    /// Stages a new bound when `stamp` comes near the current one.
    pub(super) fn raise_clock_floor(&mut self, stamp: u64) {
        if stamp.saturating_add(CLOCK_FLOOR_MARGIN_MICROS) < self.clock_floor {
            return;
        }
        let bound = stamp.saturating_add(CLOCK_FLOOR_WINDOW_MICROS);
        let record = Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: bound,
                node: self.id,
                nonce: 0,
            },
            value: Some(Bytes::from(codec::encode_value(&bound))),
            expires_at_micros: None,
        });
        if self
            .stage(Bytes::from_static(CLOCK_FLOOR_KEY), record)
            .is_ok()
        {
            self.clock_floor = bound;
        }
    }
}
