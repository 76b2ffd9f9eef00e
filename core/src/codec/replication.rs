//! A hand-written encoder and decoder for the messages of a read's or a write's round trip to
//! the replicas (`Read`, `ReadReply`, `Write`, `HintedWrite`, `WriteReply`, `LinRead`,
//! `LinWrite`) when they carry a last-write-wins record or none: most of a cluster's traffic
//! under a client workload. Through serde, bincode spent hundreds of instructions on each (a
//! visitor per enum, struct, option and result) and copied every key and value into a fresh
//! allocation; here a frame held as shared bytes lends its key and value as slices (issue #15).
//!
//! Like `frequent`, the encoder writes serde's bytes exactly and leaves every other message
//! (and any other record kind) to serde; the decoder's result is serde's exactly: any input it
//! does not accept whole yields `None`, and the caller decodes it with serde, so a malformed
//! frame gets serde's own error. The tests compare both codecs on every shape, on varint
//! boundaries and on damaged input.

use super::frame::Frame;
use super::record::{encoded_bytes_max, put_lww, read_lww};
use super::varint::{put_varint, Reader};
use crate::id::{NodeId, OperationId};
use crate::message::{Message, ReplicaError};
use crate::version::{LwwRecord, Record};
use bytes::Bytes;

/// `Message`'s variant indexes (serde numbers variants in declaration order).
const READ_VARIANT: u64 = 0;
const READ_REPLY_VARIANT: u64 = 1;
const WRITE_VARIANT: u64 = 2;
const HINTED_WRITE_VARIANT: u64 = 3;
const WRITE_REPLY_VARIANT: u64 = 4;
const LIN_READ_VARIANT: u64 = 13;
const LIN_WRITE_VARIANT: u64 = 14;
/// `Result`'s variant indexes.
const OK_VARIANT: u64 = 0;
const ERR_VARIANT: u64 = 1;
/// Most bytes of one of these messages besides its key and its record's value: a variant, an
/// operation id, a key length, a 64-bit epoch or digest, a node, a result and an option tag,
/// and a record's overhead (counted by `encoded_bytes_max`).
const OVERHEAD_BYTES_MAX: usize = 1 + 9 + 9 + 9 + 5 + 1 + 1;

/// Appends the bytes of `message` as serde writes them and returns true, if it is one of the
/// messages this module knows; returns false (and appends nothing) for any other.
pub(super) fn encode(message: &Message, out: &mut Vec<u8>) -> bool {
    match message {
        Message::Read { op, key } => {
            out.reserve(key.len() + OVERHEAD_BYTES_MAX);
            put_varint(out, READ_VARIANT);
            put_varint(out, op.0);
            put_byte_string(out, key);
        }
        Message::ReadReply {
            op,
            key_digest,
            record,
        } => return put_read_reply(out, *op, *key_digest, record),
        Message::Write { op, key, record }
        | Message::HintedWrite {
            op, key, record, ..
        } => {
            let Record::Lww(lww) = record else {
                return false;
            };
            let variant = match message {
                Message::Write { .. } => WRITE_VARIANT,
                _ => HINTED_WRITE_VARIANT,
            };
            put_keyed_record(out, variant, *op, key, lww);
            if let Message::HintedWrite { for_node, .. } = message {
                put_varint(out, u64::from(for_node.0));
            }
        }
        Message::WriteReply {
            op,
            key_digest,
            result,
        } => {
            out.reserve(OVERHEAD_BYTES_MAX);
            put_varint(out, WRITE_REPLY_VARIANT);
            put_varint(out, op.0);
            put_varint(out, *key_digest);
            put_result(out, *result);
        }
        Message::LinRead { op, key, epoch } => {
            out.reserve(key.len() + OVERHEAD_BYTES_MAX);
            put_varint(out, LIN_READ_VARIANT);
            put_varint(out, op.0);
            put_byte_string(out, key);
            put_varint(out, *epoch);
        }
        Message::LinWrite {
            op,
            key,
            record,
            epoch,
        } => {
            let Record::Lww(lww) = record else {
                return false;
            };
            put_keyed_record(out, LIN_WRITE_VARIANT, *op, key, lww);
            put_varint(out, *epoch);
        }
        _ => return false,
    }
    true
}

