//! The stored-record decoder (`ringkv_core::codec::decode_value::<Record>`), what a replica runs on
//! every value it reads back from its storage, and the hint-key parser
//! (`ringkv_core::node::hints::parse_hint_key`) run on stored keys at start-up.
//!
//! Checks, on every input: never panics; a decoded record round-trips
//! (`decode(encode(r)) == r`) and its encoding is stable; a parsed hint key re-encodes to the
//! same bytes (`hint_key(parse_hint_key(k)) == k`).
use ringkv_core::codec::{decode_value as decode, encode_value as encode};
use ringkv_core::node::hints::{hint_key, parse_hint_key};
use ringkv_core::Record;

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    if let Ok(record) = decode::<Record>(data) {
        let bytes = encode(&record);
        assert!(!bytes.is_empty(), "a decoded record does not encode");
        let again: Record = decode(&bytes).expect("re-encoded record decodes");
        assert_eq!(again, record, "record round trip");
        assert_eq!(encode(&again), bytes, "encoding not stable");
    }
    if let Some((owner, key)) = parse_hint_key(data) {
        assert_eq!(&hint_key(owner, &key)[..], data, "hint key round trip");
    }
}
