//! The TTL check: judged from the history alone (what clients saw), with the clock-error bound
//! of the scenario as the only other input.
//!
//! Let `S` be the most any node's wall clock differs from true time (`Scenario::
//! clock_error_ms_max`). A coordinator stamps a write with its hybrid clock, which is never
//! behind its wall clock and never more than `S` ahead of true time (it folds in only stamps
//! made by such clocks), and judges expiry at its hybrid now, which is never more than `S`
//! behind true time. So, for every value a read returns, some write of that value (an original
//! `SET` or the write-back of an `EXPIRE`/`PERSIST`) must be:
//!
//! * **not certainly expired**: a value written with `PX d` expires at its stamp plus `d`, at
//!   most at true time `reply + S + d` (the stamp happens before the reply); every reader's
//!   clock has passed that once true time is `S` later. With `PXAT t`, expiry is `t`, passed by
//!   every reader at true time `t + S`. A read that starts after that instant and still returns
//!   the value breaks the documented bound ("a value may be read for up to 2 S past its `PX`
//!   expiry, S past its `PXAT`").
//! * **not certainly superseded**: an acknowledged write that began more than `2 S` after the
//!   value's write ended has a higher version (its stamp is later even across skew), and with
//!   strict quorums (r + w > n) every read that starts after it was acknowledged sees that
//!   version or a higher one. If the value is still returned, an expired, deleted or overwritten
//!   value came back (resurrection).
//!
//! A write is a candidate whether it was acknowledged or indeterminate (it may have taken
//! effect); its stamp is bounded by its reply time, or by the end of the run if it never got
//! one. A failed write is known not to have happened.

use super::Verdict;
use crate::history::{History, HistoryOp, OpKind, OpOutcome};
use ringkv_core::version::ExpiresAt;
use std::collections::BTreeMap;

/// Slack for the hybrid clock's `last + 1 µs` steps and rounding, nanoseconds.
const SLACK_NS: u64 = 1_000_000;

/// Wall-clock microseconds at simulated time 0 (see `world::clocks`).
fn epoch_micros() -> u64 {
    crate::world::clocks::NodeClock::default().wall(0).0
}

/// The true (simulated) time, ns, after which no reader may see the value `write` stored, or
/// `None` if it never expires.
fn certainly_expired_ns(write: &HistoryOp, clock_error_ns: u64) -> Option<u64> {
    let stamped_by_ns = write.complete_ns.unwrap_or(u64::MAX);
    match write.expires? {
        ExpiresAt::AfterMillis(ms) => Some(
            stamped_by_ns
                .saturating_add(ms.saturating_mul(1_000_000))
                .saturating_add(clock_error_ns.saturating_mul(2)),
        ),
        ExpiresAt::AtMicros(at) => Some(
            at.saturating_sub(epoch_micros())
                .saturating_mul(1000)
                .saturating_add(clock_error_ns),
        ),
    }
    .map(|ns| ns.saturating_add(SLACK_NS))
}

