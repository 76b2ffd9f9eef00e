//! `SCAN`, `KEYS` and `DBSIZE` as sans-IO machines over [`ClientRequest::Scan`] and
//! [`ClientRequest::CountKeys`], for every driver (the node's RESP server and the simulator's
//! workload run the same code).
//!
//! * `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`: one page (`node::scan`). The cursor is a
//!   decimal ring position (0 starts and, returned, ends a scan), so Redis clients that parse
//!   it as an integer work. `MATCH` is applied here, on the coordinator, after the page is
//!   merged: a page may come back empty with a non-zero cursor, as Redis allows. `TYPE` other
//!   than `string` matches nothing (plain values and counters are both `string`).
//! * `KEYS pattern`: every page of a scan, refused once more than [`KEYS_RESULT_MAX`] keys
//!   match (`SCAN` has no limit).
//! * `DBSIZE`: one key count, an estimate (see `node::scan`).

use crate::client::{ClientReply, ClientRequest, Consistency};
use bytes::Bytes;

/// Most keys `KEYS` returns; past it the command fails and the client is told to `SCAN`.
pub const KEYS_RESULT_MAX: usize = 10_000;

/// Keys asked per page when `COUNT` is not given (Redis's default).
pub const SCAN_COUNT_DEFAULT: u32 = 10;

/// Keys asked per page by `KEYS`.
const KEYS_PAGE_KEYS: u32 = 1000;

