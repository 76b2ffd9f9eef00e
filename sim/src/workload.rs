//! The client workload: which operation, which key, which value.

use crate::history::OpKind;
use crate::scenario::{KeyDistribution, Scenario};
use bytes::Bytes;
use rand::Rng;
use ringkv_core::ConflictMode;

/// A client command the workload issues with `interface = "commands"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// `GET key`.
    Get,
    /// `SET key value`.
    Set,
    /// `DEL key`.
    Del,
    /// `KV.GET key`.
    KvGet,
    /// `KV.PUT key value [CONTEXT ctx]`, with the context of the client's last `KV.GET`.
    KvPut,
    /// `KV.DEL key [CONTEXT ctx]`, with the context of the client's last `KV.GET`.
    KvDel,
    /// `SET key value PX ttl`.
    SetPx,
    /// `SET key value PXAT now+ttl` (the client's `now` is true time).
    SetPxAt,
    /// `PEXPIRE key ttl`.
    PExpire,
    /// `PERSIST key`.
    Persist,
    /// `PTTL key`.
    PTtl,
}

/// Chooses operations for clients.
#[derive(Clone, Debug)]
pub struct Workload {
    keys: Vec<Bytes>,
    /// Cumulative probabilities for zipf; empty for uniform.
    zipf_cdf: Vec<f64>,
    read_fraction: f64,
    delete_fraction: f64,
    value_bytes: (usize, usize),
    /// Fraction of puts whose value is past the cluster's `value_bytes_max`.
    oversized_fraction: f64,
    /// The cluster's value limit (core's `value_bytes_max`).
    value_bytes_max: usize,
    next_value_id: u64,
    /// Clients run commands through core's command machines (`interface = "commands"`).
    commands: bool,
    kv_fraction: f64,
    cas_fraction: f64,
    conflict: ConflictMode,
    /// Writes are increments by a delta in this inclusive range (`workload.counters`).
    counter_delta: Option<(i64, i64)>,
    ttl_fraction: f64,
    ttl_ms: (u64, u64),
}

impl Workload {
    /// The workload of a scenario.
    pub fn new(scenario: &Scenario) -> Self {
        let w = &scenario.workload;
        let keys = (0..w.keys)
            .map(|i| Bytes::from(format!("key{i:07}")))
            .collect();
        let zipf_cdf = match scenario.key_distribution() {
            KeyDistribution::Uniform => Vec::new(),
            KeyDistribution::Zipf(s) => {
                let weights: Vec<f64> = (1..=w.keys).map(|k| 1.0 / f64::from(k).powf(s)).collect();
                let total: f64 = weights.iter().sum();
                let mut acc = 0.0;
                weights
                    .iter()
                    .map(|x| {
                        acc += x / total;
                        acc
                    })
                    .collect()
            }
        };
        Workload {
            keys,
            zipf_cdf,
            read_fraction: w.read_fraction,
            delete_fraction: w.delete_fraction,
            value_bytes: (w.value_bytes[0], w.value_bytes[1]),
            oversized_fraction: w.oversized_fraction,
            value_bytes_max: scenario.cluster.config.value_bytes_max,
            next_value_id: 1,
            commands: w.interface == "commands",
            kv_fraction: w.kv_fraction,
            cas_fraction: w.cas_fraction,
            conflict: scenario.cluster.config.conflict,
            counter_delta: match w.counter_delta[..] {
                [low, high] if w.counters => Some((low, high)),
                _ => None,
            },
            ttl_fraction: w.ttl_fraction,
            ttl_ms: (
                w.ttl_ms.first().copied().unwrap_or(0),
                w.ttl_ms.get(1).copied().unwrap_or(0),
            ),
        }
    }

    /// The bytes of key `index`.
    pub fn key(&self, index: u32) -> &Bytes {
        &self.keys[index as usize]
    }

