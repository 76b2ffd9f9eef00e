//! Admission of inbound peer connections before they authenticate.
//!
//! Anyone who can reach the peer port can open connections, and a connection costs a slot until
//! its handshake ends. Silent connections used to hold all 256 slots for their 5 s handshake
//! timeout over and over, so a restarted member could not get back in (issue #17 item 3). So
//! connections that have not authenticated yet get their own small pool, a share per source
//! address, and a short deadline; and when the pool (or a source's share) is full, an older
//! unauthenticated connection is closed to make room for the new one: the oldest *silent* one
//! (a dialer speaks first, so a connection that has sent nothing is not a peer at work), or the
//! oldest of all if every one is speaking. A real peer sends its hello at once and finishes in a
//! round trip, so a flood of silent connections, even from the peer's own address, cannot hold
//! the door shut; it only keeps itself busy.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Unauthenticated inbound connections at once, all sources together.
pub const UNAUTHENTICATED_MAX: usize = 32;
/// Unauthenticated inbound connections at once from one source address.
pub const UNAUTHENTICATED_PER_SOURCE_MAX: usize = 8;
/// Time an inbound connection has to complete its handshake.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);

/// The unauthenticated connections, oldest first (ids increase).
#[derive(Default)]
pub struct Admission {
    state: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next_id: u64,
    /// Per connection id: its source, whether it has sent anything, and the way to close it.
    connections: BTreeMap<u64, Connection>,
}

struct Connection {
    source: IpAddr,
    speaking: bool,
    close: oneshot::Sender<()>,
}

/// An admitted unauthenticated connection: `evicted` resolves if it is closed to make room.
/// Dropping the ticket (handshake done or failed) frees its place.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    /// Resolves when this connection was chosen to make room for a newer one.
    pub evicted: oneshot::Receiver<()>,
}

impl Ticket {
    /// A handle that marks this connection as speaking.
    pub fn speaker(&self) -> Speaker {
        Speaker {
            admission: Arc::clone(&self.admission),
            id: self.id,
        }
    }
}

/// Marks one admitted connection as speaking (see [`Ticket::speaker`]).
pub struct Speaker {
    admission: Arc<Admission>,
    id: u64,
}

impl Speaker {
    /// The connection has sent its first bytes: it is evicted only after every silent one.
    pub fn mark(&self) {
        if let Ok(mut pending) = self.admission.state.lock() {
            if let Some(connection) = pending.connections.get_mut(&self.id) {
                connection.speaking = true;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.admission.state.lock() {
            pending.connections.remove(&self.id);
        }
    }
}

/// What admitting one connection did.
pub struct Admitted {
    /// The new connection's ticket.
    pub ticket: Ticket,
    /// Older connections closed to make room (0 or 1).
    pub evicted: usize,
}

impl Admission {
    /// Admits a connection from `source`, closing the oldest unauthenticated connection from
    /// that source if it is at its share, or else the oldest of all if the pool is full.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Admitted {
        let mut pending = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut evicted = 0;
        let from_source = pending
            .connections
            .values()
            .filter(|c| c.source == source)
            .count();
        let victim = if from_source >= UNAUTHENTICATED_PER_SOURCE_MAX {
            pending.victim(|c| c.source == source)
        } else if pending.connections.len() >= UNAUTHENTICATED_MAX {
            pending.victim(|_| true)
        } else {
            None
        };
        if let Some(id) = victim {
            if let Some(connection) = pending.connections.remove(&id) {
                let _ = connection.close.send(());
                evicted = 1;
            }
        }
        let id = pending.next_id;
        pending.next_id += 1;
        let (close, closed) = oneshot::channel();
        pending.connections.insert(
            id,
            Connection {
                source,
                speaking: false,
                close,
            },
        );
        Admitted {
            ticket: Ticket {
                admission: Arc::clone(self),
                id,
                evicted: closed,
            },
            evicted,
        }
    }

    /// Unauthenticated connections open now.
    pub fn pending(&self) -> usize {
        self.state
            .lock()
            .map_or(0, |pending| pending.connections.len())
    }
}

impl Pending {
    /// The connection to close among those `eligible`: the oldest silent one, else the oldest.
    fn victim(&self, eligible: impl Fn(&Connection) -> bool) -> Option<u64> {
        let oldest_silent = self
            .connections
            .iter()
            .find(|(_, c)| eligible(c) && !c.speaking);
        oldest_silent
            .or_else(|| self.connections.iter().find(|(_, c)| eligible(c)))
            .map(|(id, _)| *id)
    }
}

/// A warning that may repeat at a high rate (one per refused connection): logged at most once
/// per `interval`, with the number of repeats it stands for, so a flood cannot fill the disk
/// with log lines (issue #17 item 3).
pub struct Throttle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle that lets one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(repeats)` if a line may be logged now (`repeats` = occurrences since the last line,
    /// this one included); `None` if this occurrence is only counted.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.1 += 1;
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => None,
            _ => {
                let repeats = state.1;
                *state = (Some(now), 0);
                Some(repeats)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_full_pool_makes_room_by_closing_the_oldest() {
        let admission = Arc::new(Admission::default());
        let mut tickets: Vec<Ticket> = (0..UNAUTHENTICATED_MAX)
            .map(|i| admission.admit(ip(u8::try_from(i % 200).unwrap())).ticket)
            .collect();
        assert_eq!(admission.pending(), UNAUTHENTICATED_MAX);
        let newest = admission.admit(ip(250));
        assert_eq!(newest.evicted, 1);
        assert_eq!(admission.pending(), UNAUTHENTICATED_MAX);
        assert!(
            tickets[0].evicted.try_recv().is_ok(),
            "the oldest was closed"
        );
        assert!(tickets[1].evicted.try_recv().is_err(), "the others stay");
        drop(tickets);
        assert_eq!(admission.pending(), 1);
    }

    #[test]
    fn a_speaking_connection_outlives_silent_ones() {
        let admission = Arc::new(Admission::default());
        let mut peer = admission.admit(ip(1)).ticket;
        peer.speaker().mark();
        // A flood of silent connections from the peer's own address, far past every bound.
        let flood: Vec<Ticket> = (0..10 * UNAUTHENTICATED_MAX)
            .map(|_| admission.admit(ip(1)).ticket)
            .collect();
        assert!(
            peer.evicted.try_recv().is_err(),
            "the speaking peer is never chosen"
        );
        assert!(admission.pending() <= UNAUTHENTICATED_PER_SOURCE_MAX);
        drop(flood);
    }

    #[test]
    fn one_source_is_held_to_its_share() {
        let admission = Arc::new(Admission::default());
        let mut flood: Vec<Ticket> = (0..UNAUTHENTICATED_PER_SOURCE_MAX)
            .map(|_| admission.admit(ip(1)).ticket)
            .collect();
        let other = admission.admit(ip(2));
        assert_eq!(other.evicted, 0, "another source has room");
        let more = admission.admit(ip(1));
        assert_eq!(more.evicted, 1);
        assert!(flood[0].evicted.try_recv().is_ok());
        assert_eq!(admission.pending(), UNAUTHENTICATED_PER_SOURCE_MAX + 1);
    }

    #[test]
    fn a_repeated_warning_is_logged_once_per_interval_with_its_count() {
        let throttle = Throttle::new(Duration::from_secs(1));
        let start = tokio::time::Instant::now().into_std();
        assert_eq!(throttle.allow(start), Some(1));
        for _ in 0..99 {
            assert_eq!(throttle.allow(start), None);
        }
        assert_eq!(throttle.allow(start + Duration::from_secs(1)), Some(100));
    }
}
