//! The status page on the admin port, in a real browser: a 3-node cluster of `ringkv-node`
//! processes, and headless Chromium (Debian's `chromium`) loading node 1's `/`. The page must
//! draw without a script error and show every member; `ringkv admin status` must print the same
//! members as a table, and `--json` the raw document.
//!
//! The page says how it went in its own DOM: `data-ok="1"` on the body after a fetched document
//! was drawn without error, `data-error="1"` (and the message in `#error`) after any script
//! error. A control run serves the same page with a document missing its members, and must
//! come back with `data-error`, so a page that swallowed its errors could not pass.
//!
//! Without `chromium` on the PATH the browser test prints why and returns (`.ci/run` installs
//! it where it can); the CLI test always runs.

mod common;

use common::*;
use ringkv_node::clock::Clock;
use ringkv_node::status::StatusSnapshot;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const SECRET: &str = "9b2e4d6f8a0c1e3b5d7f9a1c3e5b7d9f\n";
const NODES: usize = 3;
/// Longest the cluster may take to see every member alive, and Chromium to load the page (hang
/// guards, not timing assertions).
const WAIT: Duration = Duration::from_secs(90);
/// Pace of polling `/status.json`; the test waits for a state it reads back.
const POLL_PACE: Duration = Duration::from_millis(50);

struct Cluster {
    nodes: Vec<NodeProcess>,
    http: Vec<String>,
}

