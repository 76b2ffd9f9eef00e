//! Differential test: the checker against a brute-force oracle on random small histories.
//!
//! The oracle enumerates every order of the operations that respects real time (determinate
//! operations must all be placed, indeterminate ones may be placed or left out) and runs each
//! against its own, independent statement of the model's semantics.

use ringkv_checker::{
    check, CasInput, CasOutput, CasRegister, History, KvAppend, KvInput, KvOutput, Model,
    Operation, Outcome, Register, RegisterInput, RegisterOutput, SearchLimits, Strategy, Verdict,
};

/// splitmix64: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Invocation and return times for `n` operations of up to 4 clients; `None` = indeterminate.
/// A client issues its next operation after its previous one returned (or, after an unknown
/// outcome, after it was invoked). Times are small so that ties and overlaps are common.
fn timings(rng: &mut Rng, n: usize) -> Vec<(u64, u64, Option<u64>)> {
    let clients = 1 + rng.below(4);
    let mut free = vec![0u64; clients as usize];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let client = rng.below(clients);
        let invoke = free[client as usize] + rng.below(3);
        let ret = invoke + rng.below(4);
        let indeterminate = rng.chance(20);
        free[client as usize] = if indeterminate { invoke + 1 } else { ret + 1 };
        out.push((client, invoke, (!indeterminate).then_some(ret)));
    }
    out
}

fn outcome<O>(output: O, ret: Option<u64>) -> Outcome<O> {
    match ret {
        Some(time) => Outcome::Returned { output, time },
        None => Outcome::Indeterminate {
            reported_time: None,
        },
    }
}

