//! The one place that knows the wire encoding (bincode 2 over serde). Everything else sees
//! `encode` / `decode` for peer messages and `encode_value` / `decode_value` for
//! stored values; swapping the format touches only this file.

mod frame;
mod frequent;
mod record;
mod replication;
mod ring_log;
mod varint;

use crate::message::Message;
use crate::version::Record;
use bytes::Bytes;
use frame::Frame;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// Largest encoded message accepted; decoding never allocates beyond it, and encoding a larger
/// message is a typed error rather than a frame the receiver would refuse.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;

/// The one wire configuration. Decoding is bounded by the limit; encoding is not, so that
/// `encode` can report the exact size of an oversized message.
fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
}

fn decode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MESSAGE_BYTES_MAX>()
}

/// Why bytes could not be produced or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The encoding is longer than [`MESSAGE_BYTES_MAX`]: nothing was (or may be) sent.
    TooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid encoding (cut, corrupt, trailing bytes, or a value the
    /// serializer could not write).
    Malformed(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::TooLarge { bytes, max } => {
                write!(
                    f,
                    "message of {bytes} bytes exceeds the limit of {max} bytes"
                )
            }
            CodecError::Malformed(why) => write!(f, "undecodable message: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Encodes a peer message for the wire; an oversized message is a typed error the caller must
/// handle (a transport counts it and treats it as a failed send), never an empty frame.
pub fn encode(message: &Message) -> Result<Bytes, CodecError> {
    let mut bytes = Vec::new();
    encode_into(message, &mut bytes)?;
    Ok(Bytes::from(bytes))
}

/// [`encode`] into `buffer` (cleared first), for a driver that encodes many messages in turn:
/// reusing one buffer saves the allocation and the growth copies of each message's bytes. The
/// bytes and the errors are those of [`encode`].
pub fn encode_into(message: &Message, buffer: &mut Vec<u8>) -> Result<(), CodecError> {
    buffer.clear();
    if !frequent::encode(message, buffer) && !replication::encode(message, buffer) {
        bincode::serde::encode_into_writer(message, VecSink(buffer), config())
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
    }
    if buffer.len() > MESSAGE_BYTES_MAX {
        return Err(CodecError::TooLarge {
            bytes: buffer.len(),
            max: MESSAGE_BYTES_MAX,
        });
    }
    Ok(())
}

/// Appends what bincode writes to a borrowed vector (bincode's own vector writer owns its).
struct VecSink<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Decodes a peer message, refusing oversized input and trailing bytes. The most frequent
/// messages skip serde (`frequent`, `replication`), with serde's result.
pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
    decode_frame(Frame::Borrowed(bytes))
}

/// [`decode`] of a frame held as shared bytes: the keys and values of the reads' and writes'
/// messages are slices of `bytes` rather than copies (same result, same errors). For a driver
/// that owns each frame anyway, this saves an allocation and a copy per key and per value.
pub fn decode_shared(bytes: &Bytes) -> Result<Message, CodecError> {
    decode_frame(Frame::Shared(bytes))
}

fn decode_frame(frame: Frame<'_>) -> Result<Message, CodecError> {
    let bytes = frame.bytes();
    if bytes.len() <= MESSAGE_BYTES_MAX {
        let message = if frequent::leads(bytes) {
            frequent::decode(bytes)
        } else {
            replication::decode(frame).or_else(|| frequent::decode(bytes))
        };
        if let Some(message) = message {
            return Ok(message);
        }
    }
    decode_value(bytes)
}

/// Decodes a stored [`Record`] (what [`encode_value`] wrote for one): the value of a
/// last-write-wins record is a slice of `bytes`, not a copy; anything else goes through
/// [`decode_value`], with the same result and the same errors.
pub fn decode_record(bytes: &Bytes) -> Result<Record, CodecError> {
    if bytes.len() <= MESSAGE_BYTES_MAX {
        if let Some(record) = record::decode(bytes) {
            return Ok(record);
        }
    }
    decode_value(bytes)
}

/// Encodes a [`Record`] for storage: the bytes of [`encode_value`], written without serde for a
/// last-write-wins record (the one every SET stores), in a vector sized once.
pub fn encode_record(record: &Record) -> Vec<u8> {
    record::encode(record).unwrap_or_else(|| encode_value(record))
}

/// Encodes any other serde value (records, contexts, stored state). These are bounded by the
/// settings that admit them (`record_bytes_max` is below [`MESSAGE_BYTES_MAX`]), and the
/// encoder has no size limit, so for plain data this cannot fail: serde-derived types always
/// report their lengths, which is the only other way bincode refuses a value.
pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).unwrap_or_default()
}

