//! The mutual peer handshake, run on every new connection before anything else.
//!
//! ```text
//! dialer   → acceptor  HELLO      magic, protocol version, dialer id, nonce_d, cluster name,
//!                                 stored meaning
//! acceptor → dialer    CHALLENGE  magic, protocol version, acceptor id, nonce_a, mac_a,
//!                                 stored meaning
//! dialer   → acceptor  PROOF      mac_d
//! acceptor → dialer    WELCOME
//! mac_x = HMAC-SHA256(secret, role_x | version | cluster name | dialer id | acceptor id |
//!                     nonce_d | nonce_a | stored meaning)
//! ```
//! The stored meaning is the list of settings that change what stored bytes mean
//! ([`StoredMeaning`]: conflict mode, partitioner, ring parameters, formats). Two nodes that
//! disagree on one would misread each other's records or place keys differently, so each side
//! refuses the other naming the setting and both values; the acceptor sends its challenge first
//! so that both ends can log the reason.
//! Both nonces are fresh random 32-byte values, so neither MAC can be replayed; the role label
//! keeps an acceptor's MAC from serving as a dialer's proof; binding the cluster name and both
//! ids means a node of another cluster or a peer claiming someone else's id is refused even if it
//! shares the secret. Comparisons are constant-time (`hmac`'s `verify_slice`).
//!
//! The messages are parsed by pure functions (tested on bytes); the async halves only move them.

use super::frame::{encode_frame, read_frame, FrameError};
use crate::storage::{MeaningMismatch, StoredMeaning};
use hmac::{Hmac, Mac};
use rand::RngCore;
use ringkv_core::message::PROTOCOL_VERSION;
use ringkv_core::NodeId;
use sha2::Sha256;
use std::collections::BTreeSet;
use std::fmt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

const HELLO_MAGIC: &[u8; 4] = b"RKVH";
const CHALLENGE_MAGIC: &[u8; 4] = b"RKVC";
const WELCOME: &[u8; 4] = b"RKVW";
const NONCE_BYTES: usize = 32;
const MAC_BYTES: usize = 32;
/// Largest handshake frame (the stored meaning lists one entry per datacenter).
const HANDSHAKE_FRAME_MAX: usize = 4096;
/// Most settings in an announced stored meaning.
const MEANING_SETTINGS_MAX: usize = 64;