/// [`encode`] of a `ReadReply`: false (and nothing appended) for a record of another kind.
fn put_read_reply(
    out: &mut Vec<u8>,
    op: OperationId,
    key_digest: u64,
    record: &Result<Option<Record>, ReplicaError>,
) -> bool {
    let record = match record {
        Ok(None) => Ok(None),
        Ok(Some(Record::Lww(lww))) => Ok(Some(lww)),
        Ok(Some(_)) => return false,
        Err(error) => Err(*error),
    };
    let value_bytes = match record {
        Ok(Some(lww)) => encoded_bytes_max(lww),
        Ok(None) | Err(_) => 0,
    };
    out.reserve(value_bytes + OVERHEAD_BYTES_MAX);
    put_varint(out, READ_REPLY_VARIANT);
    put_varint(out, op.0);
    put_varint(out, key_digest);
    if let Ok(Some(lww)) = record {
        put_varint(out, OK_VARIANT);
        // An option's tag is one byte.
        out.push(1);
        put_lww(out, lww);
        return true;
    }
    let absent = record.map(|_| ());
    put_result(out, absent);
    if absent.is_ok() {
        out.push(0);
    }
    true
}

/// A result's variant, and the error's after an `Err` (an `Ok`'s value is the caller's).
fn put_result(out: &mut Vec<u8>, result: Result<(), ReplicaError>) {
    match result {
        Ok(()) => put_varint(out, OK_VARIANT),
        Err(error) => {
            put_varint(out, ERR_VARIANT);
            put_varint(out, error_variant(error));
        }
    }
}

/// The head shared by the writes: variant, operation id, key and record, in one reservation.
fn put_keyed_record(
    out: &mut Vec<u8>,
    variant: u64,
    op: OperationId,
    key: &Bytes,
    record: &LwwRecord,
) {
    out.reserve(key.len() + encoded_bytes_max(record) + OVERHEAD_BYTES_MAX);
    put_varint(out, variant);
    put_varint(out, op.0);
    put_byte_string(out, key);
    put_lww(out, record);
}

fn put_byte_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The message `frame` encodes, if it is a whole message of a kind this module knows; `None`
/// for anything else, valid or not.
pub(super) fn decode(frame: Frame<'_>) -> Option<Message> {
    let mut reader = frame.reader();
    let variant = reader.varint_u32()?;
    let message = match variant {
        READ_VARIANT => Message::Read {
            op: OperationId(reader.varint_u64()?),
            key: frame.byte_string(&mut reader)?,
        },
        READ_REPLY_VARIANT => {
            let op = OperationId(reader.varint_u64()?);
            let key_digest = reader.varint_u64()?;
            let record = match reader.varint_u32()? {
                OK_VARIANT => Ok(match reader.byte()? {
                    0 => None,
                    1 => Some(Record::Lww(read_lww(&mut reader, frame)?)),
                    _ => return None,
                }),
                ERR_VARIANT => Err(read_error(&mut reader)?),
                _ => return None,
            };
            Message::ReadReply {
                op,
                key_digest,
                record,
            }
        }
        WRITE_VARIANT | HINTED_WRITE_VARIANT | LIN_WRITE_VARIANT => {
            let op = OperationId(reader.varint_u64()?);
            let key = frame.byte_string(&mut reader)?;
            let record = Record::Lww(read_lww(&mut reader, frame)?);
            match variant {
                WRITE_VARIANT => Message::Write { op, key, record },
                HINTED_WRITE_VARIANT => Message::HintedWrite {
                    op,
                    key,
                    record,
                    for_node: NodeId(u32::try_from(reader.varint_u32()?).ok()?),
                },
                _ => Message::LinWrite {
                    op,
                    key,
                    record,
                    epoch: reader.varint_u64()?,
                },
            }
        }
        WRITE_REPLY_VARIANT => Message::WriteReply {
            op: OperationId(reader.varint_u64()?),
            key_digest: reader.varint_u64()?,
            result: match reader.varint_u32()? {
                OK_VARIANT => Ok(()),
                ERR_VARIANT => Err(read_error(&mut reader)?),
                _ => return None,
            },
        },
        LIN_READ_VARIANT => Message::LinRead {
            op: OperationId(reader.varint_u64()?),
            key: frame.byte_string(&mut reader)?,
            epoch: reader.varint_u64()?,
        },
        _ => return None,
    };
    (reader.remaining() == 0).then_some(message)
}

