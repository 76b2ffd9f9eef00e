//! The core message codec (`ringkv_core::codec::decode`), what a node runs on every peer
//! frame payload, plus `decode_value::<CausalContext>` behind the client's `CONTEXT` argument.
//!
//! Checks, on every input: never panics, never allocates past `MESSAGE_BYTES_MAX`; whatever
//! decodes re-encodes to a non-empty message that decodes to the same value
//! (`decode(encode(m)) == m`), and re-encoding is stable (`encode(decode(encode(m))) ==
//! encode(m)`: the encoding of a value is canonical even if the input was not).
use ringkv_core::codec::{decode, decode_value, encode, encode_value};
use ringkv_core::{CausalContext, Message};

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    if let Ok(message) = decode(data) {
        let bytes = encode(&message).expect("a decoded message fits the limit when re-encoded");
        assert!(!bytes.is_empty(), "a decoded message does not encode");
        let again: Message = decode(&bytes).expect("re-encoded message decodes");
        assert_eq!(again, message, "message round trip");
        assert_eq!(encode(&again).ok(), Some(bytes), "encoding not stable");
    }
    if let Ok(context) = decode_value::<CausalContext>(data) {
        let bytes = encode_value(&context);
        assert_eq!(
            decode_value::<CausalContext>(&bytes),
            Ok(context),
            "context round trip"
        );
        // The hex form the client sees, through the node's own parser.
        let text = ringkv_node::commands::encode_context(
            &decode_value::<CausalContext>(&bytes).expect("decodes"),
        );
        assert_eq!(
            ringkv_node::commands::decode_context(text.as_bytes()).ok(),
            decode_value::<CausalContext>(&bytes).ok(),
            "context hex round trip"
        );
    }
    // The client-supplied hex text itself.
    let _ = ringkv_node::commands::decode_context(data);
}