/// What a node needs to authenticate peers.
#[derive(Clone)]
pub struct PeerAuth {
    /// This node.
    pub node_id: NodeId,
    /// The cluster name both sides must share.
    pub cluster_name: String,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// Ids allowed to connect (static membership).
    pub members: BTreeSet<NodeId>,
    /// What this node's stored bytes mean; a peer must announce the same.
    pub meaning: StoredMeaning,
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerAuth")
            .field("node_id", &self.node_id)
            .field("cluster_name", &self.cluster_name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a handshake failed; the connection is closed and the reason logged.
#[derive(Debug)]
pub enum HandshakeError {
    /// Not a ringkv peer (wrong magic or shape).
    Malformed(&'static str),
    /// Another protocol version.
    Version {
        /// Theirs.
        theirs: u16,
    },
    /// Another cluster.
    Cluster {
        /// Theirs.
        theirs: String,
    },
    /// An id that is not a member of this cluster (or is our own).
    UnknownPeer(NodeId),
    /// The acceptor is not the node we dialed.
    UnexpectedPeer {
        /// The node we meant to reach.
        expected: NodeId,
        /// The node that answered.
        got: NodeId,
    },
    /// The other side does not hold the cluster secret.
    BadProof,
    /// The other side is configured with a different value of a setting that changes what
    /// stored bytes mean (`stored` is the peer's value, `configured` ours).
    StoredMeaning(MeaningMismatch),
    /// The other side closed the connection (it refused us; its log says why).
    Refused,
    /// Framing or IO failed.
    Frame(FrameError),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed(what) => write!(f, "not a ringkv peer: {what}"),
            HandshakeError::Version { theirs } => write!(
                f,
                "peer speaks protocol version {theirs}, this node speaks {PROTOCOL_VERSION}"
            ),
            HandshakeError::Cluster { theirs } => {
                write!(f, "peer belongs to cluster `{theirs}`")
            }
            HandshakeError::UnknownPeer(id) => write!(f, "node {id} is not a configured member"),
            HandshakeError::UnexpectedPeer { expected, got } => {
                write!(f, "dialed {expected} but {got} answered")
            }
            HandshakeError::BadProof => {
                write!(
                    f,
                    "peer failed the challenge: it does not hold the cluster secret"
                )
            }
            HandshakeError::StoredMeaning(m) => write!(
                f,
                "peer is configured with `{}` = {:?} but this node with {:?}; that setting \
                 changes what stored bytes mean, so the nodes refuse each other",
                m.setting, m.stored, m.configured
            ),
            HandshakeError::Refused => write!(f, "peer closed the connection during the handshake"),
            HandshakeError::Frame(e) => write!(f, "handshake framing: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed => HandshakeError::Refused,
            FrameError::Io(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                HandshakeError::Refused
            }
            other => HandshakeError::Frame(other),
        }
    }
}

/// The dialer's opening message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// The dialer.
    pub node: NodeId,
    /// Its nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// Its cluster name.
    pub cluster: String,
    /// Its stored meaning, as (setting, value) pairs.
    pub meaning: Vec<(String, String)>,
}

/// The acceptor's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Protocol version.
    pub version: u16,
    /// The acceptor.
    pub node: NodeId,
    /// Its nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// Its MAC.
    pub mac: [u8; MAC_BYTES],
    /// Its stored meaning, as (setting, value) pairs.
    pub meaning: Vec<(String, String)>,
}

/// The announced form of a stored meaning.
pub fn announced(meaning: &StoredMeaning) -> Vec<(String, String)> {
    meaning
        .settings()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// Appends `meaning`: a count, then each name (u8 length) and value (u16 length). Lengths
/// beyond the fields are cut, which only makes the peer see a difference.
fn encode_meaning(meaning: &[(String, String)], out: &mut Vec<u8>) {
    let count = meaning.len().min(MEANING_SETTINGS_MAX);
    out.push(u8::try_from(count).unwrap_or(u8::MAX));
    for (name, value) in &meaning[..count] {
        let name = &name.as_bytes()[..name.len().min(usize::from(u8::MAX))];
        let value = &value.as_bytes()[..value.len().min(usize::from(u16::MAX))];
        out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(name);
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(value);
    }
}

fn text(bytes: &[u8]) -> Result<String, HandshakeError> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| HandshakeError::Malformed("stored meaning is not UTF-8"))
}

fn decode_meaning(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, HandshakeError> {
    let count = usize::from(r.take(1)?[0]);
    if count > MEANING_SETTINGS_MAX {
        return Err(HandshakeError::Malformed(
            "too many stored-meaning settings",
        ));
    }
    let mut meaning = Vec::with_capacity(count);
    for _ in 0..count {
        let name_len = usize::from(r.take(1)?[0]);
        let name = text(r.take(name_len)?)?;
        let value_len = usize::from(r.u16()?);
        let value = text(r.take(value_len)?)?;
        meaning.push((name, value));
    }
    Ok(meaning)
}

impl Hello {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.cluster.len());
        out.extend_from_slice(HELLO_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.node.0.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        // A name longer than its one-byte length prefix is cut, as `encode_meaning` cuts: the
        // peer then reads another name (or invalid UTF-8) and refuses. Writing the whole name
        // after a saturated length let the name's tail be parsed as the stored-meaning list,
        // so a crafted name could decode as another valid hello (found by the fuzzer). The
        // configuration allows 64 bytes, so a node never sends such a name.
        let cluster = &self.cluster.as_bytes()[..self.cluster.len().min(usize::from(u8::MAX))];
        out.push(u8::try_from(cluster.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(cluster);
        encode_meaning(&self.meaning, &mut out);
        out
    }

    /// Parses the message; the version is checked before anything else so a peer of another
    /// version gets a clear reason.
    pub fn decode(bytes: &[u8]) -> Result<Hello, HandshakeError> {
        let mut r = Reader(bytes);
        if r.take(4)? != HELLO_MAGIC {
            return Err(HandshakeError::Malformed("bad hello magic"));
        }
        let version = r.u16()?;
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version { theirs: version });
        }
        let node = NodeId(r.u32()?);
        let nonce = r.array()?;
        let len = usize::from(r.take(1)?[0]);
        let cluster = std::str::from_utf8(r.take(len)?)
            .map_err(|_| HandshakeError::Malformed("cluster name is not UTF-8"))?
            .to_string();
        let meaning = decode_meaning(&mut r)?;
        r.end()?;
        Ok(Hello {
            version,
            node,
            nonce,
            cluster,
            meaning,
        })
    }
}