fn error_variant(error: ReplicaError) -> u64 {
    match error {
        ReplicaError::Storage => 0,
        ReplicaError::Busy => 1,
        ReplicaError::RingMismatch => 2,
        ReplicaError::NotReady => 3,
        ReplicaError::NoSpace => 4,
    }
}

fn read_error(reader: &mut Reader<'_>) -> Option<ReplicaError> {
    Some(match reader.varint_u32()? {
        0 => ReplicaError::Storage,
        1 => ReplicaError::Busy,
        2 => ReplicaError::RingMismatch,
        3 => ReplicaError::NotReady,
        4 => ReplicaError::NoSpace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_value, encode_value};
    use crate::version::{CounterRecord, LwwVersion};

    use crate::codec::frequent::tests::EDGES;

    const ERRORS: [ReplicaError; 5] = [
        ReplicaError::Storage,
        ReplicaError::Busy,
        ReplicaError::RingMismatch,
        ReplicaError::NotReady,
        ReplicaError::NoSpace,
    ];

    fn lww(wide: u64, value: Option<Vec<u8>>, expiry: Option<u64>) -> LwwRecord {
        let narrow = u32::try_from(wide).unwrap_or(u32::MAX);
        LwwRecord {
            version: LwwVersion {
                timestamp_micros: wide,
                node: NodeId(narrow),
                nonce: narrow,
            },
            value: value.map(Bytes::from),
            expires_at_micros: expiry,
        }
    }

    /// Every message shape this module encodes, with varints at their boundaries and keys and
    /// values of every length class.
    pub(crate) fn samples() -> Vec<Message> {
        let mut records = vec![
            lww(9, None, None),
            lww(9, Some(Vec::new()), None),
            lww(9, Some(vec![5; 300]), Some(77)),
            lww(9, Some(vec![6; 10_240]), None),
        ];
        records.extend(
            EDGES
                .iter()
                .map(|&wide| lww(wide, Some(b"v".to_vec()), Some(wide))),
        );
        let keys: Vec<Bytes> = [0usize, 1, 250, 251, 70_000]
            .iter()
            .map(|&len| Bytes::from(vec![b'k'; len]))
            .collect();
        let mut samples = Vec::new();
        for (i, &wide) in EDGES.iter().enumerate() {
            let key = keys[i % keys.len()].clone();
            let record = Record::Lww(records[i % records.len()].clone());
            samples.extend(every_kind(wide, key, record));
        }
        for record in records {
            samples.push(Message::ReadReply {
                op: OperationId(3),
                key_digest: 4,
                record: Ok(Some(Record::Lww(record.clone()))),
            });
            samples.push(Message::Write {
                op: OperationId(3),
                key: keys[1].clone(),
                record: Record::Lww(record),
            });
        }
        for error in ERRORS {
            samples.push(Message::ReadReply {
                op: OperationId(5),
                key_digest: 6,
                record: Err(error),
            });
            samples.push(Message::WriteReply {
                op: OperationId(5),
                key_digest: 6,
                result: Err(error),
            });
        }
        samples
    }

    /// One message of each kind, with `wide` in every number.
    fn every_kind(wide: u64, key: Bytes, record: Record) -> Vec<Message> {
        let mut samples = Vec::new();
        let op = OperationId(wide);
        let narrow = u32::try_from(wide).unwrap_or(u32::MAX);
        samples.push(Message::Read {
            op,
            key: key.clone(),
        });
        samples.push(Message::LinRead {
            op,
            key: key.clone(),
            epoch: wide,
        });
        samples.push(Message::Write {
            op,
            key: key.clone(),
            record: record.clone(),
        });
        samples.push(Message::HintedWrite {
            op,
            key: key.clone(),
            record: record.clone(),
            for_node: NodeId(narrow),
        });
        samples.push(Message::LinWrite {
            op,
            key,
            record: record.clone(),
            epoch: wide,
        });
        samples.push(Message::ReadReply {
            op,
            key_digest: wide,
            record: Ok(Some(record)),
        });
        samples.push(Message::ReadReply {
            op,
            key_digest: wide,
            record: Ok(None),
        });
        samples.push(Message::WriteReply {
            op,
            key_digest: wide,
            result: Ok(()),
        });
        samples
    }

    fn encoded(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(encode(message, &mut out), "{}", message.kind());
        out
    }

    #[test]
    fn encodes_exactly_what_serde_encodes() {
        for message in samples() {
            assert_eq!(encoded(&message), encode_value(&message), "{message:?}");
        }
    }

    #[test]
    fn decodes_exactly_what_serde_decodes_and_lends_a_shared_frame() {
        for message in samples() {
            let bytes = Bytes::from(encode_value(&message));
            assert_eq!(decode_value::<Message>(&bytes).as_ref(), Ok(&message));
            assert_eq!(decode(Frame::Borrowed(&bytes)).as_ref(), Some(&message));
            let shared = decode(Frame::Shared(&bytes));
            assert_eq!(shared.as_ref(), Some(&message));
            let (key, value) = match &shared {
                Some(Message::Write { key, record, .. }) => (Some(key), value_of(record)),
                Some(Message::ReadReply {
                    record: Ok(Some(record)),
                    ..
                }) => (None, value_of(record)),
                Some(Message::Read { key, .. }) => (Some(key), None),
                _ => (None, None),
            };
            for lent in key.into_iter().chain(value).filter(|b| !b.is_empty()) {
                assert!(
                    bytes.as_ptr_range().contains(&lent.as_ptr()),
                    "a byte string of a shared frame is a slice, not a copy"
                );
            }
        }
    }

    fn value_of(record: &Record) -> Option<&Bytes> {
        match record {
            Record::Lww(lww) => lww.value.as_ref(),
            Record::Causal(_) | Record::Counter(_) => None,
        }
    }

    #[test]
    fn leaves_other_records_and_messages_to_serde() {
        let counter = Record::Counter(CounterRecord::default());
        let others = [
            Message::Write {
                op: OperationId(1),
                key: Bytes::from_static(b"k"),
                record: counter.clone(),
            },
            Message::ReadReply {
                op: OperationId(1),
                key_digest: 2,
                record: Ok(Some(counter.clone())),
            },
            Message::LinWrite {
                op: OperationId(1),
                key: Bytes::from_static(b"k"),
                record: counter,
                epoch: 3,
            },
            Message::CountLive { op: OperationId(1) },
        ];
        for message in others {
            let mut out = vec![42];
            assert!(!encode(&message, &mut out));
            assert_eq!(out, [42], "nothing appended");
            assert_eq!(decode(Frame::Borrowed(&encode_value(&message))), None);
        }
    }

    #[test]
    fn damaged_frames_are_refused_or_decoded_as_serde_decodes_them() {
        for message in samples().into_iter().filter(|m| encoded(m).len() < 400) {
            let valid = encoded(&message);
            for cut in 0..valid.len() {
                assert_eq!(decode(Frame::Borrowed(&valid[..cut])), None, "cut at {cut}");
            }
            let mut longer = valid.clone();
            longer.push(0);
            assert_eq!(decode(Frame::Borrowed(&longer)), None, "a trailing byte");
            for at in 0..valid.len() {
                for flip in [1u8, 0x80, 0xff] {
                    let mut damaged = valid.clone();
                    damaged[at] ^= flip;
                    if let Some(fast) = decode(Frame::Borrowed(&damaged)) {
                        assert_eq!(
                            decode_value::<Message>(&damaged),
                            Ok(fast),
                            "byte {at} ^ {flip}"
                        );
                    }
                }
            }
        }
    }
}
