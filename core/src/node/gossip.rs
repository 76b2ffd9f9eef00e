//! The node's side of gossip membership: functions over the shared context and the node's
//! [`Membership`] machine that feed it gossip messages and timeouts, carry its outputs over to the
//! node's, persist its state and mirror its schedule in the timer table. Adopting the rings it
//! converges on touches every mechanism, so that step is the node's (`Node::adopt_ring`, between
//! `drain` calls). Other mechanisms route around members it judges `Down` through `is_down`.
//!
//! Why the membership state lives in the node's own storage (under the reserved prefix, never
//! replicated): a restarted node must come back with a higher incarnation than any claim it
//! gossiped before, and with the newest ring it knew, without each driver (simulator, tokio node)
//! having to persist them separately. A lost update is harmless: the incarnation is refuted upward
//! by gossip, and a stale ring is replaced by the newer one its peers gossip.

use super::context::Context;
use super::timers::Timer;
use super::NodeEvent;
use crate::codec;
use crate::config::ConfigError;
use crate::id::NodeId;
use crate::membership::{
    GossipMessage, MemberStatus, Membership, MembershipConfig, MembershipError, MembershipEvent,
    MembershipOutput, RingLog, RingState, RingVersion,
};
use crate::message::Message;
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::{LwwRecord, LwwVersion, Record};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a node keeps its own incarnation and ring log (reserved: never replicated or served).
pub const MEMBERSHIP_KEY: &[u8] = b"\xff\xffmeta/membership";

/// What survives a restart of the membership machine.
#[derive(Serialize, Deserialize)]
struct PersistedMembership {
    incarnation: u64,
    ring: RingLog,
}

