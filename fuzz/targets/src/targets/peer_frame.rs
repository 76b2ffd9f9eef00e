//! The node's peer frame decoder (`ringkv_node::peer::frame::decode_frame`, and the async
//! `read_frame` the connections actually run), feeding each payload to the core message codec
//! as `peer::serve` does.
//!
//! Checks, on every input:
//! - `decode_frame` never panics, with a small and the production (`MESSAGE_BYTES_MAX`) limit; a
//!   complete frame's payload is `data[8..used]`, within the limit, and re-encodes to exactly the
//!   consumed bytes;
//! - differential: `read_frame` over the same bytes agrees with `decode_frame` (same payload,
//!   same length / checksum errors; "incomplete" is a clean close when empty, else an IO error);
//! - a stream of frames decodes frame by frame, every payload goes through `decode`
//!   without panicking;
//! - round trip: the input as a payload, framed with `encode_frame`, decodes to itself.
use ringkv_core::codec::{decode, MESSAGE_BYTES_MAX};
use ringkv_node::peer::frame::{
    decode_frame, encode_frame, read_frame, FrameError, FRAME_HEADER_BYTES,
};
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Small enough that `read_frame` (which allocates the claimed length up front) stays cheap.
const SMALL_MAX: usize = 4096;

fn read_sync(data: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    let mut reader = data;
    let mut future = std::pin::pin!(read_frame(&mut reader, max));
    // A byte slice never returns `Pending`.
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("read_frame pending on an in-memory reader"),
    }
}

fn check(data: &[u8], max: usize) {
    match decode_frame(data, max) {
        Ok(Some((payload, used))) => {
            assert_eq!(used, FRAME_HEADER_BYTES + payload.len());
            assert!(used <= data.len());
            assert!(
                !payload.is_empty() && payload.len() <= max,
                "length outside 1..=max"
            );
            assert_eq!(payload, &data[FRAME_HEADER_BYTES..used]);
            let mut again = Vec::new();
            encode_frame(payload, &mut again);
            assert_eq!(
                again,
                &data[..used],
                "frame does not re-encode to its bytes"
            );
        }
        Ok(None) => {}
        Err(FrameError::BadLength { bytes, max: m }) => {
            assert_eq!(m, max);
            assert!(
                bytes == 0 || bytes > max,
                "refused a length within the limit"
            );
        }
        Err(_) => {}
    }
}

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    check(data, 64);
    check(data, SMALL_MAX);
    check(data, MESSAGE_BYTES_MAX);

    // Differential: the async reader follows the same rules.
    let pure = decode_frame(data, SMALL_MAX);
    let read = read_sync(data, SMALL_MAX);
    match (&pure, &read) {
        (Ok(Some((p, _))), Ok(r)) => assert_eq!(p, &r.as_slice()),
        (Ok(None), Err(FrameError::Closed)) => assert!(data.is_empty()),
        (Ok(None), Err(FrameError::Io(e))) => {
            assert!(!data.is_empty());
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        }
        (
            Err(FrameError::BadLength { bytes: a, .. }),
            Err(FrameError::BadLength { bytes: b, .. }),
        ) => {
            assert_eq!(a, b)
        }
        (Err(FrameError::Checksum), Err(FrameError::Checksum)) => {}
        (p, r) => panic!("decode_frame gave {p:?} but read_frame gave {r:?}"),
    }

    // A stream of frames, each payload handed to the message codec.
    let mut rest = data;
    while let Ok(Some((payload, used))) = decode_frame(rest, MESSAGE_BYTES_MAX) {
        let _ = decode(payload);
        rest = &rest[used..];
    }

    // Round trip.
    if !data.is_empty() {
        let mut framed = Vec::new();
        encode_frame(data, &mut framed);
        let decoded = decode_frame(&framed, MESSAGE_BYTES_MAX).ok().flatten();
        assert_eq!(decoded, Some((data, framed.len())), "frame round trip");
    }
}
