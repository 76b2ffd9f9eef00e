//! What can go wrong, typed by what the caller may do about it: above all, whether the request
//! is known to have had no effect (safe to retry) or may have taken effect (never retried here).

use std::fmt;

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No node could be reached (every candidate refused or reset the connection before the
    /// request was sent, or a read's attempts all failed): no effect.
    Unreachable {
        /// Addresses tried, in order.
        tried: Vec<String>,
        /// The last failure.
        last: String,
    },
    /// A write whose outcome is unknown: the node said `INDETERMINATE`, or the connection
    /// failed or timed out after the request was sent. It may or may not take effect; the
    /// client never retries it (a retry could apply it twice, or resurrect it after a later
    /// write).
    Indeterminate(String),
    /// `UNAVAILABLE`: too few replicas answered; nothing changed (retried on the next replica
    /// first; this is the last refusal).
    Unavailable(String),
    /// `BUSY`: the cluster is overloaded; nothing was written (retried on the next replica
    /// first; this is the last refusal). Back off before retrying.
    Busy(String),
    /// `CONFLICT`: concurrent values; read them with `KV.GET` and resolve with its context.
    Conflict(String),
    /// `CLUSTERDOWN`: the node's ring has no members.
    ClusterDown(String),
    /// `NOAUTH` / `WRONGPASS`.
    Auth(String),
    /// Any other error reply (`ERR` and prefixes this client does not know): the request was
    /// refused as given; not retried.
    Server {
        /// The first word of the error (`ERR`, ...).
        prefix: String,
        /// The whole error text.
        message: String,
    },
    /// A reply the client did not understand (for a write, see [`Error::Indeterminate`]).
    Protocol(String),
}

impl Error {
    /// The typed error for the text of a RESP error reply.
    pub fn from_reply(text: &str) -> Error {
        let prefix = text.split_whitespace().next().unwrap_or("").to_string();
        let message = text.to_string();
        match prefix.as_str() {
            "UNAVAILABLE" => Error::Unavailable(message),
            "INDETERMINATE" => Error::Indeterminate(message),
            "BUSY" => Error::Busy(message),
            "CONFLICT" => Error::Conflict(message),
            "CLUSTERDOWN" => Error::ClusterDown(message),
            "NOAUTH" | "WRONGPASS" => Error::Auth(message),
            _ => Error::Server { prefix, message },
        }
    }

    /// True when the request is known to have had no effect, so sending it again is safe.
    pub fn had_no_effect(&self) -> bool {
        match self {
            Error::Indeterminate(_) | Error::Protocol(_) => false,
            Error::Unreachable { .. }
            | Error::Unavailable(_)
            | Error::Busy(_)
            | Error::Conflict(_)
            | Error::ClusterDown(_)
            | Error::Auth(_)
            | Error::Server { .. } => true,
        }
    }

    /// True for refusals another replica may not give (tried there before giving up).
    pub(crate) fn worth_another_replica(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Busy(_) | Error::ClusterDown(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable { tried, last } => {
                write!(f, "no node reachable (tried {}): {last}", tried.join(", "))
            }
            Error::Indeterminate(why) => write!(f, "outcome unknown: {why}"),
            Error::Unavailable(m)
            | Error::Busy(m)
            | Error::Conflict(m)
            | Error::ClusterDown(m)
            | Error::Auth(m) => write!(f, "{m}"),
            Error::Server { message, .. } => write!(f, "{message}"),
            Error::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_prefixes_map_to_types() {
        let cases = [
            (
                "UNAVAILABLE only 1 of 2 replicas answered in time; nothing changed",
                true,
            ),
            (
                "INDETERMINATE only 1 of 2 replicas acknowledged durably in time",
                false,
            ),
            ("BUSY the cluster is overloaded", true),
            ("CONFLICT the key has 2 concurrent values", true),
            ("CLUSTERDOWN the ring has no members", true),
            ("NOAUTH Authentication required.", true),
            ("ERR syntax error", true),
            ("SOMETHINGNEW later", true),
        ];
        for (text, no_effect) in cases {
            let error = Error::from_reply(text);
            assert_eq!(error.had_no_effect(), no_effect, "{text}");
            assert!(error.to_string().ends_with(text), "{error}");
        }
        assert!(matches!(
            Error::from_reply("INDETERMINATE x"),
            Error::Indeterminate(_)
        ));
        assert_eq!(
            Error::from_reply("WRONGTYPE Operation against a key"),
            Error::Server {
                prefix: "WRONGTYPE".into(),
                message: "WRONGTYPE Operation against a key".into()
            }
        );
        assert!(Error::from_reply("BUSY x").worth_another_replica());
        assert!(!Error::from_reply("ERR x").worth_another_replica());
        assert!(!Error::from_reply("INDETERMINATE x").worth_another_replica());
    }
}
