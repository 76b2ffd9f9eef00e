//! The node's client-side request parser (`ringkv_node::resp::parse_command`) and the command
//! parser behind it (`ringkv_node::commands::parse`): the first code every byte from a client
//! reaches.
//!
//! Checks, on every input, with the default limits and with tight ones:
//! - never panics; a complete command consumes between 1 and `len` bytes and its size respects
//!   `request_bytes_max` / `arguments_max`; parsing just the consumed bytes gives the same result;
//! - incremental: every strict prefix of a complete command is "need more bytes" (`Ok(None)`),
//!   never an error and never a different command (bytes arrive in arbitrary pieces);
//! - every parsed argument list goes through `commands::parse` without panicking;
//! - round trip: argument lists built from the input, encoded as RESP multibulk the way
//!   `redis-cli` sends them, parse back to the same arguments and length.
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use ringkv_node::commands;
use ringkv_node::resp::{parse_command, RequestLimits};

const TIGHT: RequestLimits = RequestLimits {
    request_bytes_max: 256,
    arguments_max: 4,
    inline_bytes_max: 32,
};

fn check(data: &[u8], limits: &RequestLimits) {
    let Ok(Some((args, used))) = parse_command(data, limits) else {
        return;
    };
    assert!(
        used >= 1 && used <= data.len(),
        "consumed {used} of {}",
        data.len()
    );
    assert!(
        args.len() <= limits.arguments_max,
        "too many arguments accepted"
    );
    if data[0] == b'*' {
        assert!(
            used <= limits.request_bytes_max,
            "request over the size limit accepted"
        );
    } else {
        assert!(
            used <= limits.inline_bytes_max + 1,
            "inline request over the limit accepted"
        );
    }
    assert_eq!(
        parse_command(&data[..used], limits),
        Ok(Some((args.clone(), used))),
        "the consumed bytes alone parse differently"
    );
    // Every strict prefix needs more bytes (all of them for short commands, a sample otherwise).
    let step = (used / 256).max(1);
    for cut in (0..used).step_by(step) {
        assert_eq!(
            parse_command(&data[..cut], limits),
            Ok(None),
            "prefix of {cut} of {used} bytes is not incomplete"
        );
    }
    let _ = commands::parse(&args);
}

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    check(data, &RequestLimits::default());
    check(data, &TIGHT);

    let mut u = Unstructured::new(data);
    let Ok(raw) = <Vec<Vec<u8>>>::arbitrary(&mut u) else {
        return;
    };
    if raw.is_empty() {
        return;
    }
    let mut wire = format!("*{}\r\n", raw.len()).into_bytes();
    for arg in &raw {
        wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        wire.extend_from_slice(arg);
        wire.extend_from_slice(b"\r\n");
    }
    let args: Vec<Bytes> = raw.into_iter().map(Bytes::from).collect();
    assert_eq!(
        parse_command(&wire, &RequestLimits::default()),
        Ok(Some((args, wire.len()))),
        "multibulk round trip"
    );
}
