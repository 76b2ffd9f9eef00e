//! TTL commands against a real `ringkv-node --dev` over RESP: `SET` with `EX`/`PX`/`EXAT`/
//! `KEEPTTL`, `EXPIRE`/`PEXPIRE`/`EXPIREAT`, `TTL`/`PTTL`, `PERSIST`, `GETEX`. Expiry is waited
//! for by polling, never by sleeping a fixed time.

mod common;

use common::*;
use redis::Value;
use std::time::Duration;

fn int(c: &mut redis::Connection, words: &[&str]) -> i64 {
    match run(c, words).expect("reply") {
        Value::Int(n) => n,
        other => panic!("{words:?} answered {other:?}"),
    }
}

#[test]
fn ttl_commands_behave_as_redis_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = args(&[
        "--dev",
        "--client-listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
    ]);
    let node = NodeProcess::start(dir.path(), &args, "dev");
    let mut c = node.client();

    assert_eq!(
        run(&mut c, &["SET", "k", "v", "EX", "100"]).expect("set ex"),
        Value::Okay
    );
    let ttl = int(&mut c, &["TTL", "k"]);
    assert!((1..=100).contains(&ttl), "TTL after SET EX 100 is {ttl}");
    let pttl = int(&mut c, &["PTTL", "k"]);
    assert!((1..=100_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(int(&mut c, &["TTL", "nope"]), -2);
    // KEEPTTL keeps the expiry; a plain SET drops it.
    assert_eq!(
        run(&mut c, &["SET", "k", "v2", "KEEPTTL"]).expect("keepttl"),
        Value::Okay
    );
    assert!(int(&mut c, &["TTL", "k"]) > 0);
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), bulk("v2"));
    assert_eq!(run(&mut c, &["SET", "k", "v3"]).expect("set"), Value::Okay);
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);

    // EXPIRE, then PERSIST removes it once.
    assert_eq!(int(&mut c, &["EXPIRE", "k", "50"]), 1);
    assert!((1..=50).contains(&int(&mut c, &["TTL", "k"])));
    assert_eq!(int(&mut c, &["PERSIST", "k"]), 1);
    assert_eq!(int(&mut c, &["PERSIST", "k"]), 0);
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    assert_eq!(int(&mut c, &["EXPIRE", "nope", "5"]), 0);

    // GETEX returns the value and sets or removes the expiry.
    assert_eq!(
        run(&mut c, &["GETEX", "k", "PX", "40000"]).expect("getex"),
        bulk("v3")
    );
    assert!((1..=40_000).contains(&int(&mut c, &["PTTL", "k"])));
    assert_eq!(
        run(&mut c, &["GETEX", "k", "PERSIST"]).expect("getex"),
        bulk("v3")
    );
    assert_eq!(int(&mut c, &["TTL", "k"]), -1);
    assert_eq!(run(&mut c, &["GETEX", "nope"]).expect("getex"), Value::Nil);

    // A time already past expires the key at once; an expired key is gone for DEL and EXISTS.
    assert_eq!(int(&mut c, &["EXPIRE", "k", "-1"]), 1);
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), Value::Nil);
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
    assert_eq!(int(&mut c, &["DEL", "k"]), 0);
    assert_eq!(
        run(&mut c, &["SET", "at", "v", "EXAT", "1"]).expect("exat"),
        Value::Okay
    );
    assert_eq!(run(&mut c, &["GET", "at"]).expect("get"), Value::Nil);
    assert_eq!(int(&mut c, &["TTL", "at"]), -2);

    // A short PX expires on its own.
    assert_eq!(
        run(&mut c, &["SET", "px", "v", "PX", "200"]).expect("set px"),
        Value::Okay
    );
    poll_until(
        "the PX 200 key expires",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match run(&mut c, &["GET", "px"]) {
            Ok(Value::Nil) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // Options Redis refuses are refused the same way.
    assert!(error_text(run(&mut c, &["SET", "k", "v", "EX", "0"])).contains("invalid expire time"));
    assert!(error_text(run(&mut c, &["EXPIRE", "k", "soon"])).contains("not an integer"));
    assert!(error_text(run(&mut c, &["SET", "k", "v", "EX", "1", "PX", "2"])).contains("syntax"));
    drop(c);
    assert_eq!(node.terminate().code(), Some(0));
}