impl Challenge {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        out.extend_from_slice(CHALLENGE_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.node.0.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.mac);
        encode_meaning(&self.meaning, &mut out);
        out
    }

    /// Parses the message.
    pub fn decode(bytes: &[u8]) -> Result<Challenge, HandshakeError> {
        let mut r = Reader(bytes);
        if r.take(4)? != CHALLENGE_MAGIC {
            return Err(HandshakeError::Malformed("bad challenge magic"));
        }
        let version = r.u16()?;
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version { theirs: version });
        }
        let node = NodeId(r.u32()?);
        let nonce = r.array()?;
        let mac = r.array()?;
        let meaning = decode_meaning(&mut r)?;
        r.end()?;
        Ok(Challenge {
            version,
            node,
            nonce,
            mac,
            meaning,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandshakeError> {
        if self.0.len() < n {
            return Err(HandshakeError::Malformed("truncated handshake message"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, HandshakeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, HandshakeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], HandshakeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn end(&self) -> Result<(), HandshakeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(HandshakeError::Malformed(
                "trailing bytes in handshake message",
            ))
        }
    }
}

/// Which side a MAC proves.
#[derive(Clone, Copy)]
enum Role {
    Dialer,
    Acceptor,
}

fn keyed(
    auth: &PeerAuth,
    role: Role,
    dialer: NodeId,
    acceptor: NodeId,
    nd: &[u8],
    na: &[u8],
) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&auth.secret)
        .expect("HMAC accepts keys of any length");
    mac.update(match role {
        Role::Dialer => b"ringkv/peer/dialer\0",
        Role::Acceptor => b"ringkv/peer/acceptor",
    });
    mac.update(&PROTOCOL_VERSION.to_le_bytes());
    mac.update(&[u8::try_from(auth.cluster_name.len()).unwrap_or(u8::MAX)]);
    mac.update(auth.cluster_name.as_bytes());
    mac.update(&dialer.0.to_le_bytes());
    mac.update(&acceptor.0.to_le_bytes());
    mac.update(nd);
    mac.update(na);
    // Both sides bind their own meaning: equal when the handshake gets this far, so a changed
    // announcement in transit fails the proof.
    let mut meaning = Vec::new();
    encode_meaning(&announced(&auth.meaning), &mut meaning);
    mac.update(&meaning);
    mac
}

fn sign(
    auth: &PeerAuth,
    role: Role,
    dialer: NodeId,
    acceptor: NodeId,
    nd: &[u8],
    na: &[u8],
) -> [u8; MAC_BYTES] {
    let mut out = [0u8; MAC_BYTES];
    out.copy_from_slice(
        &keyed(auth, role, dialer, acceptor, nd, na)
            .finalize()
            .into_bytes(),
    );
    out
}

fn verify(
    auth: &PeerAuth,
    role: Role,
    dialer: NodeId,
    acceptor: NodeId,
    nd: &[u8],
    na: &[u8],
    mac: &[u8],
) -> Result<(), HandshakeError> {
    keyed(auth, role, dialer, acceptor, nd, na)
        .verify_slice(mac)
        .map_err(|_| HandshakeError::BadProof)
}