/// Brute force: is there an order of the operations, respecting real time, in which every
/// determinate operation is placed and `apply` accepts each placed operation?
fn oracle<S: Clone>(
    times: &[(u64, Option<u64>)],
    initial: S,
    apply: &dyn Fn(&S, usize) -> Option<S>,
) -> bool {
    fn search<S: Clone>(
        times: &[(u64, Option<u64>)],
        placed: &mut Vec<bool>,
        state: &S,
        apply: &dyn Fn(&S, usize) -> Option<S>,
    ) -> bool {
        let all_determinate_placed = times
            .iter()
            .zip(placed.iter())
            .all(|(t, &p)| p || t.1.is_none());
        if all_determinate_placed {
            return true;
        }
        for b in 0..times.len() {
            if placed[b] {
                continue;
            }
            // Every determinate operation that returned before b was invoked must be placed.
            let ready = (0..times.len())
                .all(|a| placed[a] || times[a].1.is_none_or(|ret| ret >= times[b].0));
            if !ready {
                continue;
            }
            if let Some(next) = apply(state, b) {
                placed[b] = true;
                let found = search(times, placed, &next, apply);
                placed[b] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    search(times, &mut vec![false; times.len()], &initial, apply)
}

/// The verdict under each strategy, with and without pre-checks.
fn verdicts<M: Model>(model: &M, history: &History<M::Input, M::Output>) -> Vec<(String, bool)> {
    let mut results = Vec::new();
    for strategy in [
        Strategy::Interleaved,
        Strategy::DepthFirst,
        Strategy::Frontier,
    ] {
        for prechecks in [true, false] {
            let limits = SearchLimits {
                prechecks,
                strategy,
                ..SearchLimits::default()
            };
            let outcome = check(model, history, &limits).expect("valid history");
            let linearizable = match outcome.verdict {
                Verdict::Linearizable => true,
                Verdict::NotLinearizable { .. } => false,
                Verdict::Unknown { reason } => {
                    panic!("unknown verdict on a tiny history: {reason}")
                }
            };
            results.push((
                format!("{strategy:?}, pre-checks {prechecks}"),
                linearizable,
            ));
        }
    }
    results
}

fn assert_agree(
    case: usize,
    expected: bool,
    got: &[(String, bool)],
    history: &dyn std::fmt::Debug,
) {
    for (setting, linearizable) in got {
        assert_eq!(
            *linearizable, expected,
            "case {case} ({setting}): {history:#?}"
        );
    }
}

fn times_of<I, O>(history: &History<I, O>) -> Vec<(u64, Option<u64>)> {
    history
        .operations
        .iter()
        .map(|op| (op.invoke_time, op.return_time()))
        .collect()
}

#[test]
fn register_matches_brute_force() {
    let mut rng = Rng(1);
    let mut violations = 0;
    for case in 0..4000 {
        let n = 1 + rng.below(8) as usize;
        let mut history = History::new();
        for (client, invoke, ret) in timings(&mut rng, n) {
            let (input, output) = match rng.below(10) {
                0..=3 => (
                    RegisterInput::Put(1 + rng.below(3)),
                    RegisterOutput::Written,
                ),
                4 => (RegisterInput::Delete, RegisterOutput::Written),
                _ => (RegisterInput::Get, RegisterOutput::Value(rng.below(4))),
            };
            history.push(Operation {
                client,
                key: "k".into(),
                input,
                outcome: outcome(output, ret),
                invoke_time: invoke,
            });
        }
        let ops = history.operations.clone();
        let apply = |state: &u64, i: usize| -> Option<u64> {
            match (ops[i].input, ops[i].output()) {
                (RegisterInput::Put(v), _) => Some(v),
                (RegisterInput::Delete, _) => Some(0),
                (RegisterInput::Get, Some(RegisterOutput::Value(v))) => {
                    (*v == *state).then_some(*state)
                }
                (RegisterInput::Get, _) => Some(*state),
            }
        };
        let expected = oracle(&times_of(&history), 0u64, &apply);
        assert_agree(case, expected, &verdicts(&Register, &history), &history);
        violations += usize::from(!expected);
    }
    // Both verdicts must be well represented for the test to mean anything.
    assert!(
        (800..3200).contains(&violations),
        "{violations} violations of 4000"
    );
}

#[test]
fn cas_register_matches_brute_force() {
    let mut rng = Rng(2);
    let mut violations = 0;
    for case in 0..4000 {
        let n = 1 + rng.below(8) as usize;
        let mut history = History::new();
        let value = |rng: &mut Rng| -> Option<i64> {
            let v = rng.below(3) as i64;
            (v != 0).then_some(v)
        };
        for (client, invoke, ret) in timings(&mut rng, n) {
            let (input, output) = match rng.below(10) {
                0..=2 => (CasInput::Write(1 + rng.below(2) as i64), CasOutput::Ok),
                3..=5 => {
                    let cas = CasInput::Cas {
                        from: 1 + rng.below(2) as i64,
                        to: 1 + rng.below(2) as i64,
                    };
                    (
                        cas,
                        if rng.chance(50) {
                            CasOutput::Ok
                        } else {
                            CasOutput::CasFailed
                        },
                    )
                }
                _ => (CasInput::Read, CasOutput::Read(value(&mut rng))),
            };
            history.push(Operation {
                client,
                key: "k".into(),
                input,
                outcome: outcome(output, ret),
                invoke_time: invoke,
            });
        }
        let ops = history.operations.clone();
        let apply = |state: &Option<i64>, i: usize| -> Option<Option<i64>> {
            match (ops[i].input, ops[i].output()) {
                (CasInput::Read, Some(CasOutput::Read(v))) => (*v == *state).then_some(*state),
                (CasInput::Read, _) => Some(*state),
                (CasInput::Write(v), _) => Some(Some(v)),
                (CasInput::Cas { from, .. }, Some(CasOutput::CasFailed)) => {
                    (*state != Some(from)).then_some(*state)
                }
                (CasInput::Cas { from, to }, _) => (*state == Some(from)).then_some(Some(to)),
                (CasInput::CasAbsent { .. }, Some(CasOutput::CasFailed)) => {
                    state.is_some().then_some(*state)
                }
                (CasInput::CasAbsent { to }, _) => state.is_none().then_some(Some(to)),
            }
        };
        let expected = oracle(&times_of(&history), None, &apply);
        assert_agree(case, expected, &verdicts(&CasRegister, &history), &history);
        violations += usize::from(!expected);
    }
    assert!(
        (800..3200).contains(&violations),
        "{violations} violations of 4000"
    );
}

#[test]
fn kv_append_matches_brute_force() {
    let mut rng = Rng(3);
    let mut violations = 0;
    let words = ["", "a", "b", "ab", "ba", "aa", "bab"];
    for case in 0..3000 {
        let n = 1 + rng.below(8) as usize;
        let model = KvAppend::new();
        let mut history = History::new();
        let mut texts = Vec::new();
        for (client, invoke, ret) in timings(&mut rng, n) {
            let (input, output, text) = match rng.below(10) {
                0..=3 => {
                    let t = ["a", "b"][rng.below(2) as usize];
                    (KvInput::Append(model.intern(t)), KvOutput::Written, t)
                }
                4 => {
                    let t = ["a", "b", ""][rng.below(3) as usize];
                    (KvInput::Put(model.intern(t)), KvOutput::Written, t)
                }
                _ => {
                    let t = words[rng.below(words.len() as u64) as usize];
                    (KvInput::Get, KvOutput::Value(model.intern(t)), t)
                }
            };
            texts.push(text);
            history.push(Operation {
                client,
                key: "k".into(),
                input,
                outcome: outcome(output, ret),
                invoke_time: invoke,
            });
        }
        let ops = history.operations.clone();
        let apply = |state: &String, i: usize| -> Option<String> {
            match (ops[i].input, ops[i].output()) {
                (KvInput::Get, Some(_)) => (texts[i] == state.as_str()).then(|| state.clone()),
                (KvInput::Get, None) => Some(state.clone()),
                (KvInput::Put(_), _) => Some(texts[i].to_string()),
                (KvInput::Append(_), _) => Some(format!("{state}{}", texts[i])),
            }
        };
        let expected = oracle(&times_of(&history), String::new(), &apply);
        assert_agree(case, expected, &verdicts(&model, &history), &history);
        violations += usize::from(!expected);
    }
    assert!(
        (600..2400).contains(&violations),
        "{violations} violations of 3000"
    );
}

#[test]
fn keys_are_independent() {
    // Two keys, each linearizable alone, interleaved: still linearizable; break one: not.
    let mut rng = Rng(4);
    for _ in 0..500 {
        let mut history = History::new();
        for key in ["a", "b"] {
            let mut value = 0;
            let mut t = rng.below(3);
            for _ in 0..4 {
                let (input, output) = if rng.chance(50) {
                    value = 1 + rng.below(5);
                    (RegisterInput::Put(value), RegisterOutput::Written)
                } else {
                    (RegisterInput::Get, RegisterOutput::Value(value))
                };
                history.push(Operation {
                    client: rng.below(3),
                    key: key.into(),
                    input,
                    outcome: Outcome::Returned {
                        output,
                        time: t + 1,
                    },
                    invoke_time: t,
                });
                t += 2;
            }
        }
        let limits = SearchLimits::default();
        assert!(check(&Register, &history, &limits)
            .unwrap()
            .verdict
            .is_linearizable());
        history.push(Operation {
            client: 9,
            key: "b".into(),
            input: RegisterInput::Get,
            outcome: Outcome::Returned {
                output: RegisterOutput::Value(99),
                time: 101,
            },
            invoke_time: 100,
        });
        let verdict = check(&Register, &history, &limits).unwrap().verdict;
        assert!(
            matches!(verdict, Verdict::NotLinearizable { ref key, .. } if key == "b"),
            "{verdict}"
        );
    }
}
