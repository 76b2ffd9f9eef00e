//! The retry rules against scripted nodes on loopback: a refused connection fails over for any
//! command, a read whose connection dies after it was sent is retried elsewhere, a write in the
//! same situation is never retried (it is `Indeterminate`), and no-effect refusals go to the next
//! replica. Each scripted node counts the commands it received, so "never retried" is checked
//! on the server side, not inferred from the error.

use ringkv_client::{Client, ClientConfig, Error};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a scripted node answers data commands (it always answers `KV.RING`).
#[derive(Clone, Copy)]
enum Script {
    /// `+OK` to SET, `$1 v` to GET.
    Answer,
    /// Reads the command, then closes without a reply.
    Vanish,
    /// `-BUSY ...` to everything but KV.RING.
    Busy,
}

struct Fake {
    address: String,
    port: u16,
    data_commands: Arc<AtomicUsize>,
}

/// The `KV.RING` reply naming the `ports` (node ids 1, 2, ...) as the replicas of every key.
fn ring_reply(ports: &[u16]) -> Vec<u8> {
    let mut out = format!(
        "*2\r\n:1\r\n*1\r\n*3\r\n$1\r\n5\r\n$1\r\n5\r\n*{}\r\n",
        ports.len()
    );
    for (i, port) in ports.iter().enumerate() {
        out.push_str(&format!(
            "*3\r\n:{}\r\n$9\r\n127.0.0.1\r\n:{port}\r\n",
            i + 1
        ));
    }
    out.into_bytes()
}

async fn fake(script: Script, ring_ports: Arc<std::sync::Mutex<Vec<u16>>>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let data_commands = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&data_commands);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            let ring_ports = Arc::clone(&ring_ports);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(read) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    // Each test command is one small write: answer per whole command seen.
                    let Some((command, used)) = ringkv_client::resp::decode(&buffer).ok().flatten()
                    else {
                        continue;
                    };
                    buffer.drain(..used);
                    let args = command.as_array().unwrap_or_default().to_vec();
                    let name = args
                        .first()
                        .and_then(|a| a.as_bytes())
                        .map(|b| String::from_utf8_lossy(b).to_ascii_uppercase())
                        .unwrap_or_default();
                    let reply: Vec<u8> = if name == "KV.RING" {
                        let ports = ring_ports.lock().expect("ports").clone();
                        ring_reply(&ports)
                    } else {
                        counter.fetch_add(1, Ordering::SeqCst);
                        match (script, name.as_str()) {
                            (Script::Vanish, _) => return,
                            (Script::Busy, _) => {
                                b"-BUSY overloaded; nothing was written\r\n".to_vec()
                            }
                            (Script::Answer, "GET") => b"$1\r\nv\r\n".to_vec(),
                            (Script::Answer, _) => b"+OK\r\n".to_vec(),
                        }
                    };
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Fake {
        address: format!("127.0.0.1:{port}"),
        port,
        data_commands,
    }
}

/// Two scripted nodes, the first the first replica of every key; the client connects through
/// the second.
async fn pair(first: Script, second: Script) -> (Client, Fake, Fake) {
    let ports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = fake(first, Arc::clone(&ports)).await;
    let b = fake(second, Arc::clone(&ports)).await;
    *ports.lock().expect("ports") = vec![a.port, b.port];
    let mut config = ClientConfig::new([b.address.clone()]);
    config.refresh_interval_ms = 0;
    let client = Client::connect(config).await.expect("connect");
    assert_eq!(
        client.candidates(b"k")[..2],
        [a.address.clone(), b.address.clone()]
    );
    (client, a, b)
}

#[tokio::test]
async fn requests_go_to_the_first_replica() {
    let (client, a, b) = pair(Script::Answer, Script::Answer).await;
    client.set(b"k", b"v").await.expect("set");
    assert_eq!(client.get(b"k").await.expect("get"), Some(b"v".to_vec()));
    assert_eq!(a.data_commands.load(Ordering::SeqCst), 2);
    assert_eq!(b.data_commands.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refused_connection_fails_over_even_for_a_write() {
    let ports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = fake(Script::Answer, Arc::clone(&ports)).await;
    // A port nobody listens on: bind, learn the port, close.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    *ports.lock().expect("ports") = vec![dead_port, b.port];
    let mut config = ClientConfig::new([b.address.clone()]);
    config.refresh_interval_ms = 0;
    let client = Client::connect(config).await.expect("connect");
    client.set(b"k", b"v").await.expect("the write fails over");
    assert_eq!(b.data_commands.load(Ordering::SeqCst), 1);
    assert!(client.stats().failovers >= 1);
}

#[tokio::test]
async fn a_write_lost_after_sending_is_indeterminate_and_never_retried() {
    let (client, a, b) = pair(Script::Vanish, Script::Answer).await;
    match client.set(b"k", b"v").await {
        Err(Error::Indeterminate(why)) => {
            assert!(why.contains("after the write was sent"), "{why}")
        }
        other => panic!("expected Indeterminate, got {other:?}"),
    }
    assert_eq!(a.data_commands.load(Ordering::SeqCst), 1, "sent once");
    assert_eq!(b.data_commands.load(Ordering::SeqCst), 0, "never retried");
}

#[tokio::test]
async fn a_read_lost_after_sending_is_retried_on_the_next_replica() {
    let (client, a, b) = pair(Script::Vanish, Script::Answer).await;
    assert_eq!(client.get(b"k").await.expect("get"), Some(b"v".to_vec()));
    assert_eq!(a.data_commands.load(Ordering::SeqCst), 1);
    assert_eq!(b.data_commands.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn no_effect_refusals_go_to_the_next_replica_and_the_last_is_typed() {
    let (client, a, b) = pair(Script::Busy, Script::Answer).await;
    client
        .set(b"k", b"v")
        .await
        .expect("BUSY is retried elsewhere");
    assert_eq!(a.data_commands.load(Ordering::SeqCst), 1);
    assert_eq!(b.data_commands.load(Ordering::SeqCst), 1);
    let (client, _, _) = pair(Script::Busy, Script::Busy).await;
    match client.set(b"k", b"v").await {
        Err(error @ Error::Busy(_)) => assert!(error.had_no_effect()),
        other => panic!("expected Busy, got {other:?}"),
    }
}
