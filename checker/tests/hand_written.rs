//! Small histories written by hand, each showing one behaviour.

use ringkv_checker::{
    check, check_history_text, CasInput, CasOutput, CasRegister, CheckerError, History, KvAppend,
    KvInput, KvOutput, Model, Operation, Outcome, Register, RegisterInput, RegisterOutput, Role,
    SearchLimits, Strategy, Verdict,
};

/// A determinate operation on key "x".
fn op<I, O>(
    client: u64,
    input: I,
    output: O,
    invoke_time: u64,
    return_time: u64,
) -> Operation<I, O> {
    Operation {
        client,
        key: "x".into(),
        input,
        outcome: Outcome::Returned {
            output,
            time: return_time,
        },
        invoke_time,
    }
}

/// An operation on key "x" whose outcome is unknown.
fn unknown<I, O>(client: u64, input: I, invoke_time: u64) -> Operation<I, O> {
    Operation {
        client,
        key: "x".into(),
        input,
        outcome: Outcome::Indeterminate {
            reported_time: None,
        },
        invoke_time,
    }
}

fn history<I, O>(ops: Vec<Operation<I, O>>) -> History<I, O> {
    History { operations: ops }
}

fn verdict<M: Model>(model: &M, h: &History<M::Input, M::Output>) -> Verdict {
    // Every scenario must give the same verdict with and without the pre-checks.
    let with = check(model, h, &SearchLimits::default())
        .expect("valid history")
        .verdict;
    let without = check(
        model,
        h,
        &SearchLimits {
            prechecks: false,
            ..SearchLimits::default()
        },
    )
    .expect("valid history")
    .verdict;
    assert_eq!(
        with.label(),
        without.label(),
        "pre-checks changed the verdict: {with} vs {without}"
    );
    with
}

use CasInput::{Cas, Read, Write};
use CasOutput::{CasFailed, Ok as Done};

fn read(v: Option<i64>) -> CasOutput {
    CasOutput::Read(v)
}

#[test]
fn sequential_and_concurrent_histories_pass() {
    let h = history(vec![
        op(1, Write(1), Done, 0, 1),
        op(2, Read, read(Some(1)), 2, 3),
        op(1, Cas { from: 1, to: 2 }, Done, 4, 5),
        op(2, Cas { from: 1, to: 3 }, CasFailed, 6, 7),
        op(3, Read, read(Some(2)), 8, 9),
    ]);
    assert!(verdict(&CasRegister, &h).is_linearizable());
    // A read concurrent with a write may see either value.
    for seen in [None, Some(5)] {
        let h = history(vec![
            op(1, Write(5), Done, 0, 10),
            op(2, Read, read(seen), 1, 2),
        ]);
        assert!(verdict(&CasRegister, &h).is_linearizable(), "{seen:?}");
    }
}

#[test]
fn stale_read_after_a_completed_write_fails() {
    let h = history(vec![
        op(1, Write(1), Done, 0, 1),
        op(1, Write(2), Done, 2, 3),
        op(2, Read, read(Some(1)), 4, 5),
    ]);
    let v = verdict(&CasRegister, &h);
    let Verdict::NotLinearizable { key, violation } = &v else {
        panic!("{v}")
    };
    assert_eq!(key, "x");
    let culprit = violation
        .window
        .iter()
        .find(|w| w.role == Role::Culprit)
        .expect("a culprit");
    assert_eq!(culprit.index, 2, "{v}");
}

#[test]
fn new_old_inversion_between_two_reads_fails() {
    // While write 2 is in flight, one read sees 2 and a later read (invoked after the first
    // returned) sees 1 again.
    let h = history(vec![
        op(1, Write(1), Done, 0, 1),
        op(1, Write(2), Done, 2, 20),
        op(2, Read, read(Some(2)), 3, 4),
        op(3, Read, read(Some(1)), 5, 6),
    ]);
    assert!(verdict(&CasRegister, &h).is_violation());
    // The same reads in the other order are fine.
    let h = history(vec![
        op(1, Write(1), Done, 0, 1),
        op(1, Write(2), Done, 2, 20),
        op(2, Read, read(Some(1)), 3, 4),
        op(3, Read, read(Some(2)), 5, 6),
    ]);
    assert!(verdict(&CasRegister, &h).is_linearizable());
}