/// A scan command, parsed by a driver from its own protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanCommand {
    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`.
    Scan {
        /// Where the page starts (0: a new scan).
        cursor: u64,
        /// `MATCH`: only keys matching this glob.
        pattern: Option<Bytes>,
        /// `COUNT`: about how many keys each replica examines.
        count: u32,
        /// `TYPE`: only keys of this type (`string` is the only one).
        type_name: Option<Bytes>,
        /// Level, or the cluster default read level.
        level: Option<Consistency>,
    },
    /// `KEYS pattern`.
    Keys {
        /// The glob.
        pattern: Bytes,
    },
    /// `DBSIZE`.
    DbSize,
}

/// How a scan command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanResult {
    /// `SCAN`: the next cursor (0: the scan is over) and the page's matching keys.
    Page {
        /// The cursor to pass next.
        cursor: u64,
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// `KEYS`: every matching key, in token order.
    Keys(Vec<Bytes>),
    /// `KEYS` matched more than [`KEYS_RESULT_MAX`] keys.
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// `DBSIZE`: the estimate.
    Size(u64),
    /// The reply that was not a success and ended the command.
    Failed(ClientReply),
}

/// One scan command in progress: [`Self::poll_request`], [`Self::handle_reply`],
/// [`Self::poll_result`], as the other command machines.
#[derive(Clone, Debug)]
pub struct ScanMachine {
    command: ScanCommand,
    /// The next request, when one is due.
    ready: Option<ClientRequest>,
    /// `KEYS`: the keys so far.
    keys: Vec<Bytes>,
    result: Option<ScanResult>,
    finished: bool,
}

impl ScanMachine {
    /// Starts `command`.
    pub fn new(command: ScanCommand) -> Self {
        let ready = Some(match &command {
            ScanCommand::Scan {
                cursor,
                count,
                level,
                ..
            } => ClientRequest::Scan {
                from: *cursor,
                keys_max: (*count).max(1),
                consistency: *level,
            },
            ScanCommand::Keys { .. } => ClientRequest::Scan {
                from: 0,
                keys_max: KEYS_PAGE_KEYS,
                consistency: None,
            },
            ScanCommand::DbSize => ClientRequest::CountKeys,
        });
        ScanMachine {
            command,
            ready,
            keys: Vec::new(),
            result: None,
            finished: false,
        }
    }

    /// The next request to send, once; `None` while a reply is awaited or when it is over.
    pub fn poll_request(&mut self) -> Option<ClientRequest> {
        self.ready.take()
    }

    /// The reply to the request returned last. Unexpected replies end the command as failed.
    pub fn handle_reply(&mut self, reply: ClientReply) {
        if self.finished || self.result.is_some() || self.ready.is_some() {
            return;
        }
        let result = match (&self.command, reply) {
            (
                ScanCommand::Scan {
                    pattern, type_name, ..
                },
                ClientReply::ScanPage { keys, next, .. },
            ) => {
                let keys = keys
                    .into_iter()
                    .filter(|key| matches(pattern.as_deref(), type_name.as_deref(), key))
                    .collect();
                ScanResult::Page {
                    cursor: next.unwrap_or(0),
                    keys,
                }
            }
            (ScanCommand::Keys { pattern }, ClientReply::ScanPage { keys, next, .. }) => {
                let pattern = pattern.clone();
                self.keys
                    .extend(keys.into_iter().filter(|k| glob_match(&pattern, k)));
                if self.keys.len() > KEYS_RESULT_MAX {
                    ScanResult::TooManyKeys {
                        max: KEYS_RESULT_MAX,
                    }
                } else if let Some(from) = next {
                    self.ready = Some(ClientRequest::Scan {
                        from,
                        keys_max: KEYS_PAGE_KEYS,
                        consistency: None,
                    });
                    return;
                } else {
                    ScanResult::Keys(std::mem::take(&mut self.keys))
                }
            }
            (ScanCommand::DbSize, ClientReply::KeyCount { live_keys, .. }) => {
                ScanResult::Size(live_keys)
            }
            (_, other) => ScanResult::Failed(other),
        };
        self.result = Some(result);
    }

    /// The result, once, when the command is over.
    pub fn poll_result(&mut self) -> Option<ScanResult> {
        if self.finished {
            return None;
        }
        let result = self.result.take()?;
        self.finished = true;
        Some(result)
    }
}

fn matches(pattern: Option<&[u8]>, type_name: Option<&[u8]>, key: &[u8]) -> bool {
    // Plain values and counters are both Redis strings; there is no other type.
    let type_ok = type_name.is_none_or(|t| t.eq_ignore_ascii_case(b"string"));
    type_ok && pattern.is_none_or(|p| glob_match(p, key))
}

/// Redis glob matching (`stringmatchlen`): `*` any run, `?` one byte, `[abc]`, `[^a-z]`
/// classes with ranges, `\x` a literal `x`; case-sensitive. Backtracks only to the last `*`, so
/// a hostile pattern costs O(pattern × key), never exponential time.
pub fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, k));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class_match(pattern, p, key[k]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == key[k]).then_some(p + 2),
            Some(&c) => (c == key[k]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                k += 1;
            }
            None => match star {
                Some((star_p, star_k)) => {
                    p = star_p + 1;
                    k = star_k + 1;
                    star = Some((star_p, star_k + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `byte` against the class opening at `pattern[open] == b'['`: the index after the
/// class if it matches. An unclosed class runs to the end of the pattern, as in Redis.
fn class_match(pattern: &[u8], open: usize, byte: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut found = false;
    while let Some(&c) = pattern.get(i) {
        if c == b']' {
            break;
        }
        if c == b'\\' && i + 1 < pattern.len() {
            found |= pattern[i + 1] == byte;
            i += 2;
        } else if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() {
            let (low, high) = (c.min(pattern[i + 2]), c.max(pattern[i + 2]));
            found |= (low..=high).contains(&byte);
            i += 3;
        } else {
            found |= c == byte;
            i += 1;
        }
    }
    // `i` is at the closing bracket, or past the end.
    (found != negate).then_some((i + 1).min(pattern.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("acc:scan:*", "acc:scan:12", true),
            ("acc:scan:*", "acc:other:12", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("Key", "key", false),
            ("*a*b", "xxaxxbxxb", true),
            ("*a*b", "xxaxxbxxc", false),
            ("[abc", "a", true),
        ];
        for (pattern, key, want) in table {
            assert_eq!(
                glob_match(pattern.as_bytes(), key.as_bytes()),
                *want,
                "{pattern} vs {key}"
            );
        }
        // A hostile pattern stays cheap (would be exponential with naive recursion).
        let hostile = "*a".repeat(30) + "b";
        assert!(!glob_match(hostile.as_bytes(), "a".repeat(200).as_bytes()));
    }

    fn page(keys: &[&'static str], next: Option<u64>) -> ClientReply {
        ClientReply::ScanPage {
            keys: keys
                .iter()
                .map(|k| Bytes::from_static(k.as_bytes()))
                .collect(),
            next,
            acks: 1,
        }
    }

    #[test]
    fn scan_filters_on_the_coordinator_and_maps_the_last_page_to_cursor_zero() {
        let mut machine = ScanMachine::new(ScanCommand::Scan {
            cursor: 0,
            pattern: Some(Bytes::from_static(b"a*")),
            count: 0,
            type_name: None,
            level: None,
        });
        assert_eq!(
            machine.poll_request(),
            Some(ClientRequest::Scan {
                from: 0,
                keys_max: 1,
                consistency: None
            })
        );
        assert_eq!(machine.poll_request(), None);
        machine.handle_reply(page(&["a1", "b1", "a2"], None));
        assert_eq!(
            machine.poll_result(),
            Some(ScanResult::Page {
                cursor: 0,
                keys: vec![Bytes::from_static(b"a1"), Bytes::from_static(b"a2")]
            })
        );
        assert_eq!(machine.poll_result(), None);
        let mut typed = ScanMachine::new(ScanCommand::Scan {
            cursor: 7,
            pattern: None,
            count: 10,
            type_name: Some(Bytes::from_static(b"hash")),
            level: None,
        });
        typed.poll_request();
        typed.handle_reply(page(&["a1"], Some(99)));
        assert_eq!(
            typed.poll_result(),
            Some(ScanResult::Page {
                cursor: 99,
                keys: Vec::new()
            })
        );
    }

    #[test]
    fn keys_walks_every_page_and_refuses_past_its_limit() {
        let mut machine = ScanMachine::new(ScanCommand::Keys {
            pattern: Bytes::from_static(b"k*"),
        });
        let mut pages = vec![page(&["k1", "x"], Some(5)), page(&["k2"], None)].into_iter();
        while machine.poll_result().is_none() {
            let Some(ClientRequest::Scan { .. }) = machine.poll_request() else {
                panic!("a scan request is due");
            };
            machine.handle_reply(pages.next().expect("a page"));
            if let Some(result) = machine.poll_result() {
                assert_eq!(
                    result,
                    ScanResult::Keys(vec![Bytes::from_static(b"k1"), Bytes::from_static(b"k2")])
                );
                break;
            }
        }
        let many: Vec<Bytes> = (0..=KEYS_RESULT_MAX)
            .map(|i| Bytes::from(format!("k{i}")))
            .collect();
        let mut machine = ScanMachine::new(ScanCommand::Keys {
            pattern: Bytes::from_static(b"*"),
        });
        machine.poll_request();
        machine.handle_reply(ClientReply::ScanPage {
            keys: many,
            next: Some(1),
            acks: 1,
        });
        assert_eq!(
            machine.poll_result(),
            Some(ScanResult::TooManyKeys {
                max: KEYS_RESULT_MAX
            })
        );
        let mut size = ScanMachine::new(ScanCommand::DbSize);
        assert_eq!(size.poll_request(), Some(ClientRequest::CountKeys));
        let unavailable = ClientReply::Unavailable { acks: 0, needed: 1 };
        size.handle_reply(unavailable.clone());
        assert_eq!(size.poll_result(), Some(ScanResult::Failed(unavailable)));
    }
}