    /// The index of `key` in the key set, if it is one of the workload's keys.
    pub fn index_of(&self, key: &[u8]) -> Option<u32> {
        // Keys are zero-padded, so the set is sorted.
        let index = self.keys.binary_search_by(|k| k.as_ref().cmp(key)).ok()?;
        u32::try_from(index).ok()
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Draws a key index.
    pub fn draw_key(&self, rng: &mut impl Rng) -> u32 {
        let index = if self.zipf_cdf.is_empty() {
            rng.gen_range(0..self.keys.len())
        } else {
            let x: f64 = rng.gen();
            self.zipf_cdf
                .partition_point(|&c| c < x)
                .min(self.keys.len() - 1)
        };
        u32::try_from(index).unwrap_or(0)
    }

    /// Draws an operation kind.
    pub fn draw_kind(&self, rng: &mut impl Rng) -> OpKind {
        if rng.gen_bool(self.read_fraction) {
            OpKind::Get
        } else if self.counter_delta.is_some() {
            OpKind::Increment
        } else if rng.gen_bool(self.delete_fraction) {
            OpKind::Delete
        } else {
            OpKind::Put
        }
    }

    /// An increment's delta (never 0: an increment that adds nothing proves nothing).
    pub fn draw_delta(&self, rng: &mut impl Rng) -> i64 {
        let (low, high) = self.counter_delta.unwrap_or((1, 1));
        loop {
            let delta = rng.gen_range(low..=high);
            if delta != 0 {
                return delta;
            }
        }
    }

    /// Whether a put becomes a compare-and-set (`workload.cas_fraction`); draws nothing from
    /// the seed when that fraction is 0, so other scenarios' runs are unchanged.
    pub fn draw_cas(&self, rng: &mut impl Rng) -> bool {
        self.cas_fraction > 0.0 && rng.gen_bool(self.cas_fraction)
    }

    /// True if clients issue commands through core's command machines rather than requests.
    pub fn commands(&self) -> bool {
        self.commands
    }

    /// The cluster's conflict mode, which gives commands their meaning.
    pub fn conflict(&self) -> ConflictMode {
        self.conflict
    }

    /// Draws a command kind: reads at `read_fraction`, deletes at `delete_fraction` of the
    /// writes, and the explicit `KV.*` form at `kv_fraction` of each.
    pub fn draw_command(&self, rng: &mut impl Rng) -> CommandKind {
        let kv = |rng: &mut _| Rng::gen_bool(rng, self.kv_fraction);
        // Nothing extra is drawn when `ttl_fraction` is 0, so other scenarios keep their seeds.
        let ttl = |rng: &mut _| self.ttl_fraction > 0.0 && Rng::gen_bool(rng, self.ttl_fraction);
        if rng.gen_bool(self.read_fraction) {
            if ttl(rng) {
                return CommandKind::PTtl;
            }
            if kv(rng) {
                CommandKind::KvGet
            } else {
                CommandKind::Get
            }
        } else if ttl(rng) {
            match rng.gen_range(0..4) {
                0 => CommandKind::SetPx,
                1 => CommandKind::SetPxAt,
                2 => CommandKind::PExpire,
                _ => CommandKind::Persist,
            }
        } else if rng.gen_bool(self.delete_fraction) {
            if kv(rng) {
                CommandKind::KvDel
            } else {
                CommandKind::Del
            }
        } else if kv(rng) {
            CommandKind::KvPut
        } else {
            CommandKind::Set
        }
    }

    /// A time to live for a TTL command, milliseconds.
    pub fn draw_ttl_ms(&self, rng: &mut impl Rng) -> u64 {
        rng.gen_range(self.ttl_ms.0..=self.ttl_ms.1)
    }

    /// A fresh value: its first 8 bytes are a unique id (little-endian), the rest filler. A
    /// fraction (`oversized_fraction`) is 1 to 64 bytes past the cluster's value limit; nothing
    /// extra is drawn from the seed when that fraction is 0.
    pub fn draw_value(&mut self, rng: &mut impl Rng) -> (u64, Bytes) {
        let id = self.next_value_id;
        self.next_value_id += 1;
        let oversized = self.oversized_fraction > 0.0 && rng.gen_bool(self.oversized_fraction);
        let len = if oversized {
            self.value_bytes_max.saturating_add(rng.gen_range(1..=64))
        } else {
            rng.gen_range(self.value_bytes.0..=self.value_bytes.1)
        };
        let mut bytes = vec![0u8; len.max(8)];
        bytes[..8].copy_from_slice(&id.to_le_bytes());
        (id, Bytes::from(bytes))
    }
}

/// The unique id a simulated value carries (0 if it is too short to carry one).
pub fn value_id(value: &[u8]) -> u64 {
    value
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}