/// Why an operator's membership command was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminError {
    /// The node was started without gossip membership (its ring is static).
    NoMembership,
    /// The membership machine refused the change.
    Membership(MembershipError),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::NoMembership => write!(f, "this node runs without gossip membership"),
            AdminError::Membership(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AdminError {}

/// Whether gossip judges `node` down (never, without gossip): for mechanisms that hold the
/// membership by reference rather than the whole node.
pub(super) fn is_down(membership: Option<&Membership>, node: NodeId) -> bool {
    membership.and_then(|m| m.status(node)) == Some(MemberStatus::Down)
}

/// Builds the membership machine at start. `seed_ring` is the cluster's initial ring log (or an
/// empty log for a node that learns it from `membership.seeds`); a newer log persisted by an
/// earlier run in `storage` wins over it. The incarnation is one above the persisted one. Returns
/// the machine and whether its ring came from storage rather than the seed.
pub(super) fn start_machine<S: Storage>(
    id: NodeId,
    membership: MembershipConfig,
    seed_ring: SeedRing,
    storage: &mut S,
    now: Now,
) -> Result<(Membership, bool), ConfigError> {
    let as_config_error = |e: MembershipError| ConfigError {
        field: "membership",
        reason: e.to_string(),
    };
    let persisted = load_persisted(storage);
    let seed_version = seed_ring.version();
    let incarnation = persisted
        .as_ref()
        .map_or(1, |p| p.incarnation.saturating_add(1));
    let at = now.monotonic;
    let from_seed = |membership: MembershipConfig, seed_ring: SeedRing| match seed_ring {
        SeedRing::Log(log) => Membership::new(membership, id, incarnation, log, at),
        SeedRing::Built(state) => {
            Membership::with_ring_state(membership, id, incarnation, *state, at)
        }
    };
    // A newer persisted ring wins; one that no longer builds (another vnode setting) is
    // ignored. Each candidate log is built once, by the machine itself.
    let machine = match persisted.filter(|p| p.ring.version() > seed_version) {
        Some(p) => Membership::new(membership.clone(), id, incarnation, p.ring, at)
            .or_else(|_| from_seed(membership, seed_ring)),
        None => from_seed(membership, seed_ring),
    }
    .map_err(as_config_error)?;
    let restored = machine.ring_version() != seed_version;
    Ok((machine, restored))
}

/// The machine joined the node: it shares the node's fault points, its state is staged and its
/// schedule enters the timer table.
pub(super) fn started<S: Storage>(ctx: &mut Context<S>, machine: &mut Membership) {
    machine.set_fault_points(ctx.faults);
    persist(ctx, Some(machine));
    ctx.timers.set(Timer::Gossip, machine.poll_timeout());
}

/// A gossip message from `from` (counted as stale by a node without membership). The caller
/// drains the machine next (`drain`).
pub(super) fn handle_message<S>(
    ctx: &mut Context<S>,
    membership: Option<&mut Membership>,
    now: Now,
    from: NodeId,
    message: GossipMessage,
) {
    match membership {
        Some(machine) => machine.handle_message(now.monotonic, from, message),
        None => ctx.stats.stale_replies += 1,
    }
}

/// Runs failure detection and a gossip round when membership's timer is due. The caller drains
/// the machine next (`drain`).
pub(super) fn handle_timeout<S>(
    ctx: &mut Context<S>,
    membership: Option<&mut Membership>,
    now: Now,
) {
    if let Some(machine) = membership {
        if ctx.timers.due(Timer::Gossip, now.monotonic) {
            machine.handle_timeout(now.monotonic, &mut ctx.rng);
        }
    }
}

/// An operator's ring change, applied to the machine. The caller drains the machine next.
pub(super) fn admin(
    membership: Option<&mut Membership>,
    now: Now,
    change: impl FnOnce(&mut Membership, Instant) -> Result<RingVersion, MembershipError>,
) -> Result<RingVersion, AdminError> {
    let machine = membership.ok_or(AdminError::NoMembership)?;
    change(machine, now.monotonic).map_err(AdminError::Membership)
}

/// Carries the machine's outputs over to the node's, in order, until its queue is empty (`None`:
/// its schedule is copied into the timer table) or a ring change comes up (`Some`): adopting a
/// ring touches every mechanism, so the node adopts it (`Node::adopt_ring`), reports it with
/// `ring_adopted`, and calls this again for the outputs after it.
pub(super) fn drain<S: Storage>(
    ctx: &mut Context<S>,
    membership: Option<&mut Membership>,
    now: Now,
) -> Option<RingVersion> {
    let machine = membership?;
    while let Some(output) = machine.poll_output() {
        match output {
            MembershipOutput::Send { to, message } => ctx.send(to, Message::Gossip(message)),
            MembershipOutput::Event(event) => {
                if let Some(version) = on_event(ctx, machine, now, event) {
                    return Some(version);
                }
            }
        }
    }
    ctx.timers.set(Timer::Gossip, machine.poll_timeout());
    None
}

/// The node adopted the ring of `version`: it is staged and reported.
pub(super) fn ring_adopted<S: Storage>(
    ctx: &mut Context<S>,
    membership: Option<&Membership>,
    version: RingVersion,
) {
    persist(ctx, membership);
    ctx.event(NodeEvent::RingChanged {
        changes: version.changes,
        fingerprint: version.fingerprint,
    });
}

/// Carries out one event of the machine; a ring change is returned for the node to adopt.
fn on_event<S: Storage>(
    ctx: &mut Context<S>,
    machine: &Membership,
    now: Now,
    event: MembershipEvent,
) -> Option<RingVersion> {
    match event {
        MembershipEvent::RingChanged { version } => return Some(version),
        MembershipEvent::IncarnationChanged { .. } => persist(ctx, Some(machine)),
        MembershipEvent::StatusChanged { node, from, to } => {
            if to == MemberStatus::Alive && from == MemberStatus::Down {
                // The owner is back: replay its hints now rather than at the next round.
                ctx.timers.arm(Timer::HintReplay, now.monotonic);
            }
            ctx.event(NodeEvent::MemberStatus { node, from, to });
        }
        MembershipEvent::RingChangeDiscarded { change } => {
            ctx.event(NodeEvent::RingChangeDiscarded {
                node: change.node(),
            });
        }
        MembershipEvent::Discovered { node, status } => {
            ctx.event(NodeEvent::MemberDiscovered { node, status });
        }
    }
    None
}

/// Stages the incarnation and ring log; they become durable with the next persist.
fn persist<S: Storage>(ctx: &mut Context<S>, membership: Option<&Membership>) {
    let Some(machine) = membership else {
        return;
    };
    let state = PersistedMembership {
        incarnation: machine.incarnation(),
        ring: machine.ring_state().log().clone(),
    };
    let record = Record::Lww(LwwRecord {
        version: LwwVersion {
            timestamp_micros: state.incarnation,
            node: ctx.id,
            nonce: 0,
        },
        value: Some(Bytes::from(codec::encode_value(&state))),
        expires_at_micros: None,
    });
    // A failure is reported by `stage` (and poisons nothing): gossip repairs both fields.
    let _ = ctx.stage(Bytes::from_static(MEMBERSHIP_KEY), record);
}

/// Internal consistency of the node's side: the machine's own invariants, and the timer table
/// holding exactly the machine's schedule (every input to the machine is followed by a drain).
/// `checked_at`: the machine's [`Membership::inputs`] when its own invariants were last found
/// to hold (`None`: never); they are checked again only if it took an input since.
pub(super) fn check_invariants<S>(
    ctx: &Context<S>,
    membership: Option<&Membership>,
    checked_at: Option<u64>,
) {
    let schedule = membership.and_then(Membership::poll_timeout);
    assert_eq!(
        ctx.timers.get(Timer::Gossip),
        schedule,
        "the gossip timer is membership's schedule"
    );
    if let Some(machine) = membership {
        if checked_at != Some(machine.inputs()) {
            machine.check_invariants();
        }
    }
}

/// The cluster's initial ring, as a log or already built.
pub(super) enum SeedRing {
    Log(RingLog),
    /// Boxed: a built ring is far larger than a log's handle.
    Built(Box<RingState>),
}

impl SeedRing {
    fn version(&self) -> RingVersion {
        match self {
            SeedRing::Log(log) => log.version(),
            SeedRing::Built(state) => state.version(),
        }
    }
}

/// The membership state of an earlier run, if it is there and decodes.
fn load_persisted<S: Storage>(storage: &mut S) -> Option<PersistedMembership> {
    match storage.get(MEMBERSHIP_KEY) {
        Ok(Some(Record::Lww(LwwRecord {
            value: Some(bytes), ..
        }))) => codec::decode_value(&bytes).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, NodeConfig};
    use crate::node::Output;
    use crate::ring::{Member, NodeLocation};
    use crate::storage::MemStorage;
    use crate::time::WallMicros;
    use std::time::Duration;

    fn location() -> NodeLocation {
        NodeLocation {
            datacenter: "dc0".into(),
            rack: "rack0".into(),
            weight: 1,
        }
    }

    /// The context of node 0 and its membership machine, alone in the ring; no node around them.
    fn start() -> (Context<MemStorage>, Membership) {
        let config = MembershipConfig {
            vnodes_per_node: 8,
            ..MembershipConfig::default()
        };
        let log = RingLog {
            vnodes_per_node: 8,
            changes: vec![crate::membership::RingChange::Join(Member {
                id: NodeId(0),
                location: location(),
            })],
        };
        let node = NodeConfig {
            id: NodeId(0),
            cluster: ClusterConfig {
                n: 1,
                ..ClusterConfig::default()
            },
            rng_seed: 1,
        };
        let (mut machine, restored) = start_machine(
            NodeId(0),
            config,
            SeedRing::Log(log),
            &mut MemStorage::new(),
            at(0),
        )
        .expect("valid");
        assert!(!restored, "nothing persisted: the seed ring");
        let mut ctx = Context::new(node, machine.ring().clone(), MemStorage::new());
        started(&mut ctx, &mut machine);
        (ctx, machine)
    }

    fn at(millis: u64) -> Now {
        Now {
            monotonic: Instant::ZERO.saturating_add(Duration::from_millis(millis)),
            wall: WallMicros(millis * 1_000),
        }
    }

    fn events(ctx: &mut Context<MemStorage>) -> Vec<NodeEvent> {
        ctx.outputs
            .drain(..)
            .filter_map(|output| match output {
                Output::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    /// A ring change stops the drain so the node can adopt the ring between the outputs before
    /// and after it; the timer table follows the machine's schedule after every drain.
    #[test]
    fn a_drain_hands_ring_changes_to_the_node_in_order_and_mirrors_the_schedule() {
        let (mut ctx, mut machine) = start();
        check_invariants(&ctx, Some(&machine), None);
        assert_eq!(ctx.timers.get(Timer::Gossip), Some(Instant::ZERO));
        let join = |m: &mut Membership, t| {
            let member = Member {
                id: NodeId(1),
                location: location(),
            };
            m.join(t, member)
        };
        let version = admin(Some(&mut machine), at(1), join).expect("a join");
        assert_eq!(drain(&mut ctx, Some(&mut machine), at(1)), Some(version));
        assert!(
            events(&mut ctx).is_empty(),
            "nothing after the ring change yet"
        );
        ring_adopted(&mut ctx, Some(&machine), version);
        assert_eq!(drain(&mut ctx, Some(&mut machine), at(1)), None);
        assert_eq!(
            events(&mut ctx),
            vec![
                NodeEvent::RingChanged {
                    changes: version.changes,
                    fingerprint: version.fingerprint,
                },
                NodeEvent::MemberDiscovered {
                    node: NodeId(1),
                    status: MemberStatus::Alive,
                },
            ]
        );
        check_invariants(&ctx, Some(&machine), None);

        // Due: a round probes the new member, and the timer moves on with the machine.
        handle_timeout(&mut ctx, Some(&mut machine), at(2));
        assert_eq!(drain(&mut ctx, Some(&mut machine), at(2)), None);
        let sent: Vec<NodeId> = ctx
            .outputs
            .drain(..)
            .filter_map(|output| match output {
                Output::Send {
                    to,
                    message: Message::Gossip(GossipMessage::Ping { .. }),
                } => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![NodeId(1)]);
        let next = ctx.timers.get(Timer::Gossip).expect("armed");
        assert!(next > at(2).monotonic, "the next round is ahead");
        check_invariants(&ctx, Some(&machine), None);
        // Not due: a timeout changes nothing.
        handle_timeout(&mut ctx, Some(&mut machine), at(3));
        assert_eq!(drain(&mut ctx, Some(&mut machine), at(3)), None);
        assert!(ctx.outputs.is_empty());
        assert_eq!(ctx.timers.get(Timer::Gossip), Some(next));
    }

    #[test]
    fn without_membership_gossip_is_stale_and_admin_is_refused() {
        let (mut ctx, _) = start();
        ctx.timers.disarm(Timer::Gossip);
        let message = GossipMessage::Addresses {
            entries: Vec::new(),
            answer_wanted: false,
        };
        handle_message(&mut ctx, None, at(1), NodeId(1), message);
        assert_eq!(ctx.stats.stale_replies, 1);
        assert_eq!(drain(&mut ctx, None, at(1)), None);
        let refused = admin(None, at(1), |m, t| m.leave(t, NodeId(1)));
        assert_eq!(refused, Err(AdminError::NoMembership));
        check_invariants(&ctx, None, None);
    }

    #[test]
    #[should_panic(expected = "the gossip timer is membership's schedule")]
    fn a_timer_out_of_step_with_the_machine_is_a_bug() {
        let (mut ctx, machine) = start();
        ctx.timers.arm(Timer::Gossip, at(50).monotonic);
        check_invariants(&ctx, Some(&machine), None);
    }
}
