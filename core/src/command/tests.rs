//! One table of request/reply exchanges per command machine.

use super::*;
use crate::client::RequestError;
use crate::version::{ActorId, DataEpoch, Dot, VersionVector};
use crate::NodeId;

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn context(actor: u32, counter: u64) -> CausalContext {
    let mut clock = VersionVector::default();
    clock.raise(ActorId::new(NodeId(actor), DataEpoch(1)), counter);
    CausalContext(clock)
}

fn found(values: &[&str], ctx: CausalContext) -> ClientReply {
    ClientReply::Found {
        values: values.iter().map(|v| b(v)).collect(),
        context: ctx,
        acks: 2,
    }
}

fn not_found(ctx: CausalContext) -> ClientReply {
    ClientReply::NotFound {
        context: ctx,
        acks: 2,
    }
}

fn written() -> ClientReply {
    ClientReply::Written {
        version: WriteVersion::Dot(Dot {
            actor: ActorId::new(NodeId(1), DataEpoch(1)),
            counter: 9,
        }),
        acks: 2,
    }
}

fn get(key: &str) -> ClientRequest {
    ClientRequest::Get {
        key: b(key),
        consistency: None,
    }
}

/// Runs `command` against scripted replies: each expected request must come out in order and is
/// answered with its reply; returns the result.
fn run(
    command: Command,
    mode: ConflictMode,
    exchanges: Vec<(ClientRequest, ClientReply)>,
) -> CommandResult {
    let mut machine = CommandMachine::new(command, mode);
    for (i, (expected, reply)) in exchanges.into_iter().enumerate() {
        assert_eq!(machine.poll_result(), None, "over before exchange {i}");
        assert_eq!(machine.poll_request(), Some(expected), "request {i}");
        assert_eq!(
            machine.poll_request(),
            None,
            "a second request before a reply"
        );
        machine.handle_reply(reply);
    }
    assert_eq!(machine.poll_request(), None, "a request nobody expected");
    let result = machine.poll_result().expect("the command is over");
    assert_eq!(machine.poll_result(), None, "the result is handed out once");
    result
}

#[test]
fn get_reports_absent_one_value_or_a_conflict() {
    let cases = [
        (not_found(context(1, 1)), ValueRead::Absent),
        (found(&["v"], context(1, 1)), ValueRead::Value(b("v"))),
        (
            found(&["a", "b"], context(1, 2)),
            ValueRead::Conflict { siblings: 2 },
        ),
    ];
    for (reply, expected) in cases {
        let result = run(
            Command::Get { key: b("k") },
            ConflictMode::VectorClock,
            vec![(get("k"), reply)],
        );
        assert_eq!(result, CommandResult::Value(expected));
    }
    let unavailable = ClientReply::Unavailable { acks: 1, needed: 2 };
    let result = run(
        Command::Get { key: b("k") },
        ConflictMode::Lww,
        vec![(get("k"), unavailable.clone())],
    );
    assert_eq!(result, CommandResult::Failed(unavailable));
}

#[test]
fn set_in_lww_mode_is_one_put_without_context() {
    let put = ClientRequest::Put {
        key: b("k"),
        value: b("v"),
        context: None,
        consistency: None,
    };
    let set = Command::Set {
        key: b("k"),
        value: b("v"),
        options: SetOptions::default(),
    };
    assert_eq!(
        run(set, ConflictMode::Lww, vec![(put, written())]),
        CommandResult::Done
    );
}

#[test]
fn set_in_vector_clock_mode_writes_with_the_context_of_its_read() {
    let seen = context(2, 5);
    let put = ClientRequest::Put {
        key: b("k"),
        value: b("v"),
        context: Some(seen.clone()),
        consistency: None,
    };
    let set = Command::Set {
        key: b("k"),
        value: b("v"),
        options: SetOptions::default(),
    };
    let result = run(
        set.clone(),
        ConflictMode::VectorClock,
        vec![
            (get("k"), found(&["old1", "old2"], seen.clone())),
            (put.clone(), written()),
        ],
    );
    assert_eq!(result, CommandResult::Done);
    // Not found still carries a context (the key's tombstone history).
    let result = run(
        set.clone(),
        ConflictMode::VectorClock,
        vec![(get("k"), not_found(seen)), (put, written())],
    );
    assert_eq!(result, CommandResult::Done);
    // A failed read means no write at all.
    let unavailable = ClientReply::Unavailable { acks: 0, needed: 2 };
    let result = run(
        set,
        ConflictMode::VectorClock,
        vec![(get("k"), unavailable.clone())],
    );
    assert_eq!(result, CommandResult::Failed(unavailable));
}

#[test]
fn del_deletes_what_its_read_saw_and_counts_keys_found() {
    let seen = context(3, 4);
    let delete = ClientRequest::Delete {
        key: b("a"),
        context: Some(seen.clone()),
        consistency: None,
    };
    let del = Command::Del {
        keys: vec![b("a"), b("b")],
    };
    for mode in [ConflictMode::Lww, ConflictMode::VectorClock] {
        let result = run(
            del.clone(),
            mode,
            vec![
                (get("a"), found(&["x"], seen.clone())),
                (delete.clone(), written()),
                // Key b is absent: no delete is sent for it, and it is not counted.
                (get("b"), not_found(context(3, 1))),
            ],
        );
        assert_eq!(result, CommandResult::Count(1));
    }
    // An indeterminate delete ends the command and is reported as such.
    let indeterminate = ClientReply::Indeterminate { acks: 1, needed: 2 };
    let result = run(
        del,
        ConflictMode::VectorClock,
        vec![
            (get("a"), found(&["x"], seen)),
            (delete, indeterminate.clone()),
        ],
    );
    assert_eq!(result, CommandResult::Failed(indeterminate));
}

