//! The Redis serialization protocol (RESP2, and RESP3 replies after `HELLO 3`).
//!
//! The request parser is incremental (it reports "need more bytes" until a whole command has
//! arrived), bounded (every length is checked against [`RequestLimits`] before anything is
//! allocated) and total: malformed input is a [`ProtocolError`], never a panic. The reply side
//! encodes [`Reply`] values and, for the `ringkv` CLI and tests, parses them back.

use bytes::Bytes;
use std::fmt;

/// Bounds on one request, checked while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest whole command (all of its bytes, headers included).
    pub request_bytes_max: usize,
    /// Most arguments in one command.
    pub arguments_max: usize,
    /// Longest inline command line (a command typed without RESP framing).
    pub inline_bytes_max: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            request_bytes_max: 8 << 20,
            arguments_max: 1 << 16,
            inline_bytes_max: 64 << 10,
        }
    }
}

/// Input that is not a valid command. After one, the connection cannot find the next command
/// boundary, so the server answers the error and closes that connection (as Redis does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn error<T>(why: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(why.into()))
}

/// The position just past the next CRLF-terminated line starting at `at`, and the line itself;
/// `None` if the line is not complete yet. Lines longer than `max` are an error.
fn line(buf: &[u8], at: usize, max: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[at.min(buf.len())..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            if nl > max {
                return error("line too long");
            }
            if nl == 0 || rest[nl - 1] != b'\r' {
                return error("line not terminated by CRLF");
            }
            Ok(Some((&rest[..nl - 1], at + nl + 1)))
        }
        None if rest.len() > max => error("line too long"),
        None => Ok(None),
    }
}

/// Parses a decimal integer of a length header: an optional sign and 1 to 19 digits (what
/// `i64`'s `FromStr` accepts, without its UTF-8 check and generic path: a header is parsed per
/// argument of every command).
fn number(digits: &[u8], what: &str) -> Result<i64, ProtocolError> {
    let invalid = || ProtocolError(format!("invalid {what}"));
    if digits.is_empty() || digits.len() > 19 {
        return Err(invalid());
    }
    let (negative, body) = match digits {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, digits),
    };
    if body.is_empty() {
        return Err(invalid());
    }
    let mut value: i64 = 0;
    for &b in body {
        if !b.is_ascii_digit() {
            return Err(invalid());
        }
        let digit = i64::from(b - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or_else(invalid)?;
    }
    Ok(value)
}

/// Longest length header line we accept (`*` or `$` plus digits).
const HEADER_LINE_MAX: usize = 32;

/// Parses one command from the front of `buf`: `Ok(Some((arguments, bytes consumed)))`,
/// `Ok(None)` if more bytes are needed, or an error. An empty inline line yields an empty
/// argument list (to be skipped by the caller).
///
/// Stateless: every call starts from the first byte. A connection uses [`CommandParser`], which
/// resumes where the previous call stopped.
pub fn parse_command(
    buf: &[u8],
    limits: &RequestLimits,
) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
    CommandParser::default().parse(buf, limits)
}

/// An incremental command parser that keeps what it has parsed of an incomplete command, so
/// bytes arriving in small pieces are examined once each: the cost of parsing a command is linear
/// in its size however it is segmented. (Re-parsing from the start on every read made one
/// 65,536-argument command sent an argument per packet cost seconds of CPU: issue #17 item 5.)
///
/// The caller passes the same buffer each time, with new bytes appended and the bytes of
/// completed commands removed from the front (as `parse` reports them); after an error the
/// connection is closed, so the parser is not reused.
#[derive(Debug, Default)]
pub struct CommandParser {
    /// The incomplete command's state; `None` between commands.
    partial: Option<Partial>,
    /// Bytes examined so far over the parser's life (a test measures linearity with it).
    examined_bytes: u64,
}

#[derive(Debug)]
enum Partial {
    /// A multibulk command: its argument count, the arguments parsed so far, and where the next
    /// argument starts.
    Multibulk {
        count: usize,
        arguments: Vec<Bytes>,
        at: usize,
    },
    /// An inline command whose first `scanned` bytes hold no newline.
    Inline { scanned: usize },
}

