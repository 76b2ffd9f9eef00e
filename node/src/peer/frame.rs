//! Peer frames: `length u32 LE | crc32 u32 LE | payload`. The length is checked against the
//! limit before anything is allocated; a bad checksum or size is an error that closes only the
//! connection it arrived on.

use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes before each payload.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The connection closed cleanly between frames.
    Closed,
    /// The length exceeds the limit (or is zero).
    BadLength {
        /// The claimed length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The payload does not match its checksum.
    Checksum,
    /// The connection failed (or closed inside a frame).
    Io(std::io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed => write!(f, "connection closed"),
            FrameError::BadLength { bytes, max } => {
                write!(f, "frame of {bytes} bytes refused (1 to {max} allowed)")
            }
            FrameError::Checksum => write!(f, "frame checksum mismatch"),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends one frame carrying `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn header_fields(header: &[u8; FRAME_HEADER_BYTES]) -> (usize, u32) {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (usize::try_from(len).unwrap_or(usize::MAX), crc)
}

/// Decodes one frame from the front of `buf` (pure; the async reader follows the same rules):
/// `Ok(Some((payload, consumed)))`, `Ok(None)` if incomplete, or an error.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let mut fixed = [0u8; FRAME_HEADER_BYTES];
    fixed.copy_from_slice(header);
    let (len, crc) = header_fields(&fixed);
    if len == 0 || len > max {
        return Err(FrameError::BadLength { bytes: len, max });
    }
    let Some(payload) = buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Ok(None);
    };
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Checksum);
    }
    Ok(Some((payload, FRAME_HEADER_BYTES + len)))
}

/// Reads one frame's payload.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    // Distinguish a clean close between frames from a close inside one. A TLS stream whose
    // peer closed TCP without a close_notify (a process exiting) reports that as an unexpected
    // end of file; between frames it cuts nothing, since frames delimit themselves.
    let first = match reader.read(&mut header).await {
        Ok(0) => return Err(FrameError::Closed),
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    };
    reader
        .read_exact(&mut header[first..])
        .await
        .map_err(FrameError::Io)?;
    let (len, crc) = header_fields(&header);
    if len == 0 || len > max {
        return Err(FrameError::BadLength { bytes: len, max });
    }
    let mut payload = vec![0u8; len];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(FrameError::Io)?;
    if crc32fast::hash(&payload) != crc {
        return Err(FrameError::Checksum);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_every_prefix_is_incomplete() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        for cut in 0..buf.len() {
            assert!(matches!(decode_frame(&buf[..cut], 64), Ok(None)));
        }
        let (payload, used) = decode_frame(&buf, 64).expect("ok").expect("complete");
        assert_eq!((payload, used), (&b"hello"[..], buf.len()));
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        let mut flipped = buf.clone();
        flipped[10] ^= 1;
        assert!(matches!(
            decode_frame(&flipped, 64),
            Err(FrameError::Checksum)
        ));
        assert!(matches!(
            decode_frame(&buf, 4),
            Err(FrameError::BadLength { bytes: 5, max: 4 })
        ));
        assert!(matches!(
            decode_frame(&[0xff; 8], 1 << 20),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            decode_frame(&[0; 8], 64),
            Err(FrameError::BadLength { bytes: 0, .. })
        ));
    }

    #[tokio::test]
    async fn the_reader_follows_the_same_rules() {
        let mut buf = Vec::new();
        encode_frame(b"one", &mut buf);
        encode_frame(b"two", &mut buf);
        let mut reader = &buf[..];
        assert_eq!(read_frame(&mut reader, 64).await.expect("one"), b"one");
        assert_eq!(read_frame(&mut reader, 64).await.expect("two"), b"two");
        assert!(matches!(
            read_frame(&mut reader, 64).await,
            Err(FrameError::Closed)
        ));
        let mut torn = &buf[..5];
        assert!(matches!(
            read_frame(&mut torn, 64).await,
            Err(FrameError::Io(_))
        ));
        let mut huge = &[0xffu8; 16][..];
        assert!(matches!(
            read_frame(&mut huge, 64).await,
            Err(FrameError::BadLength { .. })
        ));
    }

    /// A reader that yields `bytes`, then fails the way a TLS stream does when its peer closed
    /// TCP without a close_notify.
    struct CutWithoutNotify<'a>(&'a [u8]);

    impl tokio::io::AsyncRead for CutWithoutNotify<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0.is_empty() {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let n = self.0.len().min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_tls_cut_between_frames_is_a_close_and_inside_one_an_error() {
        let mut buf = Vec::new();
        encode_frame(b"one", &mut buf);
        let mut between = CutWithoutNotify(&buf);
        assert_eq!(read_frame(&mut between, 64).await.expect("one"), b"one");
        assert!(matches!(
            read_frame(&mut between, 64).await,
            Err(FrameError::Closed)
        ));
        let mut inside = CutWithoutNotify(&buf[..5]);
        assert!(matches!(
            read_frame(&mut inside, 64).await,
            Err(FrameError::Io(_))
        ));
    }
}
