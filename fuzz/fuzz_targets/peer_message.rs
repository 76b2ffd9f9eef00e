//! The core message codec (`ringkv_core::codec::decode_message`), what a node runs on every peer
//! frame payload, plus `decode::<CausalContext>` behind the client's `CONTEXT` argument.
//!
//! Checks, on every input: never panics, never allocates past `MESSAGE_BYTES_MAX`; whatever
//! decodes re-encodes to a non-empty message that decodes to the same value
//! (`decode(encode(m)) == m`), and re-encoding is stable (`encode(decode(encode(m))) ==
//! encode(m)`: the encoding of a value is canonical even if the input was not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_core::codec::{decode, decode_message, encode, encode_message};
use ringkv_core::{CausalContext, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode_message(data) {
        let bytes = encode_message(&message);
        assert!(!bytes.is_empty(), "a decoded message does not encode");
        let again: Message = decode_message(&bytes).expect("re-encoded message decodes");
        assert_eq!(again, message, "message round trip");
        assert_eq!(encode_message(&again), bytes, "encoding not stable");
    }
    if let Ok(context) = decode::<CausalContext>(data) {
        let bytes = encode(&context);
        assert_eq!(decode::<CausalContext>(&bytes), Ok(context), "context round trip");
        // The hex form the client sees, through the node's own parser.
        let text = ringkv_node::commands::encode_context(&decode::<CausalContext>(&bytes).expect("decodes"));
        assert_eq!(
            ringkv_node::commands::decode_context(text.as_bytes()).ok(),
            decode::<CausalContext>(&bytes).ok(),
            "context hex round trip"
        );
    }
    // The client-supplied hex text itself.
    let _ = ringkv_node::commands::decode_context(data);
});
