//! A keyed client request, before anything is sent: the limits it must meet, its level resolved
//! into replicas, a quorum and a deadline (a [`Plan`]), and the path it takes from there (a plain
//! or linearizable read or write, or a conditional write's Paxos round).
//!
//! Everything here is decided before any replica is asked, so each refusal it gives has had no
//! effect and is always safe to retry; the read and write paths start from a finished plan.

use super::read::{ReadPurpose, ReadStart};
use super::{Coordinator, Neighbours, PaxosStart};
use crate::client::{ClientRequest, Consistency, RequestError};
use crate::id::{NodeId, RequestId};
use crate::membership::Membership;
use crate::node::context::Context;
use crate::quorum::Group;
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::ConflictMode;

/// A keyed request's level, resolved: the answers it needs, from which replicas, until when.
#[derive(Debug)]
pub(super) struct Plan {
    /// The level as replies state it (for datacenter levels, the sum of the groups' quorums).
    pub(super) needed: u8,
    /// The datacenter groups of `local_quorum` / `each_quorum`.
    pub(super) groups: Option<Vec<Group>>,
    pub(super) replicas: Vec<NodeId>,
    pub(super) linearizable: bool,
    pub(super) deadline: Instant,
}

impl Coordinator {
    /// Resolves a keyed request's level: the answers it needs (per datacenter group for the
    /// datacenter levels), from which replicas, until when; or why it is refused before any
    /// effect (an impossible level, a level the conflict mode cannot give, replicas judged down).
    pub(super) fn plan<S: Storage>(
        &self,
        ctx: &Context<S>,
        membership: Option<&Membership>,
        now: Now,
        body: &ClientRequest,
    ) -> Result<Plan, RequestError> {
        let cluster = &ctx.config.cluster;
        let (level, default) = match body {
            // Scans are routed before this; they read, so they would default to `r`.
            ClientRequest::Get { consistency, .. }
            | ClientRequest::GetExpiring { consistency, .. }
            | ClientRequest::Scan { consistency, .. } => (*consistency, cluster.r),
            ClientRequest::CountKeys => (None, cluster.r),
            ClientRequest::Put { consistency, .. }
            | ClientRequest::Delete { consistency, .. }
            | ClientRequest::PutExpiring { consistency, .. }
            | ClientRequest::Increment { consistency, .. } => (*consistency, cluster.w),
            // Conditional writes take the linearizable path whatever the level (as Cassandra's
            // IF NOT EXISTS always uses Paxos).
            ClientRequest::Conditional { .. } => (Some(Consistency::Linearizable), cluster.w),
        };
        let n = cluster.n;
        let level = level.or(cluster.consistency);
        let mut needed = level
            .map_or(Some(default), |l| l.required(n))
            .ok_or(RequestError::InvalidConsistency)?;
        let expiring = matches!(
            body,
            ClientRequest::PutExpiring { .. } | ClientRequest::GetExpiring { .. }
        );
        if expiring && cluster.conflict != ConflictMode::Lww {
            return Err(RequestError::ExpiryNeedsLww);
        }
        let linearizable = level == Some(Consistency::Linearizable);
        if linearizable && cluster.conflict != ConflictMode::Lww {
            return Err(RequestError::LinearizableNeedsLww);
        }
        let replicas = ctx.ring.preference_list(body.key(), usize::from(n));
        let mut groups = None;
        if let Some(Consistency::LocalQuorum | Consistency::EachQuorum) = level {
            let each = level == Some(Consistency::EachQuorum);
            let found = datacenter_groups(&ctx.ring, &replicas, ctx.id, each);
            if found.is_empty() {
                return Err(RequestError::InvalidConsistency);
            }
            needed = needs(found.iter().map(|g| g.needed).sum());
            groups = Some(found);
        }
        if replicas.len() < usize::from(needed) {
            return Err(if replicas.is_empty() {
                RequestError::NoReplicas
            } else {
                RequestError::InvalidConsistency
            });
        }
        let down = self.replicas_down(
            ctx,
            membership,
            body,
            (linearizable, &replicas),
            needed,
            groups.as_deref(),
        );
        if let Some(short) = down {
            return Err(short);
        }
        let deadline = now.monotonic.saturating_add(cluster.request_timeout());
        Ok(Plan {
            needed,
            groups,
            replicas,
            linearizable,
            deadline,
        })
    }