#[test]
fn lost_update_fails() {
    // Two concurrent compare-and-sets from the same value cannot both apply.
    let h = history(vec![
        op(1, Write(0), Done, 0, 1),
        op(2, Cas { from: 0, to: 1 }, Done, 2, 5),
        op(3, Cas { from: 0, to: 2 }, Done, 3, 6),
    ]);
    assert!(verdict(&CasRegister, &h).is_violation());
    // Two concurrent appends, and a later get sees only one of them.
    let m = KvAppend::new();
    let (a, b, seen) = (m.intern("a"), m.intern("b"), m.intern("b"));
    let h = history(vec![
        op(1, KvInput::Append(a), KvOutput::Written, 0, 3),
        op(2, KvInput::Append(b), KvOutput::Written, 1, 4),
        op(3, KvInput::Get, KvOutput::Value(seen), 5, 6),
    ]);
    assert!(verdict(&m, &h).is_violation());
    let ab = m.intern("ab");
    let h = history(vec![
        op(1, KvInput::Append(a), KvOutput::Written, 0, 3),
        op(2, KvInput::Append(b), KvOutput::Written, 1, 4),
        op(3, KvInput::Get, KvOutput::Value(ab), 5, 6),
    ]);
    assert!(verdict(&m, &h).is_linearizable());
}

#[test]
fn indeterminate_write_may_take_effect_later_or_never() {
    // The write times out at once, yet takes effect after a read that still saw nil.
    let h = history(vec![
        unknown(1, Write(1), 0),
        op(2, Read, read(None), 5, 6),
        op(3, Read, read(Some(1)), 10, 11),
        op(3, Read, read(Some(1)), 12, 13),
    ]);
    assert!(verdict(&CasRegister, &h).is_linearizable());
    // ... or never.
    let h = history(vec![unknown(1, Write(1), 0), op(2, Read, read(None), 5, 6)]);
    assert!(verdict(&CasRegister, &h).is_linearizable());
    // But not before it was invoked.
    let h = history(vec![
        op(2, Read, read(Some(1)), 0, 1),
        unknown(1, Write(1), 5),
    ]);
    assert!(verdict(&CasRegister, &h).is_violation());
    // Nor twice: once overwritten, its value is gone.
    let h = history(vec![
        unknown(1, Write(1), 0),
        op(2, Read, read(Some(1)), 1, 2),
        op(2, Write(2), Done, 3, 4),
        op(2, Read, read(Some(1)), 5, 6),
    ]);
    assert!(verdict(&CasRegister, &h).is_violation());
}

#[test]
fn identical_indeterminate_writes_can_both_take_effect() {
    use RegisterInput::{Get, Put};
    use RegisterOutput::{Value, Written};
    let h = history(vec![
        unknown(1, Put(1), 0),
        unknown(2, Put(1), 1),
        op(3, Get, Value(1), 2, 3),
        op(3, Put(2), Written, 4, 5),
        op(3, Get, Value(1), 6, 7),
    ]);
    for strategy in [
        Strategy::DepthFirst,
        Strategy::Frontier,
        Strategy::Interleaved,
    ] {
        let limits = SearchLimits {
            strategy,
            prechecks: false,
            ..SearchLimits::default()
        };
        let outcome = check(&Register, &h, &limits).expect("valid");
        assert!(
            outcome.verdict.is_linearizable(),
            "{strategy:?}: {}",
            outcome.verdict
        );
    }
    // A third read of 1 after another overwrite needs a third write of 1: there is none.
    let mut ops = h.operations.clone();
    ops.push(op(3, Put(3), Written, 8, 9));
    ops.push(op(3, Get, Value(1), 10, 11));
    assert!(verdict(&Register, &history(ops)).is_violation());
}

#[test]
fn indeterminate_reads_and_failed_calls_constrain_nothing() {
    let h = history(vec![
        op(1, Write(1), Done, 0, 1),
        unknown(2, Read, 2),
        op(3, Read, read(Some(1)), 3, 4),
    ]);
    assert!(verdict(&CasRegister, &h).is_linearizable());
    // A failed compare-and-set observed a different value: here it could not have.
    let h = history(vec![
        op(1, Write(1), Done, 0, 1),
        op(2, Cas { from: 1, to: 2 }, CasFailed, 2, 3),
    ]);
    assert!(verdict(&CasRegister, &h).is_violation());
}

