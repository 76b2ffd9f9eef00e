//! A small blocking RESP client, for the `ringkv` CLI and for tests.

use crate::resp::{parse_reply, Reply};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One connection to a node's client port.
pub struct RespClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

impl RespClient {
    /// Connects; every read waits at most `timeout`.
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> std::io::Result<RespClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(RespClient {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Encodes a command as a RESP array of bulk strings.
    pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Sends one command and reads its reply.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Reply> {
        self.send_raw(&Self::encode(args))?;
        self.read_reply()
    }

    /// Writes bytes as they are (pipelines, malformed input in tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the next reply. End of stream before a whole reply is `UnexpectedEof`.
    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        loop {
            if let Some((reply, used)) = parse_reply(&self.buffer).map_err(invalid)? {
                self.buffer.drain(..used);
                return Ok(reply);
            }
            let mut chunk = [0u8; 16 << 10];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Renders a reply the way `redis-cli` does (for humans).
pub fn render(reply: &Reply, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match reply {
        Reply::Simple(s) => out.push_str(s),
        Reply::Error(e) => {
            out.push_str("(error) ");
            out.push_str(e);
        }
        Reply::Integer(i) => out.push_str(&format!("(integer) {i}")),
        Reply::Bulk(b) => out.push_str(&format!(
            "\"{}\"",
            String::from_utf8_lossy(b).escape_debug()
        )),
        Reply::Verbatim(t) => out.push_str(t),
        Reply::Null => out.push_str("(nil)"),
        Reply::Array(items) if items.is_empty() => out.push_str("(empty array)"),
        Reply::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                    out.push_str(&pad);
                }
                out.push_str(&format!("{}) ", i + 1));
                render(item, indent + 3, out);
            }
        }
        Reply::Map(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                    out.push_str(&pad);
                }
                render(k, indent, out);
                out.push_str(" => ");
                render(v, indent + 3, out);
            }
        }
    }
}