/// Starts `NODES` nodes (ids 1..=NODES) and waits until each is connected to all its peers.
fn start_cluster(dir: &Path) -> Cluster {
    std::fs::write(dir.join("secret"), SECRET).expect("secret");
    let peer_ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let http: Vec<String> = (0..NODES)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes = Vec::new();
    for id in 1..=NODES {
        let peers: Vec<String> = (1..=NODES)
            .filter(|&j| j != id)
            .map(|j| {
                format!(
                    "{{ id = {j}, addr = \"127.0.0.1:{}\", rack = \"r{j}\" }}",
                    peer_ports[j - 1]
                )
            })
            .collect();
        let text = format!(
            "node_id = {id}\nrack = \"r{id}\"\nclient_listen = \"127.0.0.1:0\"\n\
             peer_listen = \"127.0.0.1:{}\"\nhttp_listen = \"{}\"\ndata_dir = \"data{id}\"\n\
             cluster_name = \"status\"\ncluster_secret_file = \"secret\"\npeers = [{}]\n\
             [membership]\ngossip_interval_ms = 100\n",
            peer_ports[id - 1],
            http[id - 1],
            peers.join(", ")
        );
        std::fs::write(dir.join(format!("node{id}.toml")), text).expect("config");
        nodes.push(NodeProcess::start(
            dir,
            &args(&["--config", &format!("node{id}.toml")]),
            &format!("node{id}"),
        ));
    }
    for node in &mut nodes {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    Cluster { nodes, http }
}

fn status(addr: &str) -> StatusSnapshot {
    let (code, body) = http(addr, "GET", "/status.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Waits until `addr`'s status shows every node alive, ring members, connected.
fn wait_all_alive(addr: &str) -> StatusSnapshot {
    let waited = Clock::stopwatch();
    loop {
        let seen = status(addr);
        let alive = seen
            .members
            .iter()
            .filter(|m| m.in_ring && m.status == "alive" && m.state == "up")
            .count();
        if alive == NODES {
            return seen;
        }
        assert!(
            waited.elapsed() < WAIT,
            "not every member alive and up: {seen:?}"
        );
        std::thread::sleep(POLL_PACE);
    }
}

/// Runs headless Chromium on `url` and returns the DOM after the page's scripts ran (virtual
/// time lets the page's fetches finish and a few refreshes run before the dump).
fn chromium_dom(chromium: &Path, profile: &Path, url: &str) -> String {
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = result
        .recv_timeout(WAIT)
        .expect("chromium did not finish (hang guard)")
        .expect("chromium output");
    let dom = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success() && dom.contains("<body"),
        "chromium failed ({}): {}\n{}",
        output.status,
        dom,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

/// The opening `<body ...>` tag of a dumped DOM.
fn body_tag(dom: &str) -> &str {
    let start = dom.find("<body").expect("a body");
    let end = dom[start..].find('>').expect("end of the body tag") + start;
    &dom[start..=end]
}

/// The `#error` paragraph's text, if shown.
fn error_text(dom: &str) -> Option<String> {
    let start = dom.find("<p id=\"error\"")?;
    let tag_end = dom[start..].find('>')? + start;
    if dom[start..tag_end].contains("hidden") {
        return None;
    }
    let end = dom[tag_end..].find("</p>")? + tag_end;
    Some(dom[tag_end + 1..end].to_string())
}

fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// A one-shot web server for the control run: serves the node's page and script as they are,
/// and `document` as `/status.json`.
fn serve_control(page: String, script: String, document: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            let path = head.split(' ').nth(1).unwrap_or("");
            let (status, kind, body) = match path {
                "/" => ("200 OK", "text/html", page.as_str()),
                "/status.js" => ("200 OK", "text/javascript", script.as_str()),
                "/status.json" => ("200 OK", "application/json", document),
                _ => ("404 Not Found", "text/plain", "not here"),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn the_status_page_shows_every_member_in_headless_chromium() {
    let Some(chromium) = find_on_path("chromium").or_else(|| find_on_path("chromium-browser"))
    else {
        println!(
            "skipped: no chromium on the PATH (Debian: apt-get install chromium; .ci/run \
             installs it when it can)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start_cluster(dir.path());
    let node1 = &cluster.http[0];
    wait_all_alive(node1);
    // Some traffic, so the request table has numbers and latencies to draw.
    let mut client = cluster.nodes[0].client();
    for i in 0..20 {
        let key = format!("k{i}");
        run(&mut client, &["SET", &key, "v"]).expect("set");
        run(&mut client, &["GET", &key]).expect("get");
    }

    let dom = chromium_dom(
        &chromium,
        &dir.path().join("profile"),
        &format!("http://{node1}/"),
    );
    let body = body_tag(&dom);
    assert_eq!(error_text(&dom), None, "the page shows an error:\n{dom}");
    assert!(
        body.contains("data-ok=\"1\"") && !body.contains("data-error"),
        "the page did not finish drawing: {body}\n{dom}"
    );
    for id in 1..=NODES {
        assert!(
            dom.contains(&format!("data-member=\"{id}\" data-status=\"alive\"")),
            "member {id} is not shown alive:\n{dom}"
        );
    }
    for section in ["hints", "anti-entropy", "storage"] {
        let start = dom
            .find(&format!("<dl id=\"{section}\">"))
            .unwrap_or_else(|| panic!("no {section} section:\n{dom}"));
        let end = dom[start..].find("</dl>").expect("end of the section") + start;
        assert!(
            dom[start..end].contains("<dt>"),
            "the {section} section is empty:\n{dom}"
        );
    }
    for operation in ["get", "put", "delete"] {
        assert!(
            dom.contains(&format!("data-operation=\"{operation}\"")),
            "no {operation} row:\n{dom}"
        );
    }

    // The control: the same page and script, fed a document without members, must report the
    // script error it causes rather than look healthy.
    let (_, page) = http(node1, "GET", "/");
    let (_, script) = http(node1, "GET", "/status.js");
    let control = serve_control(page, script, "{\"node\":1}");
    let dom = chromium_dom(
        &chromium,
        &dir.path().join("profile-control"),
        &format!("http://{control}/"),
    );
    let body = body_tag(&dom);
    assert!(
        body.contains("data-error=\"1\"") && !body.contains("data-ok"),
        "a broken document drew as healthy: {body}\n{dom}"
    );
    let error = error_text(&dom).expect("the error is shown");
    assert!(error.contains("script error"), "{error}");
}

#[test]
fn admin_status_prints_a_table_and_the_raw_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start_cluster(dir.path());
    let node2 = &cluster.http[1];
    wait_all_alive(node2);
    let mut client = cluster.nodes[1].client();
    run(&mut client, &["SET", "greeting", "hello"]).expect("set");

    // Reads need no token; the page can change nothing.
    let (code, _) = http(node2, "GET", "/");
    assert_eq!(code, 200);
    let (code, _) = http(node2, "POST", "/status.json");
    assert_eq!(code, 405);

    let cli = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["admin", "status", "--http", node2])
            .args(extra)
            .output()
            .expect("run ringkv");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let table = cli(&[]);
    let header = table
        .lines()
        .position(|line| line.starts_with("id ") && line.contains("status"))
        .unwrap_or_else(|| panic!("no member table:\n{table}"));
    let rows: Vec<&str> = table.lines().skip(header + 1).take(NODES).collect();
    for (i, row) in rows.iter().enumerate() {
        let id = i + 1;
        let marker = if id == 2 {
            format!("{id}*")
        } else {
            id.to_string()
        };
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..4],
            [marker.as_str(), "member", "alive", "up"],
            "{table}"
        );
        assert!(row.contains(&format!("r{id}")), "rack of {id}:\n{table}");
    }
    let put = table
        .lines()
        .find(|line| line.starts_with("put "))
        .unwrap_or_else(|| panic!("no put row:\n{table}"));
    assert_eq!(put.split_whitespace().nth(2), Some("1"), "{table}");

    let json: StatusSnapshot = serde_json::from_str(&cli(&["--json"])).expect("the raw document");
    assert_eq!(json.node, 2);
    let ids: Vec<u32> = json.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(json.requests[1].ok, 1, "{json:?}");
}
