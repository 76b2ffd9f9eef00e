//! The ring as `KV.RING` describes it, and the key → token hash that places a key on it.

use crate::resp::Value;
use std::collections::BTreeMap;

/// The token of `key`: the node's `ringkv_core::hash::hash_bytes` (FNV-1a over the bytes, then
/// the SplitMix64 finaliser over the hash xor the length). Re-implemented so the client does not
/// pull in the server's core; a test proves both agree.
pub fn token_of(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut x = h ^ key.len() as u64;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A replica as `KV.RING` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Its node id.
    pub node: u32,
    /// `host:port` to dial, if the node knew it.
    pub address: Option<String>,
}

/// One ring snapshot: ranges sorted by end token, each with its replicas in preference order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingMap {
    /// The ring version the node reported (joins and removals applied).
    pub version: i64,
    /// `(end token, replicas)`, sorted by end; a range owns `(previous end, end]`, the first
    /// one wrapping.
    ranges: Vec<(u64, Vec<Replica>)>,
}

impl RingMap {
    /// Parses a `KV.RING` reply. `fallback_host` replaces a wildcard host (`0.0.0.0`, `::`) a
    /// node advertises when it listens on every interface: the host the client reached the
    /// cluster by.
    pub fn parse(reply: &Value, fallback_host: &str) -> Result<RingMap, String> {
        let bad = |what: &str| format!("KV.RING reply: {what}");
        let top = reply.as_array().ok_or_else(|| bad("not an array"))?;
        let [version, ranges] = top else {
            return Err(bad("not [version, ranges]"));
        };
        let Value::Integer(version) = version else {
            return Err(bad("version is not an integer"));
        };
        let token = |v: &Value| -> Result<u64, String> {
            v.as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| bad("token is not a decimal u64"))
        };
        let mut parsed = Vec::new();
        for range in ranges
            .as_array()
            .ok_or_else(|| bad("ranges not an array"))?
        {
            let [_start, end, replicas] = range.as_array().unwrap_or_default() else {
                return Err(bad("range is not [start, end, replicas]"));
            };
            let mut list = Vec::new();
            for replica in replicas
                .as_array()
                .ok_or_else(|| bad("replicas not an array"))?
            {
                let [Value::Integer(node), host, port] = replica.as_array().unwrap_or_default()
                else {
                    return Err(bad("replica is not [id, host, port]"));
                };
                let node = u32::try_from(*node).map_err(|_| bad("node id out of range"))?;
                let address = match (host, port) {
                    (Value::Bulk(host), Value::Integer(port)) => {
                        let host = String::from_utf8_lossy(host);
                        let host = match host.as_ref() {
                            "0.0.0.0" | "::" => fallback_host.to_string(),
                            other => other.to_string(),
                        };
                        let port = u16::try_from(*port).map_err(|_| bad("port out of range"))?;
                        Some(if host.contains(':') {
                            format!("[{host}]:{port}")
                        } else {
                            format!("{host}:{port}")
                        })
                    }
                    _ => None,
                };
                list.push(Replica { node, address });
            }
            parsed.push((token(end)?, list));
        }
        if parsed.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(bad("ranges are not sorted by end token"));
        }
        Ok(RingMap {
            version: *version,
            ranges: parsed,
        })
    }

    /// True when the map has no range (the client then uses its seeds).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The replicas of `key` in preference order.
    pub fn replicas(&self, key: &[u8]) -> &[Replica] {
        self.replicas_for_token(token_of(key))
    }

    /// The replicas of the range holding `token`.
    pub fn replicas_for_token(&self, token: u64) -> &[Replica] {
        if self.ranges.is_empty() {
            return &[];
        }
        let index = self.ranges.partition_point(|(end, _)| *end < token);
        let (_, replicas) = self.ranges.get(index).unwrap_or(&self.ranges[0]);
        replicas
    }

    /// Every node address the map names, by node id.
    pub fn addresses(&self) -> BTreeMap<u32, String> {
        self.ranges
            .iter()
            .flat_map(|(_, replicas)| replicas)
            .filter_map(|r| Some((r.node, r.address.clone()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_the_cores_hash() {
        let mut keys: Vec<Vec<u8>> = vec![Vec::new(), b"a".to_vec(), vec![0xff; 300]];
        keys.extend((0..2000u32).map(|i| format!("key-{i}").into_bytes()));
        keys.extend((0..=255u8).map(|b| vec![b; usize::from(b) % 17]));
        for key in keys {
            assert_eq!(
                token_of(&key),
                ringkv_core::hash::hash_bytes(&key),
                "{key:?}"
            );
            assert_eq!(token_of(&key), ringkv_core::Ring::key_hash(&key));
        }
    }

    fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    fn replica(node: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![Value::Integer(node), bulk(host), Value::Integer(port)])
    }

    fn reply() -> Value {
        let range = |start: &str, end: &str, replicas: Vec<Value>| {
            Value::Array(vec![bulk(start), bulk(end), Value::Array(replicas)])
        };
        Value::Array(vec![
            Value::Integer(4),
            Value::Array(vec![
                range("300", "100", vec![replica(1, "10.0.0.1", 7001)]),
                range(
                    "100",
                    "200",
                    vec![
                        replica(2, "0.0.0.0", 7002),
                        Value::Array(vec![Value::Integer(3), Value::Nil, Value::Nil]),
                    ],
                ),
                range("200", "300", vec![replica(3, "::1", 7003)]),
            ]),
        ])
    }

    #[test]
    fn ranges_own_their_end_and_the_first_wraps() {
        let map = RingMap::parse(&reply(), "seed.example").expect("parse");
        assert_eq!(map.version, 4);
        let first = |token| map.replicas_for_token(token)[0].node;
        assert_eq!(first(0), 1);
        assert_eq!(first(100), 1);
        assert_eq!(first(101), 2);
        assert_eq!(first(200), 2);
        assert_eq!(first(300), 3);
        assert_eq!(first(301), 1, "past the last end wraps to the first range");
        assert_eq!(first(u64::MAX), 1);
        let second = map.replicas_for_token(150);
        assert_eq!(second[0].address.as_deref(), Some("seed.example:7002"));
        assert_eq!(second[1].address, None);
        assert_eq!(
            map.replicas_for_token(250)[0].address.as_deref(),
            Some("[::1]:7003")
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Integer(1)]),
            Value::Array(vec![bulk("x"), Value::Array(vec![])]),
            Value::Array(vec![
                Value::Integer(1),
                Value::Array(vec![Value::Array(vec![
                    bulk("1"),
                    bulk("-5"),
                    Value::Array(vec![]),
                ])]),
            ]),
            Value::Array(vec![
                Value::Integer(1),
                Value::Array(vec![Value::Array(vec![
                    bulk("1"),
                    bulk("5"),
                    Value::Array(vec![replica(1, "h", 70000)]),
                ])]),
            ]),
        ] {
            assert!(RingMap::parse(&bad, "h").is_err(), "{bad:?}");
        }
    }
}
