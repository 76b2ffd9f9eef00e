//! Issue #13 items 5 and 6 against a real `ringkv-node --dev`: a refused `MULTI` runs nothing
//! queued after it (the exact bytes redis-py's default `pipeline()` sends, and redis-py itself
//! when python3 with the `redis` package is installed), and `MGET` with a conflicting key is one
//! error reply, never an error inside an array.

mod common;

use common::*;
use redis::Value;
use ringkv_node::resp::Reply;
use ringkv_node::resp_client::RespClient;

fn error_of(reply: &Reply) -> String {
    match reply {
        Reply::Error(text) => text.clone(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// What redis-py 5 to 8 write for `with r.pipeline() as p: p.set("acc:tx", "x");
/// p.incr("acc:txc"); p.execute()`: MULTI, the queued commands and EXEC in one packed write.
const REDIS_PY_TRANSACTION: &[u8] = b"*1\r\n$5\r\nMULTI\r\n\
*3\r\n$3\r\nSET\r\n$6\r\nacc:tx\r\n$1\r\nx\r\n\
*2\r\n$4\r\nINCR\r\n$7\r\nacc:txc\r\n\
*1\r\n$4\r\nEXEC\r\n";

#[test]
fn a_pipelined_transaction_is_refused_whole_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut raw: RespClient = node.raw_client();
    raw.send_raw(REDIS_PY_TRANSACTION).expect("send");
    let multi = error_of(&raw.read_reply().expect("MULTI reply"));
    assert!(
        multi.starts_with("ERR MULTI is not supported"),
        "MULTI: {multi}"
    );
    for queued in ["SET", "INCR"] {
        let text = error_of(&raw.read_reply().expect("queued reply"));
        assert!(text.starts_with("ERR refused"), "{queued}: {text}");
    }
    let exec = error_of(&raw.read_reply().expect("EXEC reply"));
    assert!(exec.starts_with("EXECABORT"), "EXEC: {exec}");

    // Nothing ran: neither key exists, read through an independent client.
    let mut c = node.client();
    assert_eq!(run(&mut c, &["GET", "acc:tx"]).expect("get"), Value::Nil);
    assert_eq!(run(&mut c, &["GET", "acc:txc"]).expect("get"), Value::Nil);
    assert_eq!(
        run(&mut c, &["EXISTS", "acc:tx", "acc:txc"]).expect("exists"),
        Value::Int(0)
    );
    // EXEC ended the refusal: the same connection serves again.
    assert_eq!(
        raw.command(&["SET", "after", "1"]).expect("set"),
        Reply::Simple("OK".into())
    );

    // DISCARD ends it too, and what came between still did not run.
    assert!(error_of(&raw.command(&["MULTI"]).expect("multi")).contains("MULTI"));
    assert!(error_of(&raw.command(&["SET", "discarded", "v"]).expect("set")).contains("refused"));
    assert!(error_of(&raw.command(&["GET", "after"]).expect("get")).contains("refused"));
    assert_eq!(
        raw.command(&["DISCARD"]).expect("discard"),
        Reply::Simple("OK".into())
    );
    assert_eq!(run(&mut c, &["GET", "discarded"]).expect("get"), Value::Nil);
    assert_eq!(run(&mut c, &["GET", "after"]).expect("get"), bulk("1"));

    // Outside a MULTI: Redis's own errors; WATCH and UNWATCH are refused.
    assert!(error_text(run(&mut c, &["EXEC"])).contains("EXEC without MULTI"));
    assert!(error_text(run(&mut c, &["DISCARD"])).contains("DISCARD without MULTI"));
    assert!(error_text(run(&mut c, &["WATCH", "after"])).contains("WATCH and UNWATCH are not"));
    assert!(error_text(run(&mut c, &["UNWATCH"])).contains("WATCH and UNWATCH are not"));
}

/// redis-py's own default pipeline (a transaction), when python3 and redis-py are installed:
/// `execute()` raises, and neither of its writes landed. Skipped, with the reason printed,
/// where they are not (CI images without Python); the raw-bytes test above covers the wire.
#[test]
fn redis_py_pipeline_raises_and_writes_nothing() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import redis"])
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        Ok(_) => {
            eprintln!("skipped: python3 has no `redis` package (pip install redis)");
            return;
        }
        Err(e) => {
            eprintln!("skipped: python3 is not available ({e})");
            return;
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let (host, port) = node.client_addr.rsplit_once(':').expect("host:port");
    let script = r#"
import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=30)
r.set("untouched", "before")
raised = None
try:
    with r.pipeline() as p:
        p.set("py:tx", "x")
        p.incr("py:txc")
        p.set("untouched", "after")
        p.execute()
except redis.ResponseError as e:
    raised = e
if raised is None:
    sys.exit("pipeline().execute() did not raise")
if "MULTI is not supported" not in str(raised):
    sys.exit(f"raised something else: {raised!r}")
for key, want in [("py:tx", None), ("py:txc", None), ("untouched", b"before")]:
    got = r.get(key)
    if got != want:
        sys.exit(f"{key} is {got!r} after the refused transaction, expected {want!r}")
# A non-transactional pipeline still works, on a connection from the same pool.
with r.pipeline(transaction=False) as p:
    p.set("py:plain", "1")
    p.get("py:plain")
    if p.execute() != [True, b"1"]:
        sys.exit("a pipeline(transaction=False) failed")
print("ok")
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script, host, port])
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "redis-py script failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}

/// In vector-clock mode a key with siblings fails `MGET` as a whole: one `-CONFLICT` error reply
/// naming the key's position, never an error element inside the array.
#[test]
fn mget_with_a_conflicting_key_is_one_error_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(
        dir.path(),
        &dev_args(&["--conflict", "vector-clock"]),
        "dev-vc",
    );
    let mut c = node.client();
    assert_eq!(
        run(&mut c, &["SET", "plain", "1"]).expect("set"),
        Value::Okay
    );
    assert_eq!(run(&mut c, &["SET", "k", "one"]).expect("set"), Value::Okay);
    // A write without a context is concurrent with what is there: two siblings.
    run(&mut c, &["KV.PUT", "k", "blind"]).expect("kv.put");
    let mut raw = node.raw_client();
    let reply = raw.command(&["MGET", "plain", "k", "nope"]).expect("mget");
    let text = error_of(&reply);
    assert!(
        text.starts_with("CONFLICT key 2 of the MGET has 2 concurrent values"),
        "{text}"
    );
    // Without the conflicting key MGET is an array as before.
    assert_eq!(
        run(&mut c, &["MGET", "plain", "nope"]).expect("mget"),
        Value::Array(vec![bulk("1"), Value::Nil])
    );
}