#[test]
fn exists_counts_keys_found() {
    let result = run(
        Command::Exists {
            keys: vec![b("a"), b("b"), b("c")],
        },
        ConflictMode::Lww,
        vec![
            (get("a"), found(&["x"], context(1, 1))),
            (get("b"), not_found(context(1, 1))),
            (get("c"), found(&["y", "z"], context(1, 1))),
        ],
    );
    assert_eq!(result, CommandResult::Count(2));
}

#[test]
fn mget_reads_every_key_in_order() {
    let result = run(
        Command::MGet {
            keys: vec![b("a"), b("b"), b("c")],
        },
        ConflictMode::VectorClock,
        vec![
            (get("a"), found(&["x"], context(1, 1))),
            (get("b"), not_found(context(1, 1))),
            (get("c"), found(&["y", "z"], context(1, 1))),
        ],
    );
    assert_eq!(
        result,
        CommandResult::Values(vec![
            ValueRead::Value(b("x")),
            ValueRead::Absent,
            ValueRead::Conflict { siblings: 2 },
        ])
    );
}

#[test]
fn mset_sets_each_pair_and_stops_at_the_first_failure() {
    let put = |key: &str, ctx: Option<CausalContext>| ClientRequest::Put {
        key: b(key),
        value: b("v"),
        context: ctx,
        consistency: None,
    };
    let mset = Command::MSet {
        pairs: vec![(b("a"), b("v")), (b("b"), b("v")), (b("c"), b("v"))],
    };
    let rejected = ClientReply::Rejected(RequestError::Busy);
    let result = run(
        mset.clone(),
        ConflictMode::Lww,
        vec![
            (put("a", None), written()),
            (put("b", None), rejected.clone()),
        ],
    );
    assert_eq!(result, CommandResult::Failed(rejected));
    let result = run(
        mset,
        ConflictMode::VectorClock,
        vec![
            (get("a"), not_found(context(1, 1))),
            (put("a", Some(context(1, 1))), written()),
            (get("b"), found(&["w"], context(2, 2))),
            (put("b", Some(context(2, 2))), written()),
            (get("c"), not_found(context(3, 3))),
            (put("c", Some(context(3, 3))), written()),
        ],
    );
    assert_eq!(result, CommandResult::Done);
}

#[test]
fn kv_get_returns_siblings_and_context_at_the_level_asked() {
    let request = ClientRequest::Get {
        key: b("k"),
        consistency: Some(Consistency::All),
    };
    let command = Command::KvGet {
        key: b("k"),
        level: Some(Consistency::All),
    };
    let result = run(
        command.clone(),
        ConflictMode::VectorClock,
        vec![(request.clone(), found(&["a", "b"], context(1, 2)))],
    );
    assert_eq!(
        result,
        CommandResult::Read {
            values: vec![b("a"), b("b")],
            context: context(1, 2),
            acks: 2,
        }
    );
    let result = run(
        command,
        ConflictMode::VectorClock,
        vec![(request, not_found(context(1, 3)))],
    );
    assert_eq!(
        result,
        CommandResult::Read {
            values: Vec::new(),
            context: context(1, 3),
            acks: 2,
        }
    );
}

#[test]
fn kv_put_and_kv_del_send_the_clients_context_as_given() {
    let ctx = Some(context(4, 7));
    let level = Some(Consistency::Quorum);
    let put = Command::KvPut {
        key: b("k"),
        value: b("v"),
        level,
        context: ctx.clone(),
    };
    let request = ClientRequest::Put {
        key: b("k"),
        value: b("v"),
        context: ctx.clone(),
        consistency: level,
    };
    let CommandResult::Written { acks, .. } =
        run(put, ConflictMode::VectorClock, vec![(request, written())])
    else {
        panic!("KV.PUT did not report its write");
    };
    assert_eq!(acks, 2);
    let del = Command::KvDel {
        key: b("k"),
        level,
        context: ctx.clone(),
    };
    let request = ClientRequest::Delete {
        key: b("k"),
        context: ctx,
        consistency: level,
    };
    // A reply of the wrong kind fails the command rather than being misread.
    let wrong = found(&["v"], context(1, 1));
    assert_eq!(
        run(
            del,
            ConflictMode::VectorClock,
            vec![(request, wrong.clone())]
        ),
        CommandResult::Failed(wrong)
    );
}

#[test]
fn a_reply_nobody_awaits_is_ignored() {
    let mut machine = CommandMachine::new(Command::Get { key: b("k") }, ConflictMode::Lww);
    // Before the request went out.
    machine.handle_reply(written());
    assert_eq!(machine.poll_request(), Some(get("k")));
    machine.handle_reply(not_found(context(1, 1)));
    // After the command is over.
    machine.handle_reply(written());
    assert_eq!(
        machine.poll_result(),
        Some(CommandResult::Value(ValueRead::Absent))
    );
}
