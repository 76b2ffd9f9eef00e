//! The one place that knows the wire encoding (bincode 2 over serde). Everything else sees
//! `encode` / `decode`; swapping the format touches only this file.

use crate::message::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// Largest encoded message accepted; decoding never allocates beyond it.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MESSAGE_BYTES_MAX>()
}

/// Bytes that are not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undecodable message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes any serde value (messages, records, contexts).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail except on the size limit, which a value built by
    // this process never reaches; an empty frame is then refused by the receiver.
    bincode::serde::encode_to_vec(value, config()).unwrap_or_default()
}

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(DecodeError(format!(
            "{} bytes exceeds the limit",
            bytes.len()
        )));
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Encodes a peer message.
pub fn encode_message(message: &Message) -> Vec<u8> {
    encode(message)
}

/// Decodes a peer message.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{NodeId, OperationId};
    use crate::version::{LwwRecord, LwwVersion, Record};
    use bytes::Bytes;

    fn sample() -> Message {
        Message::Write {
            op: OperationId(7),
            key: Bytes::from_static(b"key"),
            record: Record::Lww(LwwRecord {
                version: LwwVersion {
                    timestamp_micros: 42,
                    node: NodeId(3),
                    nonce: 9,
                },
                value: Some(Bytes::from(vec![1u8; 300])),
            }),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode_message(&sample());
        assert_eq!(decode_message(&bytes), Ok(sample()));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bytes = encode_message(&sample());
        for cut in 0..bytes.len() {
            assert!(
                decode_message(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_message(&extra).is_err());
        assert!(decode_message(&[0xff; 64]).is_err());
        // A length prefix claiming a huge value must not allocate it.
        let mut huge = vec![2u8, 7, 3];
        huge.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode_message(&huge).is_err());
    }
}