#[test]
fn ringkv_register_semantics() {
    use RegisterInput::{Delete, Get, Put};
    use RegisterOutput::{Value, Written};
    let h = history(vec![
        op(1, Get, Value(0), 0, 1),
        op(1, Put(7), Written, 2, 3),
        op(2, Get, Value(7), 4, 5),
        op(1, Delete, Written, 6, 7),
        op(2, Get, Value(0), 8, 9),
    ]);
    assert!(verdict(&Register, &h).is_linearizable());
    let h = history(vec![
        op(1, Put(7), Written, 0, 1),
        op(1, Delete, Written, 2, 3),
        op(2, Get, Value(7), 4, 5),
    ]);
    assert!(verdict(&Register, &h).is_violation());
}

#[test]
fn prechecks_explain_their_findings() {
    use RegisterInput::{Get, Put};
    use RegisterOutput::{Value, Written};
    let limits = SearchLimits::default();
    let cases: [(Vec<Operation<RegisterInput, RegisterOutput>>, &str); 3] = [
        (
            vec![op(1, Put(1), Written, 0, 1), op(2, Get, Value(9), 2, 3)],
            "never written",
        ),
        (
            vec![op(2, Get, Value(1), 0, 1), op(1, Put(1), Written, 2, 3)],
            "before any write",
        ),
        (
            vec![
                op(1, Put(1), Written, 0, 1),
                op(1, Put(2), Written, 2, 3),
                op(2, Get, Value(1), 4, 5),
            ],
            "already overwritten",
        ),
    ];
    for (ops, phrase) in cases {
        let outcome = check(&Register, &history(ops), &limits).expect("valid");
        assert_eq!(
            outcome.stats.steps, 0,
            "a pre-check should decide without searching"
        );
        let Verdict::NotLinearizable { violation, .. } = &outcome.verdict else {
            panic!("{}", outcome.verdict)
        };
        assert!(
            violation.explanation.contains(phrase),
            "{}",
            violation.explanation
        );
    }
    // Duplicate values: the second write of 1 makes the read legal.
    let h = history(vec![
        op(1, Put(1), Written, 0, 1),
        op(1, Put(2), Written, 2, 3),
        op(3, Put(1), Written, 4, 10),
        op(2, Get, Value(1), 5, 6),
    ]);
    assert!(verdict(&Register, &h).is_linearizable());
}

/// A grow-only set of bits: `Add(bit)` and `Read(bits)`. Distinct concurrent adds reach 2^n
/// states, which no register pruning applies to: an exponential search on demand.
struct Bits;

impl Model for Bits {
    type State = u64;
    type Input = Option<u64>;
    type Output = u64;

    fn init(&self) -> u64 {
        0
    }

    fn step(&self, state: u64, input: &Option<u64>, output: Option<&u64>) -> Option<u64> {
        match (input, output) {
            (Some(bit), _) => Some(state | bit),
            (None, Some(seen)) => (*seen == state).then_some(state),
            (None, None) => Some(state),
        }
    }

    fn is_read_only(&self, input: &Option<u64>) -> bool {
        input.is_none()
    }

    fn describe_operation(&self, input: &Option<u64>, output: Option<&u64>) -> String {
        format!("{input:?} {output:?}")
    }

    fn describe_state(&self, state: u64) -> String {
        format!("{state:b}")
    }
}

/// `adds` concurrent adds of distinct bits on `key`, then a read of an impossible value.
fn expensive_key(h: &mut History<Option<u64>, u64>, key: &str, adds: u64) {
    for i in 0..adds {
        h.push(Operation {
            client: i,
            key: key.into(),
            input: Some(1 << i),
            outcome: Outcome::Returned {
                output: 0,
                time: 1000,
            },
            invoke_time: i,
        });
    }
    h.push(Operation {
        client: 99,
        key: key.into(),
        input: None,
        outcome: Outcome::Returned {
            output: 1 << 63,
            time: 1002,
        },
        invoke_time: 1001,
    });
}

