//! The RESP2 subset the client speaks: commands out as arrays of bulk strings, replies in as a
//! [`Value`]. The decoder takes bytes from the network, so it never panics and bounds what it
//! builds (bulk length, elements, nesting).

/// One reply from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-PREFIX message`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n` bulk string.
    Bulk(Vec<u8>),
    /// `$-1` / `*-1`
    Nil,
    /// `*n`
    Array(Vec<Value>),
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(bytes) => Some(bytes),
            Value::Simple(text) => Some(text.as_bytes()),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// Largest bulk string accepted in a reply (the node's own value limit is far below).
pub const BULK_BYTES_MAX: usize = 512 << 20;
/// Most elements of one array accepted.
pub const ARRAY_ELEMENTS_MAX: usize = 1 << 20;
/// Deepest nesting accepted.
pub const DEPTH_MAX: usize = 8;

/// Appends `args` as one RESP command.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Why bytes are not a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Decodes one reply from the front of `input`: `Ok(Some((value, used)))`, `Ok(None)` if more
/// bytes are needed, or an error for bytes that are no RESP reply.
pub fn decode(input: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    decode_at(input, 0, 0)
}

fn line(input: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = input.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn integer(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("bad integer {:?}", String::from_utf8_lossy(text))))
}

fn decode_at(
    input: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Value, usize)>, ProtocolError> {
    if depth > DEPTH_MAX {
        return Err(ProtocolError("reply nested too deeply".into()));
    }
    let Some(&kind) = input.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(input, at + 1) else {
        return Ok(None);
    };
    let string = || String::from_utf8_lossy(text).into_owned();
    match kind {
        b'+' => Ok(Some((Value::Simple(string()), next))),
        b'-' => Ok(Some((Value::Error(string()), next))),
        b':' => Ok(Some((Value::Integer(integer(text)?), next))),
        b'$' => {
            let length = integer(text)?;
            if length < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if length > BULK_BYTES_MAX {
                return Err(ProtocolError(format!("bulk of {length} bytes")));
            }
            let end = next + length;
            match input.get(next..end + 2) {
                None => Ok(None),
                Some(bytes) if &bytes[length..] == b"\r\n" => {
                    Ok(Some((Value::Bulk(bytes[..length].to_vec()), end + 2)))
                }
                Some(_) => Err(ProtocolError("bulk not followed by CRLF".into())),
            }
        }
        b'*' => {
            let count = integer(text)?;
            if count < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count > ARRAY_ELEMENTS_MAX {
                return Err(ProtocolError(format!("array of {count} elements")));
            }
            let mut items = Vec::with_capacity(count.min(1024));
            let mut position = next;
            for _ in 0..count {
                match decode_at(input, position, depth + 1)? {
                    Some((item, used)) => {
                        items.push(item);
                        position = used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(items), position)))
        }
        other => Err(ProtocolError(format!(
            "unknown reply type byte {other:#04x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_bulk_arrays() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b""], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn replies_decode_whole_and_ask_for_more_when_cut() {
        let reply = b"*3\r\n:1\r\n$3\r\nabc\r\n*2\r\n+OK\r\n$-1\r\n";
        let expected = Value::Array(vec![
            Value::Integer(1),
            Value::Bulk(b"abc".to_vec()),
            Value::Array(vec![Value::Simple("OK".into()), Value::Nil]),
        ]);
        assert_eq!(decode(reply), Ok(Some((expected, reply.len()))));
        for cut in 0..reply.len() {
            assert_eq!(decode(&reply[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            decode(b"-BUSY later\r\n"),
            Ok(Some((Value::Error("BUSY later".into()), 13)))
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &b"?\r\n"[..],
            b":x\r\n",
            b"$3\r\nabcde\r\n",
            b"*99999999999\r\n",
            b"$99999999999999\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(DEPTH_MAX + 2);
        assert!(decode(deep.as_bytes()).is_err());
        // Every prefix and every byte flip of a valid reply: an answer, never a panic.
        let reply = b"*2\r\n$3\r\nabc\r\n:-7\r\n".to_vec();
        for i in 0..reply.len() {
            for b in [0u8, b'\r', b'*', b'$', b'-', 0xff] {
                let mut flipped = reply.clone();
                flipped[i] = b;
                let _ = decode(&flipped);
            }
        }
    }
}
