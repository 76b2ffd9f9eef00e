//! The RESP2/RESP3 reply parser (`ringkv_node::resp::parse_reply`), run by the `ringkv` CLI and
//! the tests on bytes from a server.
//!
//! Checks, on every input: never panics (nesting is bounded, lengths are checked before
//! allocating); a complete reply consumes at most the input; its RESP3 encoding parses back
//! completely, and after that one normalisation (e.g. CR/LF in simple strings become spaces)
//! encode and parse are exact inverses (`parse(encode(r)) == r`), in RESP3; RESP2 encodings
//! parse completely too.
use ringkv_node::resp::{parse_reply, Reply};

fn encoded(reply: &Reply, version: u8) -> Vec<u8> {
    let mut out = Vec::new();
    reply.encode(version, &mut out);
    out
}

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    let Ok(Some((reply, used))) = parse_reply(data) else {
        return;
    };
    assert!(used <= data.len(), "consumed past the end");
    let v3 = encoded(&reply, 3);
    let (normal, n) = parse_reply(&v3)
        .expect("own RESP3 encoding parses")
        .expect("own RESP3 encoding is complete");
    assert_eq!(n, v3.len(), "own RESP3 encoding parsed partly");
    let again = encoded(&normal, 3);
    assert_eq!(
        parse_reply(&again),
        Ok(Some((normal.clone(), again.len()))),
        "RESP3 round trip"
    );
    let v2 = encoded(&normal, 2);
    let parsed = parse_reply(&v2).expect("own RESP2 encoding parses");
    assert_eq!(
        parsed.map(|(_, n)| n),
        Some(v2.len()),
        "own RESP2 encoding incomplete"
    );
}