#[test]
fn an_expensive_key_does_not_hide_a_violation_in_another() {
    let mut h = History::new();
    expensive_key(&mut h, "a-expensive", 40);
    h.push(Operation {
        client: 7,
        key: "b-cheap".into(),
        input: None,
        outcome: Outcome::Returned { output: 5, time: 1 },
        invoke_time: 0,
    });
    let outcome = check(&Bits, &h, &SearchLimits::default()).expect("valid");
    let Verdict::NotLinearizable { key, .. } = &outcome.verdict else {
        panic!("{}", outcome.verdict)
    };
    assert_eq!(key, "b-cheap");
    assert!(outcome.stats.steps < 100_000, "{:?}", outcome.stats);
}

#[test]
fn limits_turn_into_unknown() {
    let mut h = History::new();
    expensive_key(&mut h, "a", 40);
    let steps = SearchLimits {
        steps_total_max: 200_000,
        ..SearchLimits::default()
    };
    let outcome = check(&Bits, &h, &steps).expect("valid");
    assert!(
        matches!(&outcome.verdict, Verdict::Unknown { reason } if reason.contains("step budget")),
        "{}",
        outcome.verdict
    );
    assert!(outcome.stats.steps <= 200_000);
    let memo = SearchLimits {
        memo_entries_per_key_max: 5_000,
        ..SearchLimits::default()
    };
    let outcome = check(&Bits, &h, &memo).expect("valid");
    assert!(
        matches!(&outcome.verdict, Verdict::Unknown { reason } if reason.contains("memo limit")),
        "{}",
        outcome.verdict
    );
    // A violation elsewhere still wins over giving up.
    h.push(Operation {
        client: 7,
        key: "b".into(),
        input: None,
        outcome: Outcome::Returned { output: 5, time: 1 },
        invoke_time: 0,
    });
    assert!(check(&Bits, &h, &memo)
        .expect("valid")
        .verdict
        .is_violation());
}

#[test]
fn malformed_histories_are_errors_not_panics() {
    let h = history(vec![op(1, Write(1), Done, 5, 4)]);
    assert!(check(&CasRegister, &h, &SearchLimits::default()).is_err());
    let limits = SearchLimits::default();
    assert!(matches!(
        check_history_text(
            "cas-register",
            "INFO  jepsen.util - 0\t:ok\t:read\t1",
            &limits
        ),
        Err(CheckerError::Parse(_))
    ));
    assert!(matches!(
        check_history_text("kv-append", "{:process", &limits),
        Err(CheckerError::Parse(_))
    ));
    assert!(matches!(
        check_history_text("register", "1 2 3", &limits),
        Err(CheckerError::Parse(_))
    ));
    assert!(matches!(
        check_history_text("nope", "", &limits),
        Err(CheckerError::UnknownModel(_))
    ));
    // Empty histories are linearizable.
    for model in ["cas-register", "kv-append", "register"] {
        assert!(check_history_text(model, "", &limits)
            .expect("empty parses")
            .verdict
            .is_linearizable());
    }
}

#[test]
fn report_prints_verdict_and_timeline_deterministically() {
    let text = "INFO  jepsen.util - 0\t:invoke\t:write\t1\n\
                INFO  jepsen.util - 0\t:ok\t:write\t1\n\
                INFO  jepsen.util - 1\t:invoke\t:write\t2\n\
                INFO  jepsen.util - 2\t:invoke\t:read\tnil\n\
                INFO  jepsen.util - 2\t:ok\t:read\t2\n\
                INFO  jepsen.util - 3\t:invoke\t:read\tnil\n\
                INFO  jepsen.util - 3\t:ok\t:read\t1\n\
                INFO  jepsen.util - 1\t:info\t:write\t:timed-out\n";
    let limits = SearchLimits::default();
    let first = check_history_text("cas-register", text, &limits).expect("parses");
    let printed = first.to_string();
    assert!(
        printed.starts_with("verdict: not linearizable (key \"etcd\""),
        "{printed}"
    );
    assert!(printed.contains("client 3"), "{printed}");
    assert!(printed.contains("legend:"), "{printed}");
    let second = check_history_text("cas-register", text, &limits).expect("parses");
    assert_eq!(first.timeline, second.timeline);
    assert_eq!(first.verdict, second.verdict);
    assert_eq!(first.stats, second.stats);
    let page = first.render_html("demo");
    assert!(page.contains("culprit") && page.contains("</html>"));
    let ok = check_history_text("cas-register", "", &limits)
        .expect("parses")
        .to_string();
    assert!(ok.starts_with("verdict: linearizable ("), "{ok}");
}