fn nonce() -> [u8; NONCE_BYTES] {
    let mut out = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, payload: &[u8]) -> Result<(), HandshakeError> {
    let mut frame = Vec::with_capacity(payload.len() + 8);
    encode_frame(payload, &mut frame);
    writer
        .write_all(&frame)
        .await
        .map_err(|e| HandshakeError::Frame(FrameError::Io(e)))
}

/// Runs the dialer's side against `expected`.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &PeerAuth,
    expected: NodeId,
) -> Result<(), HandshakeError> {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        node: auth.node_id,
        nonce: nonce(),
        cluster: auth.cluster_name.clone(),
        meaning: announced(&auth.meaning),
    };
    send(stream, &hello.encode()).await?;
    let challenge = Challenge::decode(&read_frame(stream, HANDSHAKE_FRAME_MAX).await?)?;
    if challenge.node != expected {
        return Err(HandshakeError::UnexpectedPeer {
            expected,
            got: challenge.node,
        });
    }
    if let Some(mismatch) = auth.meaning.first_difference(&challenge.meaning) {
        return Err(HandshakeError::StoredMeaning(mismatch));
    }
    let (nd, na) = (&hello.nonce, &challenge.nonce);
    verify(
        auth,
        Role::Acceptor,
        auth.node_id,
        expected,
        nd,
        na,
        &challenge.mac,
    )?;
    let proof = sign(auth, Role::Dialer, auth.node_id, expected, nd, na);
    send(stream, &proof).await?;
    let welcome = read_frame(stream, HANDSHAKE_FRAME_MAX).await?;
    if welcome != WELCOME {
        return Err(HandshakeError::Malformed("bad welcome"));
    }
    Ok(())
}

