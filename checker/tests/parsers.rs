//! The readers must turn any input into a history or an error, never a panic.

use ringkv_checker::{check_history_text, SearchLimits};

const ETCD: &str = "INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 3   :invoke :cas    [1 2]
INFO  jepsen.util - 2\t:invoke\t:write\t4
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 2\t:ok\t:write\t4
INFO  jepsen.util - 3\t:fail\t:cas\t[1 2]
INFO  jepsen.util - 1\t:invoke\t:cas\t[4 1]
INFO  jepsen.util - 1\t:info\t:cas\t:timed-out
INFO  jepsen.util - 4\t:invoke\t:read\tnil
INFO  jepsen.util - 4\t:fail\t:read\t:timed-out
";

const KV: &str = r#"{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}
{:process 1, :type :invoke, :f :get, :key "0", :value nil}
{:process 0, :type :ok, :f :append, :key "0", :value "x 0 0 y"}
{:process 1, :type :ok, :f :get, :key "0", :value "x 0 0 y"}
{:process 2, :type :invoke, :f :put, :key "1", :value "a\"b"}
{:process 2, :type :ok, :f :put, :key "1", :value "a\"b"}
"#;

const REGISTER: &str =
    "1 7 invoke a put 3\n2 8 invoke a get\n3 7 ok\n4 8 ok 3\n5 9 invoke b delete\n6 9 info\n";

/// Bytes that matter to the three formats.
const ALPHABET: &[u8] = b" :[]{}\"\\0123456789nilx\t\n-,";

/// splitmix64: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => {
                bytes.remove(at);
            }
            1 => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            2 => bytes.truncate(at),
            3 => {
                let other = rng.below(bytes.len());
                bytes.swap(at, other);
            }
            _ => {
                // Duplicate a slice, often a whole line.
                let end = (at + rng.below(80)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutated_inputs_never_panic() {
    let limits = SearchLimits {
        steps_total_max: 100_000,
        ..SearchLimits::default()
    };
    let mut rng = Rng(5);
    let mut parsed = 0;
    for (model, text) in [
        ("cas-register", ETCD),
        ("kv-append", KV),
        ("register", REGISTER),
    ] {
        assert!(
            check_history_text(model, text, &limits).is_ok(),
            "{model} sample must parse"
        );
        for _ in 0..2000 {
            let input = mutate(&mut rng, text);
            if let Ok(report) = check_history_text(model, &input, &limits) {
                parsed += 1;
                // Reports of whatever was accepted render too.
                let _ = report.to_string();
                let _ = report.render_html("fuzz");
            }
        }
    }
    assert!(
        parsed > 100,
        "mutations should sometimes stay valid ({parsed})"
    );
}
