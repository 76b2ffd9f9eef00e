//! The peer handshake messages (`Hello::decode`, `Challenge::decode`), parsed before a peer is
//! authenticated: the most exposed bytes on the peer port.
//!
//! Checks, on every input: never panics; whatever decodes re-encodes to exactly the input
//! (`encode(decode(b)) == b`: there is one encoding per message); and messages built from the
//! input round-trip (`decode(encode(m)) == m`) at the current protocol version, while a cluster
//! name too long for its one-byte length prefix is cut to its 255-byte prefix (the peer sees
//! another name and refuses), never decoded whole or with its tail read as the stored meaning
//! (before the fix the encoder wrote the whole name after a saturated length byte).
use arbitrary::{Arbitrary, Unstructured};
use ringkv_core::message::PROTOCOL_VERSION;
use ringkv_core::NodeId;
use ringkv_node::peer::handshake::{Challenge, Hello};

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    if let Ok(hello) = Hello::decode(data) {
        assert_eq!(hello.encode(), data, "hello re-encodes differently");
    }
    if let Ok(challenge) = Challenge::decode(data) {
        assert_eq!(challenge.encode(), data, "challenge re-encodes differently");
    }

    let mut u = Unstructured::new(data);
    let Ok((node, nonce, mac, cluster, meaning)) =
        <(u32, [u8; 32], [u8; 32], String, Vec<(String, String)>)>::arbitrary(&mut u)
    else {
        return;
    };
    // A stored meaning within its fields' limits round-trips; longer ones are cut on encoding
    // (the peer then sees a difference), so they are not expected to.
    let meaning_fits = meaning.len() <= 64
        && meaning
            .iter()
            .all(|(n, v)| n.len() <= usize::from(u8::MAX) && v.len() <= usize::from(u16::MAX));
    let hello = Hello {
        version: PROTOCOL_VERSION,
        node: NodeId(node),
        nonce,
        cluster,
        meaning: meaning.clone(),
    };
    let decoded = Hello::decode(&hello.encode());
    if hello.cluster.len() > usize::from(u8::MAX) {
        // Cut to its 255-byte prefix (or refused, if the cut splits a character): never the
        // sender's name, and never a name whose tail is read as the stored meaning.
        if let Ok(decoded) = &decoded {
            assert_ne!(
                decoded.cluster, hello.cluster,
                "an over-long cluster name decoded whole"
            );
            assert!(
                hello
                    .cluster
                    .as_bytes()
                    .starts_with(decoded.cluster.as_bytes()),
                "an over-long cluster name decoded as another name"
            );
            if meaning_fits {
                assert_eq!(
                    decoded.meaning, hello.meaning,
                    "the name's tail read as the meaning"
                );
            }
        }
    } else if meaning_fits {
        assert_eq!(decoded.ok(), Some(hello), "hello round trip");
    }
    let challenge = Challenge {
        version: PROTOCOL_VERSION,
        node: NodeId(node),
        nonce,
        mac,
        meaning,
    };
    if meaning_fits {
        assert_eq!(
            Challenge::decode(&challenge.encode()).ok(),
            Some(challenge),
            "challenge round trip"
        );
    }
}
