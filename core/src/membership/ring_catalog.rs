//! Ring states shared by the membership machines of one process.
//!
//! Every node adopts every ring version, and adopting one costs far more than the gossip that
//! brings it: the ring is replayed (token allocation for a join), and then each mechanism lists
//! the replicas of every range of it. A simulator runs hundreds of nodes in one process; built
//! separately, 100 nodes place the same 6,400 ranges 100 times, and that, not gossip, was most of
//! `gossip-100.toml`'s time. A catalog lets the nodes of a process hand each other the state the
//! first of them built; the state's ring shares its memo of preference lists and epoch with
//! every clone (`crate::ring`), so the second node to adopt a version reads the first's lists.
//!
//! It changes no outcome: a state is reused only for a log equal to the one it was built from,
//! building is a pure function of the log, and the reuser checks the state against its own
//! configuration's limits exactly as its own replay would (`RingState::check_limits`). A node
//! process (one node) keeps a catalog of its own, which simply remembers its latest rings.

use super::ring_log::{RingLog, RingLogError, RingState};
use super::MembershipConfig;
use std::sync::{Arc, Mutex, PoisonError};

/// Ring states remembered, newest first. A cluster converges on one version at a time, so a few
/// cover every version in flight; an older one is rebuilt if it ever comes back.
const STATES_KEPT: usize = 4;

/// A handle on the shared states; clones share them. See the module doc.
#[derive(Clone, Debug, Default)]
pub struct RingCatalog {
    states: Arc<Mutex<Vec<RingState>>>,
}

impl RingCatalog {
    /// A catalog nobody else shares yet.
    pub fn new() -> Self {
        RingCatalog::default()
    }

    /// The state `log` builds under `config`: one remembered for an equal log (checked against
    /// `config`'s limits), or `held.rebuild(log, config)`, then remembered.
    pub fn rebuild(
        &self,
        held: &RingState,
        log: RingLog,
        config: &MembershipConfig,
    ) -> Result<RingState, RingLogError> {
        if let Some(state) = self.find(&log) {
            state.check_limits(config)?;
            return Ok(state);
        }
        let state = held.rebuild(log, config)?;
        self.remember(&state);
        Ok(state)
    }

    /// Offers `state` (a change made here) to the other holders of this catalog.
    pub fn remember(&self, state: &RingState) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if states.iter().any(|kept| kept.log() == state.log()) {
            return;
        }
        states.insert(0, state.clone());
        states.truncate(STATES_KEPT);
    }

    fn find(&self, log: &RingLog) -> Option<RingState> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        states.iter().find(|kept| kept.log() == log).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::membership::RingChange;
    use crate::ring::{Member, NodeLocation};

    fn join(id: u32, rack: &str) -> RingChange {
        RingChange::Join(Member {
            id: NodeId(id),
            location: NodeLocation {
                datacenter: "dc1".into(),
                rack: rack.into(),
                weight: 1,
            },
        })
    }

    fn log(changes: Vec<RingChange>) -> RingLog {
        RingLog {
            vnodes_per_node: MembershipConfig::default().vnodes_per_node,
            changes,
        }
    }

    #[test]
    fn a_shared_state_equals_a_replay_and_shares_its_lists() {
        let config = MembershipConfig::default();
        let empty = RingState::empty(config.vnodes_per_node);
        let catalog = RingCatalog::new();
        let three = log(vec![join(1, "a"), join(2, "b"), join(3, "c")]);
        let first = catalog
            .rebuild(&empty, three.clone(), &config)
            .expect("the log builds");
        let first_list = first.ring().range_replicas(0, 2);
        let second = catalog
            .clone()
            .rebuild(&empty, three.clone(), &config)
            .expect("the log builds");
        let replayed = RingState::build(three, &config).expect("the log builds");
        assert_eq!(second, replayed);
        assert_eq!(second.ring().epoch(), replayed.ring().epoch());
        assert_eq!(second.ring().range_replicas(0, 2), first_list);
        assert_eq!(replayed.ring().range_replicas(0, 2), first_list);
    }

    #[test]
    fn a_shared_state_is_checked_against_the_reusers_limits() {
        let config = MembershipConfig::default();
        let empty = RingState::empty(config.vnodes_per_node);
        let catalog = RingCatalog::new();
        let long_rack = "r".repeat(config.location_name_bytes_max);
        let three = log(vec![join(1, &long_rack), join(2, "b"), join(3, "c")]);
        catalog
            .rebuild(&empty, three.clone(), &config)
            .expect("the log builds");
        let strict = MembershipConfig {
            location_name_bytes_max: config.location_name_bytes_max - 1,
            ..config.clone()
        };
        assert_eq!(
            catalog.rebuild(&empty, three.clone(), &strict),
            RingState::build(three, &strict)
        );
        assert!(matches!(
            catalog.rebuild(&empty, log(vec![join(1, "a")]), &strict),
            Ok(state) if state.ring().members().len() == 1
        ));
    }

    #[test]
    fn only_the_latest_states_are_kept() {
        let config = MembershipConfig::default();
        let empty = RingState::empty(config.vnodes_per_node);
        let catalog = RingCatalog::new();
        let logs: Vec<RingLog> = (1..=STATES_KEPT as u32 + 1)
            .map(|n| log((1..=n).map(|id| join(id, "a")).collect()))
            .collect();
        for log in &logs {
            catalog
                .rebuild(&empty, log.clone(), &config)
                .expect("the log builds");
            catalog
                .rebuild(&empty, log.clone(), &config)
                .expect("the log builds");
        }
        assert!(catalog.find(&logs[0]).is_none());
        assert!(logs[1..].iter().all(|log| catalog.find(log).is_some()));
        assert_eq!(
            catalog.states.lock().expect("not poisoned").len(),
            STATES_KEPT,
            "a log rebuilt twice is remembered once"
        );
    }
}