    /// The linearizable level: conditional writes are Paxos rounds (see `paxos`, returned to
    /// the node to start); plain reads and writes at this level stay ABD. Mixing plain and
    /// conditional writes on one key is not linearizable (as in Cassandra, mixing LWT and
    /// non-LWT writes).
    pub(super) fn start_linearizable<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        request: RequestId,
        body: ClientRequest,
        plan: Plan,
    ) -> Option<PaxosStart> {
        let purpose = match body {
            // Scans and increments are routed elsewhere; never reached here.
            ClientRequest::Get { .. }
            | ClientRequest::GetExpiring { .. }
            | ClientRequest::Scan { .. }
            | ClientRequest::CountKeys
            | ClientRequest::Increment { .. } => ReadPurpose::LinearizableRead,
            ClientRequest::Put { ref value, .. } => ReadPurpose::LinearizableWrite {
                value: Some(value.clone()),
                expires: None,
            },
            ClientRequest::PutExpiring {
                ref value, expires, ..
            } => ReadPurpose::LinearizableWrite {
                value: Some(value.clone()),
                expires: Some(expires),
            },
            ClientRequest::Delete { .. } => ReadPurpose::LinearizableWrite {
                value: None,
                expires: None,
            },
            ClientRequest::Conditional {
                ref condition,
                ref value,
                ..
            } => {
                let intent = crate::node::paxos::Intent::Conditional {
                    condition: condition.clone(),
                    value: value.clone(),
                };
                return Some(PaxosStart {
                    request,
                    key: body.key().clone(),
                    intent,
                    needed: plan.needed,
                    replicas: plan.replicas,
                    deadline: plan.deadline,
                });
            }
        };
        let key = body.key().clone();
        nb.handover.activate(ctx);
        let epoch = Some(nb.handover.epoch());
        let with_expiry = matches!(body, ClientRequest::GetExpiring { .. });
        let read = ReadStart {
            request,
            purpose,
            key,
            epoch,
            with_expiry,
        };
        self.start_read(ctx, nb, read, plan);
        None
    }

    /// Plain levels: reads and writes by quorum (sloppy where configured).
    pub(super) fn start_plain<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        request: RequestId,
        body: ClientRequest,
        plan: Plan,
    ) {
        let (key, value, context) = match body {
            ClientRequest::Get { key, .. } => {
                let read = ReadStart {
                    request,
                    purpose: ReadPurpose::Plain,
                    key,
                    epoch: None,
                    with_expiry: false,
                };
                return self.start_read(ctx, nb, read, plan);
            }
            ClientRequest::GetExpiring { key, .. } => {
                let read = ReadStart {
                    request,
                    purpose: ReadPurpose::Plain,
                    key,
                    epoch: None,
                    with_expiry: true,
                };
                return self.start_read(ctx, nb, read, plan);
            }
            ClientRequest::Put {
                key,
                value,
                context,
                ..
            } => (key, (Some(value), None), context),
            ClientRequest::PutExpiring {
                key,
                value,
                expires,
                ..
            } => (key, (Some(value), Some(expires)), None),
            ClientRequest::Delete { key, context, .. } => (key, (None, None), context),
            // Routed to `scan`, dispatched at the top, or always linearizable.
            ClientRequest::Scan { .. }
            | ClientRequest::CountKeys
            | ClientRequest::Increment { .. }
            | ClientRequest::Conditional { .. } => return,
        };
        self.start_write(ctx, nb, now, request, key, value, context, plan);
    }

    /// Limits checked before a request has any effect.
    pub(super) fn admit<S: Storage>(
        &self,
        ctx: &Context<S>,
        body: &ClientRequest,
    ) -> Result<(), RequestError> {
        let cluster = &ctx.config.cluster;
        let key = body.key();
        if key.is_empty() || key.len() > cluster.key_bytes_max {
            return Err(RequestError::KeyTooLarge {
                bytes: key.len(),
                max: cluster.key_bytes_max,
            });
        }
        if key.starts_with(crate::node::hints::RESERVED_PREFIX) {
            return Err(RequestError::ReservedKey);
        }
        let value = match body {
            ClientRequest::Put { value, .. } | ClientRequest::PutExpiring { value, .. } => {
                Some(value)
            }
            ClientRequest::Conditional { value, .. } => value.as_ref(),
            _ => None,
        };
        if let Some(value) = value {
            if value.len() > cluster.value_bytes_max {
                return Err(RequestError::ValueTooLarge {
                    bytes: value.len(),
                    max: cluster.value_bytes_max,
                });
            }
        }
        if self.in_flight.len() >= cluster.requests_in_flight_max {
            return Err(RequestError::Busy);
        }
        Ok(())
    }
}

/// For `local_quorum` (only the coordinator's datacenter) or `each_quorum` (every datacenter):
/// the replicas of each counted datacenter with the majority needed of them. A pure policy.
pub(in crate::node) fn datacenter_groups(
    ring: &crate::ring::Ring,
    replicas: &[NodeId],
    me: NodeId,
    each: bool,
) -> Vec<Group> {
    let mut by_datacenter: std::collections::BTreeMap<&str, Vec<NodeId>> =
        std::collections::BTreeMap::new();
    for &replica in replicas {
        if let Some(dc) = ring.datacenter_of(replica) {
            by_datacenter.entry(dc).or_default().push(replica);
        }
    }
    let mine = ring.datacenter_of(me);
    by_datacenter
        .into_iter()
        .filter(|(dc, _)| each || Some(*dc) == mine)
        .map(|(_, members)| {
            let needed = members.len() / 2 + 1;
            Group { members, needed }
        })
        .collect()
}

/// A count as the `u8` a level is expressed in.
fn needs(count: usize) -> u8 {
    u8::try_from(count).unwrap_or(u8::MAX)
}