/// The most frequent command names, spelled exactly as sent, without a copy: an allocation
/// and a free per command for three bytes (issue #15).
fn frequent_name(name: &[u8]) -> Option<Bytes> {
    const NAMES: [&[u8]; 4] = [b"GET", b"SET", b"get", b"set"];
    NAMES
        .iter()
        .find(|&&frequent| frequent == name)
        .map(|&frequent| Bytes::from_static(frequent))
}

impl CommandParser {
    /// Bytes examined so far (for tests of linear cost).
    pub fn examined_bytes(&self) -> u64 {
        self.examined_bytes
    }

    /// Parses one command from the front of `buf`, continuing the incomplete one if any; see
    /// [`parse_command`] for the result.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &RequestLimits,
    ) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
        let partial = match self.partial.take() {
            Some(partial) => partial,
            None => match buf.first() {
                None => return Ok(None),
                Some(b'*') => {
                    let Some((header, at)) = line(buf, 1, HEADER_LINE_MAX)? else {
                        self.examined_bytes += buf.len().min(HEADER_LINE_MAX + 2) as u64;
                        return Ok(None);
                    };
                    self.examined_bytes += at as u64;
                    let count = number(header, "multibulk length")?;
                    if count <= 0 {
                        // `*0` and `*-1` are empty commands: nothing to run.
                        return Ok(Some((Vec::new(), at)));
                    }
                    let count = usize::try_from(count).unwrap_or(usize::MAX);
                    if count > limits.arguments_max {
                        return error(format!(
                            "too many arguments in one command ({count} > {})",
                            limits.arguments_max
                        ));
                    }
                    // Arguments are at least 6 bytes each ("$0\r\n\r\n"), so this bounds the
                    // allocation by what has arrived.
                    let arguments = Vec::with_capacity(count.min(buf.len() / 4 + 1));
                    Partial::Multibulk {
                        count,
                        arguments,
                        at,
                    }
                }
                Some(_) => Partial::Inline { scanned: 0 },
            },
        };
        match partial {
            Partial::Multibulk {
                count,
                mut arguments,
                mut at,
            } => {
                while arguments.len() < count {
                    match self.argument(buf, at, limits, arguments.is_empty())? {
                        Some((argument, next)) => {
                            arguments.push(argument);
                            at = next;
                        }
                        None => {
                            self.partial = Some(Partial::Multibulk {
                                count,
                                arguments,
                                at,
                            });
                            return Ok(None);
                        }
                    }
                }
                Ok(Some((arguments, at)))
            }
            Partial::Inline { scanned } => {
                let window = &buf[..buf.len().min(limits.inline_bytes_max + 1)];
                let from = scanned.min(window.len());
                self.examined_bytes += (window.len() - from) as u64;
                match window[from..].iter().position(|&b| b == b'\n') {
                    Some(offset) => parse_inline_line(buf, from + offset, limits),
                    None if buf.len() > limits.inline_bytes_max => error("too big inline request"),
                    None => {
                        self.partial = Some(Partial::Inline {
                            scanned: window.len(),
                        });
                        Ok(None)
                    }
                }
            }
        }
    }

    /// One bulk-string argument starting at `at`: the argument and where the next one starts,
    /// or `None` if it has not fully arrived (nothing is kept of it: a header is at most
    /// [`HEADER_LINE_MAX`] bytes, and a body is not examined until all of it is there).
    fn argument(
        &mut self,
        buf: &[u8],
        at: usize,
        limits: &RequestLimits,
        command_name: bool,
    ) -> Result<Option<(Bytes, usize)>, ProtocolError> {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&other) => {
                return error(format!("expected '$', got '{}'", char::from(other)));
            }
        }
        let Some((header, start)) = line(buf, at + 1, HEADER_LINE_MAX)? else {
            self.examined_bytes += (buf.len() - at).min(HEADER_LINE_MAX + 2) as u64;
            return Ok(None);
        };
        self.examined_bytes += (start - at) as u64;
        let len = number(header, "bulk length")?;
        let len =
            usize::try_from(len).map_err(|_| ProtocolError("invalid bulk length".to_string()))?;
        let end = start
            .checked_add(len)
            .filter(|&end| end.saturating_add(2) <= limits.request_bytes_max)
            .ok_or_else(|| {
                ProtocolError(format!(
                    "request larger than {} bytes",
                    limits.request_bytes_max
                ))
            })?;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return error("bulk string not terminated by CRLF");
        }
        self.examined_bytes += (len + 2) as u64;
        let argument = &buf[start..end];
        let argument = match command_name.then(|| frequent_name(argument)).flatten() {
            Some(name) => name,
            None => Bytes::copy_from_slice(argument),
        };
        Ok(Some((argument, end + 2)))
    }
}