/// Runs the acceptor's side; returns the authenticated dialer.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &PeerAuth,
) -> Result<NodeId, HandshakeError> {
    let hello = Hello::decode(&read_frame(stream, HANDSHAKE_FRAME_MAX).await?)?;
    if hello.cluster != auth.cluster_name {
        return Err(HandshakeError::Cluster {
            theirs: hello.cluster,
        });
    }
    if hello.node == auth.node_id || !auth.members.contains(&hello.node) {
        return Err(HandshakeError::UnknownPeer(hello.node));
    }
    let challenge = Challenge {
        version: PROTOCOL_VERSION,
        node: auth.node_id,
        nonce: nonce(),
        mac: [0; MAC_BYTES],
        meaning: announced(&auth.meaning),
    };
    let (nd, na) = (&hello.nonce, &challenge.nonce);
    let challenge = Challenge {
        mac: sign(auth, Role::Acceptor, hello.node, auth.node_id, nd, na),
        ..challenge
    };
    send(stream, &challenge.encode()).await?;
    // Checked after the challenge went out, so the dialer learns the reason too.
    if let Some(mismatch) = auth.meaning.first_difference(&hello.meaning) {
        return Err(HandshakeError::StoredMeaning(mismatch));
    }
    let proof = read_frame(stream, HANDSHAKE_FRAME_MAX).await?;
    verify(
        auth,
        Role::Dialer,
        hello.node,
        auth.node_id,
        nd,
        &challenge.nonce,
        &proof,
    )?;
    send(stream, WELCOME).await?;
    Ok(hello.node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(id: u32, cluster: &str, secret: &[u8]) -> PeerAuth {
        PeerAuth {
            node_id: NodeId(id),
            cluster_name: cluster.to_string(),
            secret: secret.to_vec(),
            members: [NodeId(1), NodeId(2), NodeId(3)].into_iter().collect(),
            meaning: StoredMeaning::of(&ringkv_core::ClusterConfig::default()),
        }
    }

    async fn run(
        dialer: PeerAuth,
        acceptor: PeerAuth,
        expected: u32,
    ) -> (Result<(), HandshakeError>, Result<NodeId, HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let dial_side = async move {
            let result = dial(&mut a, &dialer, NodeId(expected)).await;
            drop(a);
            result
        };
        let accept_side = async move {
            let result = accept(&mut b, &acceptor).await;
            drop(b);
            result
        };
        tokio::join!(dial_side, accept_side)
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn members_with_the_secret_connect() {
        let (dialed, accepted) = run(auth(1, "c", SECRET), auth(2, "c", SECRET), 2).await;
        assert!(dialed.is_ok(), "{dialed:?}");
        assert_eq!(accepted.expect("accepted"), NodeId(1));
    }

    #[tokio::test]
    async fn the_wrong_secret_is_refused_both_ways() {
        let (dialed, accepted) = run(
            auth(1, "c", b"another secret, 32 bytes long.."),
            auth(2, "c", SECRET),
            2,
        )
        .await;
        assert!(
            matches!(dialed, Err(HandshakeError::BadProof)),
            "{dialed:?}"
        );
        assert!(accepted.is_err());
    }

    #[tokio::test]
    async fn other_clusters_ids_and_versions_are_refused() {
        let (_, accepted) = run(auth(1, "other", SECRET), auth(2, "c", SECRET), 2).await;
        assert!(matches!(accepted, Err(HandshakeError::Cluster { .. })));
        let (_, accepted) = run(auth(9, "c", SECRET), auth(2, "c", SECRET), 2).await;
        assert!(matches!(
            accepted,
            Err(HandshakeError::UnknownPeer(NodeId(9)))
        ));
        let (dialed, _) = run(auth(1, "c", SECRET), auth(3, "c", SECRET), 2).await;
        assert!(matches!(dialed, Err(HandshakeError::UnexpectedPeer { .. })));
        let mut hello = Hello {
            version: PROTOCOL_VERSION + 1,
            node: NodeId(1),
            nonce: [0; 32],
            cluster: "c".into(),
            meaning: Vec::new(),
        }
        .encode();
        assert!(matches!(
            Hello::decode(&hello),
            Err(HandshakeError::Version { .. })
        ));
        hello[0] = b'X';
        assert!(matches!(
            Hello::decode(&hello),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_peer_with_another_conflict_mode_is_refused_by_both_sides() {
        let mut vector_clock = auth(1, "c", SECRET);
        vector_clock.meaning.conflict = "vector-clock".into();
        let (dialed, accepted) = run(vector_clock, auth(2, "c", SECRET), 2).await;
        for (side, error) in [("dialer", dialed.err()), ("acceptor", accepted.err())] {
            match error {
                Some(HandshakeError::StoredMeaning(m)) => {
                    assert_eq!(m.setting, "replication.conflict", "{side}");
                    let text = HandshakeError::StoredMeaning(m).to_string();
                    assert!(
                        text.contains("vector-clock") && text.contains("lww"),
                        "{side}: {text}"
                    );
                }
                other => panic!("{side} did not refuse the mismatch: {other:?}"),
            }
        }
    }

    #[test]
    fn every_truncation_is_malformed_not_a_panic() {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node: NodeId(1),
            nonce: [7; 32],
            cluster: "cluster".into(),
            meaning: announced(&StoredMeaning::of(&ringkv_core::ClusterConfig::default())),
        };
        let bytes = hello.encode();
        assert_eq!(Hello::decode(&bytes).expect("decodes"), hello);
        for cut in 0..bytes.len() {
            assert!(Hello::decode(&bytes[..cut]).is_err());
        }
        let challenge = Challenge {
            version: PROTOCOL_VERSION,
            node: NodeId(2),
            nonce: [1; 32],
            mac: [2; 32],
            meaning: vec![("replication.conflict".into(), "lww".into())],
        };
        let bytes = challenge.encode();
        assert_eq!(Challenge::decode(&bytes).expect("decodes"), challenge);
        for cut in 0..bytes.len() {
            assert!(Challenge::decode(&bytes[..cut]).is_err());
        }
    }
}
