//! Counters against a real `ringkv-node --dev` process over RESP: `INCR`/`INCRBY`/`DECR`/
//! `DECRBY` and `GET` of a counter, a plain integer turned into a counter, the Redis errors for
//! non-integers and overflow, `SET` and `DEL` replacing a counter, and a counter surviving a
//! restart (its slot is durable before the reply).

mod common;

use common::*;
use redis::{Commands, Value};

#[test]
fn counters_count_convert_refuse_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    assert_eq!(run(&mut c, &["INCR", "hits"]).expect("incr"), Value::Int(1));
    assert_eq!(
        run(&mut c, &["INCRBY", "hits", "41"]).expect("incrby"),
        Value::Int(42)
    );
    assert_eq!(
        run(&mut c, &["DECR", "hits"]).expect("decr"),
        Value::Int(41)
    );
    assert_eq!(
        run(&mut c, &["DECRBY", "hits", "-9"]).expect("decrby"),
        Value::Int(50)
    );
    assert_eq!(run(&mut c, &["GET", "hits"]).expect("get"), bulk("50"));
    // redis-py style typed calls go through the same commands.
    let typed: i64 = c.incr("typed", 5).expect("typed incrby");
    assert_eq!(typed, 5);
    let typed: i64 = c.decr("typed", 7).expect("typed decrby");
    assert_eq!(typed, -2);

    // A plain integer becomes a counter from its value; a non-integer is refused as Redis does.
    assert_eq!(run(&mut c, &["SET", "n", "-10"]).expect("set"), Value::Okay);
    assert_eq!(
        run(&mut c, &["INCRBY", "n", "3"]).expect("incr"),
        Value::Int(-7)
    );
    assert_eq!(
        run(&mut c, &["SET", "word", "abc"]).expect("set"),
        Value::Okay
    );
    assert_eq!(
        error_text(run(&mut c, &["INCR", "word"])),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(run(&mut c, &["GET", "word"]).expect("get"), bulk("abc"));
    assert_eq!(
        error_text(run(&mut c, &["INCRBY", "hits", "x"])),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        run(&mut c, &["SET", "big", "9223372036854775806"]).expect("set"),
        Value::Okay
    );
    assert_eq!(
        run(&mut c, &["INCR", "big"]).expect("incr"),
        Value::Int(i64::MAX)
    );
    assert_eq!(
        error_text(run(&mut c, &["INCR", "big"])),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        run(&mut c, &["GET", "big"]).expect("get"),
        bulk("9223372036854775807")
    );
    assert!(error_text(run(&mut c, &["INCR"])).contains("wrong number of arguments"));

    // SET and DEL replace a counter; INCR after DEL counts from zero again.
    assert_eq!(
        run(&mut c, &["SET", "hits", "7"]).expect("set"),
        Value::Okay
    );
    assert_eq!(run(&mut c, &["GET", "hits"]).expect("get"), bulk("7"));
    assert_eq!(run(&mut c, &["INCR", "hits"]).expect("incr"), Value::Int(8));
    assert_eq!(run(&mut c, &["DEL", "hits"]).expect("del"), Value::Int(1));
    assert_eq!(run(&mut c, &["GET", "hits"]).expect("get"), Value::Nil);
    assert_eq!(run(&mut c, &["INCR", "hits"]).expect("incr"), Value::Int(1));
    assert_eq!(
        run(&mut c, &["EXISTS", "hits", "nope"]).expect("exists"),
        Value::Int(1)
    );

    // Acknowledged increments are durable: a SIGKILL and a restart keep them.
    drop(c);
    node.kill();
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev-again");
    let mut c = node.client();
    assert_eq!(run(&mut c, &["GET", "hits"]).expect("get"), bulk("1"));
    assert_eq!(run(&mut c, &["INCR", "hits"]).expect("incr"), Value::Int(2));
    assert_eq!(run(&mut c, &["GET", "n"]).expect("get"), bulk("-7"));
    drop(c);
    assert_eq!(node.terminate().code(), Some(0));
}