/// Decodes a value written by [`encode_value`], refusing oversized input and trailing bytes.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(CodecError::TooLarge {
            bytes: bytes.len(),
            max: MESSAGE_BYTES_MAX,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, decode_config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{NodeId, OperationId};
    use crate::version::{LwwRecord, LwwVersion, Record};

    /// `decode_frame` skips `replication::decode` for a frame `frequent::leads`: that decoder
    /// must refuse every such frame, whatever follows the variant.
    #[test]
    fn frames_led_by_a_frequent_variant_are_no_replication_message() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let mut led = 0;
        for lead in 0..=u8::MAX {
            for _ in 0..200 {
                let len = rng.gen_range(0..64);
                let mut bytes = vec![lead];
                bytes.extend((0..len).map(|_| rng.gen::<u8>()));
                if frequent::leads(&bytes) {
                    led += 1;
                    assert!(replication::decode(Frame::Borrowed(&bytes)).is_none());
                }
            }
        }
        assert_eq!(led, 400, "two variants lead");
        let roots = Message::AeRoots {
            roots: vec![(1, 2)],
        };
        let mut wire = Vec::new();
        encode_into(&roots, &mut wire).expect("encodes");
        assert!(frequent::leads(&wire));
        assert!(!frequent::leads(&encode(&sample()).expect("encodes")));
    }

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
                expires_at_micros: None,
            }),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample()).expect("a small message encodes");
        assert_eq!(decode(&bytes), Ok(sample()));
        // A reused buffer holds exactly the same bytes, whatever it held before.
        let mut buffer = vec![9u8; 1000];
        encode_into(&sample(), &mut buffer).expect("a small message encodes");
        assert_eq!(buffer, bytes.to_vec());
        // A message and the same value through the value codec share one encoding.
        assert_eq!(encode_value(&sample()), bytes.to_vec());
    }

    fn write_of(value_bytes: usize) -> Message {
        Message::Write {
            op: OperationId(1),
            key: Bytes::from_static(b"k"),
            record: Record::Lww(LwwRecord {
                version: LwwVersion {
                    timestamp_micros: 1,
                    node: NodeId(1),
                    nonce: 1,
                },
                value: Some(Bytes::from(vec![0u8; value_bytes])),
                expires_at_micros: None,
            }),
        }
    }

    /// Gossip messages of every shape, with varints at their boundaries: the hand-written
    /// path's samples (`frequent`), and the address table it leaves to serde.
    fn gossip_samples() -> Vec<Message> {
        use crate::membership::GossipMessage;
        let mut samples = super::frequent::tests::samples();
        samples.push(Message::Gossip(GossipMessage::Addresses {
            entries: Vec::new(),
            answer_wanted: true,
        }));
        samples
    }

    #[test]
    fn gossip_round_trips_and_damage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for message in gossip_samples() {
            let bytes = encode(&message).expect("a sample encodes");
            assert_eq!(decode(&bytes), Ok(message.clone()));
            for cut in 0..bytes.len().min(64) {
                assert!(decode(&bytes[..cut]).is_err(), "a cut frame decoded");
            }
            for _ in 0..200 {
                let mut damaged = bytes.to_vec();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..damaged.len());
                    damaged[at] = rng.gen();
                }
                let _ = decode(&damaged);
            }
        }
    }

    #[test]
    fn an_oversized_message_is_a_typed_error_naming_its_size() {
        let at_limit = encode(&write_of(MESSAGE_BYTES_MAX - 64)).map(|b| b.len());
        assert!(
            matches!(at_limit, Ok(len) if len <= MESSAGE_BYTES_MAX),
            "{at_limit:?}"
        );
        match encode(&write_of(MESSAGE_BYTES_MAX)) {
            Err(CodecError::TooLarge { bytes, max }) => {
                assert!(bytes > MESSAGE_BYTES_MAX, "{bytes}");
                assert_eq!(max, MESSAGE_BYTES_MAX);
            }
            other => panic!("oversized message encoded as {other:?}"),
        }
        let mut buffer = Vec::new();
        assert_eq!(
            encode_into(&write_of(MESSAGE_BYTES_MAX), &mut buffer),
            encode(&write_of(MESSAGE_BYTES_MAX)).map(|_| ())
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bytes = encode(&sample()).expect("a small message encodes");
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(&[0xff; 64]).is_err());
        // A length prefix claiming a huge value must not allocate it.
        let mut huge = vec![2u8, 7, 3];
        huge.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode(&huge).is_err());
    }
}
