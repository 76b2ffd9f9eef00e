//! A small blocking RESP client, for the `ringkv` CLI and for tests; plaintext or TLS.

use crate::resp::{parse_reply, Reply};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// The connection under a [`RespClient`].
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One connection to a node's client port.
pub struct RespClient {
    stream: Stream,
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
            stream: Stream::Plain(stream),
            buffer: Vec::new(),
        })
    }

    /// Connects over TLS (see [`crate::tls::client_config`]); the node's certificate must carry
    /// the host of `addr` (`host:port`). The handshake completes here, so a certificate problem
    /// is this call's error rather than the first command's.
    pub fn connect_tls(
        addr: &str,
        timeout: Duration,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<RespClient> {
        let name = crate::tls::server_name_of(addr).map_err(invalid)?;
        let mut tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        tcp.set_nodelay(true)?;
        let mut connection = rustls::ClientConnection::new(config, name).map_err(invalid)?;
        while connection.is_handshaking() {
            connection.complete_io(&mut tcp)?;
        }
        Ok(RespClient {
            stream: Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp))),
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
        self.stream.write_all(bytes)?;
        self.stream.flush()
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
