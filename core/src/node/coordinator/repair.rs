//! Read repair: after a read, bring the replicas that answered with something older (or nothing)
//! up to the merged record.
//!
//! It is best effort on purpose, and its own file so that stays visible: it is fire and forget
//! (merging is idempotent, so a copy that lands twice or late is harmless), it may leave replicas
//! out, and it never delays the client's answer; anti-entropy is what guarantees convergence.

use super::{Coordinator, ReadOperation};
use crate::buggify;
use crate::id::{NodeId, OperationId};
use crate::message::Message;
use crate::node::context::Context;
use crate::node::durability::AfterPersist;
use crate::storage::Storage;
use rand::Rng;

impl Coordinator {
    /// Sends the merged record to every replica that answered with something older or nothing.
    /// Fire and forget: merging is idempotent, and anti-entropy covers what this misses.
    pub(super) fn read_repair<S: Storage>(&mut self, ctx: &mut Context<S>, read: ReadOperation) {
        let Some(merged) = read.merged else { return };
        let mut stale: Vec<NodeId> = read
            .records
            .iter()
            .filter(|(_, record)| record.as_ref() != Some(&merged))
            .map(|&(node, _)| node)
            .collect();
        if stale.len() > 1 && buggify!(ctx.faults, &mut ctx.rng, "coordinator/read-repair-targets")
        {
            // Repair fewer replicas, in another order: read repair is best effort, and
            // anti-entropy must bring the ones left out up to date on its own.
            stale.reverse();
            let keep = ctx.rng.gen_range(1..stale.len());
            stale.truncate(keep);
        }
        for node in &stale {
            ctx.stats.read_repairs += 1;
            if *node == ctx.id {
                let _ = ctx.apply(read.key.clone(), &merged, AfterPersist::Nothing);
            } else {
                let message = Message::Write {
                    op: OperationId(0),
                    key: read.key.clone(),
                    record: merged.clone(),
                };
                ctx.send(*node, message);
            }
        }
    }
}