/// Checks every ok read of the history; see the module documentation.
pub fn check(history: &History, clock_error_ms: u64) -> Verdict {
    let clock_error_ns = clock_error_ms.saturating_mul(1_000_000);
    let mut writes: BTreeMap<u32, Vec<&HistoryOp>> = BTreeMap::new();
    for op in &history.ops {
        if op.is_write() && op.outcome != OpOutcome::Failed {
            writes.entry(op.key).or_default().push(op);
        }
    }
    let (mut reads, mut expiring_writes) = (0u64, 0u64);
    expiring_writes += history
        .ops
        .iter()
        .filter(|op| op.expires.is_some() && op.outcome == OpOutcome::Ok)
        .count() as u64;
    let mut violations = Vec::new();
    for read in &history.ops {
        if read.kind != OpKind::Get || read.outcome != OpOutcome::Ok {
            continue;
        }
        let Some(read_end_ns) = read.complete_ns else {
            continue;
        };
        reads += 1;
        let key_writes = writes.get(&read.key).map(Vec::as_slice).unwrap_or(&[]);
        for &value in &read.read {
            let candidates: Vec<&&HistoryOp> = key_writes
                .iter()
                .filter(|w| w.kind == OpKind::Put && w.value == value && w.invoke_ns < read_end_ns)
                .collect();
            let superseded = |w: &HistoryOp| {
                let after_ns = w
                    .complete_ns
                    .unwrap_or(u64::MAX)
                    .saturating_add(clock_error_ns.saturating_mul(2))
                    .saturating_add(SLACK_NS);
                key_writes.iter().any(|y| {
                    y.outcome == OpOutcome::Ok
                        && y.invoke_ns > after_ns
                        && y.complete_ns.is_some_and(|c| c < read.invoke_ns)
                })
            };
            let expired = |w: &HistoryOp| {
                certainly_expired_ns(w, clock_error_ns).is_some_and(|at| read.invoke_ns > at)
            };
            let legit = candidates.iter().any(|w| !superseded(w) && !expired(w));
            if legit {
                continue;
            }
            let why = if candidates.is_empty() {
                "no write of it had started".to_string()
            } else if candidates.iter().all(|w| expired(w)) {
                let at = candidates
                    .iter()
                    .filter_map(|w| certainly_expired_ns(w, clock_error_ns))
                    .max()
                    .unwrap_or(0);
                format!(
                    "past its expiry plus the skew bound (every write of it expired for all \
                     readers by {:.3} s)",
                    at as f64 / 1e9
                )
            } else {
                "a later acknowledged write had superseded it (resurrection)".to_string()
            };
            violations.push(format!(
                "key {} client {} read value {value} at {:.3} s: {why}",
                read.key,
                read.client,
                read.invoke_ns as f64 / 1e9
            ));
        }
    }
    if violations.is_empty() {
        Verdict::Pass(format!(
            "{reads} ok reads: none returned a value past its expiry + {clock_error_ms} ms clock \
             error bound or after a later write superseded it ({expiring_writes} acknowledged \
             expiring writes)"
        ))
    } else {
        let shown: Vec<&str> = violations.iter().take(3).map(String::as_str).collect();
        Verdict::Fail(format!(
            "{} reads returned a value they must not: {}",
            violations.len(),
            shown.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, value: u64, expires: Option<ExpiresAt>, at_ms: (u64, u64)) -> HistoryOp {
        HistoryOp {
            client: 0,
            key: 0,
            kind,
            value,
            read: Vec::new(),
            delta: 0,
            version: None,
            context: None,
            acks: 2,
            coordinator: 0,
            expires,
            invoke_ns: at_ms.0 * 1_000_000,
            complete_ns: Some(at_ms.1 * 1_000_000),
            outcome: OpOutcome::Ok,
            during_faults: true,
            command: None,
        }
    }

    fn read(value: u64, at_ms: u64) -> HistoryOp {
        let mut op = op(OpKind::Get, 0, None, (at_ms, at_ms + 1));
        op.read = vec![value];
        op
    }

    fn verdict(ops: Vec<HistoryOp>, clock_error_ms: u64) -> Verdict {
        let history = History {
            ops,
            commands: Vec::new(),
            scans: Vec::new(),
        };
        check(&history, clock_error_ms)
    }

    #[test]
    fn a_value_read_within_its_bound_passes_and_past_it_fails() {
        let px = Some(ExpiresAt::AfterMillis(100));
        // Written by 10 ms, 100 ms to live, 50 ms clock error: readable until 10 + 100 + 2*50.
        let within = vec![op(OpKind::Put, 7, px, (0, 10)), read(7, 200)];
        assert_eq!(verdict(within, 50).word(), "pass");
        let past = vec![op(OpKind::Put, 7, px, (0, 10)), read(7, 300)];
        assert_eq!(verdict(past, 50).word(), "fail");
        let at = ExpiresAt::AtMicros(epoch_micros() + 100_000);
        let past_at = vec![op(OpKind::Put, 7, Some(at), (0, 10)), read(7, 160)];
        assert_eq!(verdict(past_at, 50).word(), "fail");
        // A write-back of the same value without an expiry (PERSIST) keeps it readable.
        let persisted = vec![
            op(OpKind::Put, 7, px, (0, 10)),
            op(OpKind::Put, 7, None, (20, 30)),
            read(7, 300),
        ];
        assert_eq!(verdict(persisted, 50).word(), "pass");
    }

    #[test]
    fn a_value_back_after_a_certainly_later_delete_fails() {
        let gone = vec![
            op(OpKind::Put, 7, None, (0, 10)),
            op(OpKind::Delete, 0, None, (200, 210)),
            read(7, 300),
        ];
        assert_eq!(verdict(gone, 50).word(), "fail");
        // A delete that may have stamped below the write (within 2 S) proves nothing.
        let close = vec![
            op(OpKind::Put, 7, None, (0, 10)),
            op(OpKind::Delete, 0, None, (50, 60)),
            read(7, 300),
        ];
        assert_eq!(verdict(close, 50).word(), "pass");
    }
}