/// The inline command whose line ends with the newline at `newline`.
fn parse_inline_line(
    buf: &[u8],
    newline: usize,
    limits: &RequestLimits,
) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
    let text = &buf[..newline];
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let arguments = split_inline(text)?;
    if arguments.len() > limits.arguments_max {
        return error("too many arguments in one command");
    }
    Ok(Some((arguments, newline + 1)))
}

/// Splits a command typed as a plain line (`PING\r\n`) on whitespace, with simple quoting.
fn split_inline(text: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut arguments = Vec::new();
    let mut i = 0;
    while i < text.len() {
        while i < text.len() && text[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == text.len() {
            break;
        }
        let mut word = Vec::new();
        if text[i] == b'"' || text[i] == b'\'' {
            let quote = text[i];
            i += 1;
            loop {
                match text.get(i) {
                    None => return error("unbalanced quotes in request"),
                    Some(&c) if c == quote => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if quote == b'"' && i + 1 < text.len() => {
                        word.push(text[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        word.push(c);
                        i += 1;
                    }
                }
            }
            if text.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                return error("closing quote must be followed by a space");
            }
        } else {
            while i < text.len() && !text[i].is_ascii_whitespace() {
                word.push(text[i]);
                i += 1;
            }
        }
        arguments.push(Bytes::from(word));
    }
    Ok(arguments)
}

/// One reply value. Encoded per the connection's protocol version: RESP3 types degrade to
/// their RESP2 forms (a map becomes a flat array, null becomes a null bulk string).
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...` (the text includes the error code).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$5\r\nhello`
    Bulk(Bytes),
    /// Null (`$-1` in RESP2, `_` in RESP3).
    Null,
    /// `*n`
    Array(Vec<Reply>),
    /// `%n` in RESP3; a flat array of alternating keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// `=` verbatim text in RESP3 (INFO); a bulk string in RESP2.
    Verbatim(String),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_string())
    }

    /// An error with the generic `ERR` code.
    pub fn err(text: impl fmt::Display) -> Reply {
        Reply::Error(format!("ERR {text}"))
    }

    /// A bulk string from text.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// Appends the encoding of this reply for protocol `version` (2 or 3).
    pub fn encode(&self, version: u8, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => {
                out.push(b'+');
                out.extend(
                    s.bytes()
                        .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
                );
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(s) => {
                out.push(b'-');
                out.extend(
                    s.bytes()
                        .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
                );
                out.extend_from_slice(b"\r\n");
            }
            Reply::Integer(i) => header(out, b':', *i),
            Reply::Bulk(b) => {
                length_header(out, b'$', b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null if version >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                length_header(out, b'*', items.len());
                for item in items {
                    item.encode(version, out);
                }
            }
            Reply::Map(pairs) => {
                if version >= 3 {
                    length_header(out, b'%', pairs.len());
                } else {
                    length_header(out, b'*', pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.encode(version, out);
                    v.encode(version, out);
                }
            }
            Reply::Verbatim(text) if version >= 3 => {
                length_header(out, b'=', text.len() + 4);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(text) => Reply::Bulk(Bytes::from(text.clone())).encode(version, out),
        }
    }
}

/// Writes a RESP header: `kind`, the decimal `n`, CRLF, digit by digit (`write!` through
/// `fmt` cost a tenth of a GET's reply encoding, issue #15).
fn header(out: &mut Vec<u8>, kind: u8, n: i64) {
    out.push(kind);
    if n < 0 {
        out.push(b'-');
    }
    decimal(out, n.unsigned_abs());
    out.extend_from_slice(b"\r\n");
}

/// A length header (`$`, `*`, `%`, `=`): lengths are never negative.
fn length_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `n`.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Largest reply the client-side parser accepts in one value.
const REPLY_BYTES_MAX: usize = 512 << 20;
/// Deepest nesting the client-side parser accepts.
const REPLY_DEPTH_MAX: usize = 16;

/// Parses one reply from the front of `buf` (client side: the `ringkv` CLI and tests).
/// RESP3 types are mapped onto [`Reply`]; `Ok(None)` means more bytes are needed.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_reply_at(buf, 0, 0)
}

fn parse_reply_at(
    buf: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if depth > REPLY_DEPTH_MAX {
        return error("reply nested too deeply");
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((header, next)) = line(buf, at + 1, REPLY_BYTES_MAX)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(header).into_owned();
    match kind {
        b'+' => Ok(Some((Reply::Simple(text()), next))),
        b'-' => Ok(Some((Reply::Error(text()), next))),
        b':' => Ok(Some((Reply::Integer(number(header, "integer")?), next))),
        b'_' => Ok(Some((Reply::Null, next))),
        b'#' | b',' => Ok(Some((Reply::Simple(text()), next))),
        b'$' | b'=' | b'!' => {
            let len = number(header, "bulk length")?;
            if len < 0 {
                return Ok(Some((Reply::Null, next)));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > REPLY_BYTES_MAX {
                return error("reply too large");
            }
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            let body = Bytes::copy_from_slice(&buf[next..next + len]);
            let reply = match kind {
                b'!' => Reply::Error(String::from_utf8_lossy(&body).into_owned()),
                b'=' => Reply::Verbatim(
                    String::from_utf8_lossy(body.get(4..).unwrap_or(&[])).into_owned(),
                ),
                _ => Reply::Bulk(body),
            };
            Ok(Some((reply, next + len + 2)))
        }
        b'*' | b'~' | b'>' | b'%' => {
            let count = number(header, "aggregate length")?;
            if count < 0 {
                return Ok(Some((Reply::Null, next)));
            }
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            let elements = if kind == b'%' {
                count.saturating_mul(2)
            } else {
                count
            };
            if elements > buf.len() {
                // Every element needs at least one byte; a longer claim needs more input (or is
                // a lie, which the size bound below eventually catches).
                if buf.len() > REPLY_BYTES_MAX {
                    return error("reply too large");
                }
                return Ok(None);
            }
            let mut items = Vec::with_capacity(elements);
            let mut at = next;
            for _ in 0..elements {
                let Some((item, end)) = parse_reply_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = end;
            }
            let reply = if kind == b'%' {
                let mut pairs = Vec::with_capacity(count);
                let mut iter = items.into_iter();
                while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                    pairs.push((k, v));
                }
                Reply::Map(pairs)
            } else {
                Reply::Array(items)
            };
            Ok(Some((reply, at)))
        }
        other => error(format!("unknown reply type '{}'", char::from(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    fn parse(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
        parse_command(buf, &RequestLimits::default())
    }

    #[test]
    fn length_numbers_parse_as_i64_from_str_does_within_19_characters() {
        for text in [
            "0",
            "7",
            "+7",
            "-1",
            "0012",
            "9223372036854775807",
            "-922337203685477580",
        ] {
            assert_eq!(
                number(text.as_bytes(), "n").ok(),
                text.parse::<i64>().ok(),
                "{text}"
            );
        }
        for text in [
            "",
            "-",
            "+",
            "1a",
            " 1",
            "1 ",
            "9223372036854775808",
            "1.5",
            "--1",
        ] {
            assert!(number(text.as_bytes(), "n").is_err(), "{text:?} accepted");
        }
        // Twenty characters are refused even when i64 could hold them.
        assert!(number(b"-9223372036854775808", "n").is_err());
        assert!(number(b"00000000000000000001", "n").is_err());
    }

    /// Command names parse to the bytes sent, whether shared with a static copy or copied;
    /// only the first argument may be shared (a key or value named `GET` is copied like any).
    #[test]
    fn command_names_parse_as_sent() {
        for name in [
            "GET", "get", "Get", "SET", "set", "sEt", "GETSET", "GE", "PING",
        ] {
            let frame = format!(
                "*3\r\n${}\r\n{name}\r\n$3\r\nGET\r\n$3\r\nset\r\n",
                name.len()
            );
            let (args, used) = parse(frame.as_bytes()).expect("valid").expect("whole");
            assert_eq!(used, frame.len());
            assert_eq!(args, [name.as_bytes(), b"GET", b"set"], "{name}");
            let shared = frequent_name(b"GET").expect("GET");
            assert_ne!(
                args[1].as_ptr(),
                shared.as_ptr(),
                "a later argument is copied"
            );
        }
        assert_eq!(frequent_name(b"Get"), None);
    }

    #[test]
    fn headers_write_decimal_digits() {
        for n in [0i64, 9, 10, 1234, -1, -1000, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            header(&mut out, b':', n);
            assert_eq!(out, format!(":{n}\r\n").into_bytes());
        }
        for len in [0usize, 1, 99, 100, 1 << 20, usize::MAX] {
            let mut out = Vec::new();
            length_header(&mut out, b'$', len);
            assert_eq!(out, format!("${len}\r\n").into_bytes());
        }
    }

    /// Feeds `wire` to one parser `step` bytes at a time, as a connection receives it; the
    /// commands parsed and the parser's examined-byte count.
    fn feed(wire: &[u8], step: usize, limits: &RequestLimits) -> (Vec<Vec<Bytes>>, u64) {
        let mut parser = CommandParser::default();
        let mut buffer: Vec<u8> = Vec::new();
        let mut commands = Vec::new();
        for piece in wire.chunks(step) {
            buffer.extend_from_slice(piece);
            while let Some((arguments, used)) = parser.parse(&buffer, limits).expect("valid") {
                buffer.drain(..used);
                commands.push(arguments);
            }
        }
        assert!(buffer.is_empty(), "every byte belongs to a parsed command");
        (commands, parser.examined_bytes())
    }

    #[test]
    fn a_huge_command_sent_an_argument_per_packet_costs_linear_work() {
        let count = 1 << 16;
        let mut wire = format!("*{count}\r\n").into_bytes();
        let mut expected = Vec::with_capacity(count);
        for i in 0..count {
            let argument = format!("a{i}");
            wire.extend_from_slice(format!("${}\r\n{argument}\r\n", argument.len()).as_bytes());
            expected.push(Bytes::from(argument));
        }
        let argument_bytes = wire.len() / count;
        let (commands, examined) = feed(&wire, argument_bytes, &RequestLimits::default());
        assert_eq!(commands, vec![expected]);
        // Re-parsing from the start on every packet examines ~count²/2 arguments; resuming
        // examines each byte about once (plus a header re-read when a packet splits one).
        assert!(
            examined <= 3 * wire.len() as u64,
            "examined {examined} bytes to parse {} bytes",
            wire.len()
        );
    }

    #[test]
    fn resuming_parses_the_same_commands_for_every_segmentation() {
        let wire: &[u8] =
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let expected = vec![
            args(&["SET", "k", "hello"]),
            args(&["PING"]),
            args(&["GET", "k"]),
        ];
        for step in 1..=wire.len() {
            let (commands, examined) = feed(wire, step, &RequestLimits::default());
            assert_eq!(commands, expected, "step {step}");
            assert!(
                examined as usize <= 4 * wire.len(),
                "step {step}: {examined}"
            );
        }
    }

    #[test]
    fn a_long_inline_line_sent_a_byte_at_a_time_is_scanned_once() {
        let mut wire = b"ECHO ".to_vec();
        wire.extend(std::iter::repeat_n(b'x', 60_000));
        wire.extend_from_slice(b"\r\n");
        let (commands, examined) = feed(&wire, 1, &RequestLimits::default());
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0][1].len(), 60_000);
        assert!(examined as usize <= 2 * wire.len(), "examined {examined}");
    }

    #[test]
    fn parses_a_command_delivered_one_byte_at_a_time() {
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        for cut in 0..frame.len() {
            assert_eq!(parse(&frame[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(
            parse(frame),
            Ok(Some((args(&["SET", "k", "hello"]), frame.len())))
        );
        let mut two = frame.to_vec();
        two.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            parse(&two),
            Ok(Some((args(&["SET", "k", "hello"]), frame.len())))
        );
    }

    #[test]
    fn parses_inline_commands() {
        assert_eq!(parse(b"PING\r\n"), Ok(Some((args(&["PING"]), 6))));
        assert_eq!(
            parse(b"set k \"a b\"\n"),
            Ok(Some((args(&["set", "k", "a b"]), 12)))
        );
        assert_eq!(parse(b"\r\n"), Ok(Some((Vec::new(), 2))));
        assert_eq!(parse(b"PIN"), Ok(None));
        assert!(parse(b"set k \"unbalanced\r\n").is_err());
    }

    #[test]
    fn malformed_frames_are_errors() {
        for bad in [
            &b"*x\r\n"[..],
            b"*1\r\n:5\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$abc\r\n",
            b"*1\r\n$3\r\nabcde\r\n",
            b"*1\n",
            b"*99999999999999999999999\r\n",
            b"*1\r\n$99999999999999999999\r\n",
        ] {
            assert!(
                parse(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits_are_enforced_before_allocating() {
        let limits = RequestLimits {
            request_bytes_max: 100,
            arguments_max: 4,
            inline_bytes_max: 16,
        };
        assert!(parse_command(b"*5\r\n", &limits).is_err());
        assert!(parse_command(b"*1\r\n$200\r\n", &limits).is_err());
        assert!(parse_command(b"*1\r\n$9223372036854775807\r\n", &limits).is_err());
        assert!(parse_command(&[b'a'; 17], &limits).is_err());
        assert!(parse_command(b"*2000000000\r\n", &RequestLimits::default()).is_err());
        // A huge but allowed count does not allocate up front.
        assert_eq!(
            parse_command(b"*65536\r\n", &RequestLimits::default()),
            Ok(None)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let alphabet = b"*$:+-\r\n0123456789abc";
        for _ in 0..20_000 {
            let len = rng.gen_range(0..40);
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let _ = parse(&buf);
            let _ = parse_reply(&buf);
        }
    }

    #[test]
    fn replies_round_trip_in_both_versions() {
        let reply = Reply::Array(vec![
            Reply::ok(),
            Reply::err("boom"),
            Reply::Integer(-3),
            Reply::text("bulk"),
            Reply::Null,
            Reply::Map(vec![(Reply::text("k"), Reply::Integer(1))]),
        ]);
        let mut v3 = Vec::new();
        reply.encode(3, &mut v3);
        assert_eq!(parse_reply(&v3), Ok(Some((reply.clone(), v3.len()))));
        let mut v2 = Vec::new();
        reply.encode(2, &mut v2);
        let (parsed, used) = parse_reply(&v2).expect("ok").expect("complete");
        assert_eq!(used, v2.len());
        let Reply::Array(items) = parsed else {
            panic!("not an array")
        };
        assert_eq!(
            items[5],
            Reply::Array(vec![Reply::text("k"), Reply::Integer(1)])
        );
        for cut in 0..v3.len() {
            assert_eq!(parse_reply(&v3[..cut]), Ok(None));
        }
    }
}
