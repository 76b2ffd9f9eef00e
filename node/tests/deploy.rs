//! The packaging in `deploy/`, checked as far as this machine can without a container engine or
//! a cluster: the entrypoint script runs and the configuration it writes is validated by the
//! real node (`--check-config`) and, once, started for real; the Compose file and Kubernetes
//! manifests parse as YAML, name everything the node needs, and their environments produce
//! configurations the node accepts; the systemd unit passes `systemd-analyze verify`; the alert
//! rules pass `promtool check rules` and their unit tests; the dashboard's queries are valid
//! PromQL; and every metric the dashboard and alerts name is one a running node exports.
//!
//! A test that needs a tool this machine lacks (`systemd-analyze`, `promtool`) prints why and
//! returns; `.ci/run` installs them where it can.

mod common;

use common::*;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n";
const PASSWORD: &str = "client-password-for-tests\n";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &str) -> String {
    let path = deploy_dir().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// The secrets an entrypoint run reads, in `dir`, under the names deploy/ uses.
fn write_secrets(dir: &Path) -> PathBuf {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    std::fs::write(secrets.join("cluster-secret"), SECRET).expect("secret");
    std::fs::write(secrets.join("password"), PASSWORD).expect("password");
    std::fs::write(secrets.join("admin-token"), format!("{ADMIN_TOKEN}\n")).expect("token");
    secrets
}

/// The entrypoint under `sh` with exactly `env` (plus PATH, and the test's node binary), its
/// arguments passed on to ringkv-node.
fn entrypoint(dir: &Path, env: &[(&str, String)], node_args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg(deploy_dir().join("docker-entrypoint.sh"))
        .args(node_args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RINGKV_NODE_BINARY", node_binary())
        .env("RINGKV_CONFIG", dir.join("node.toml"));
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `key = value` lines of `--check-config`'s summary.
fn summary(output: &Output) -> BTreeMap<String, String> {
    assert!(output.status.success(), "{}", text(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("configuration ok\n"), "{stdout}");
    stdout
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cluster_env(secrets: &Path, host: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RINGKV_HOSTNAME", host.to_string()),
        ("RINGKV_CLUSTER_SIZE", "3".to_string()),
        (
            "RINGKV_PEER_ADDR_TEMPLATE",
            "ringkv-{id}.ringkv.test.svc.cluster.local:7380".to_string(),
        ),
        ("RINGKV_RACK_TEMPLATE", "rack-{id}".to_string()),
        (
            "RINGKV_CLUSTER_SECRET_FILE",
            secrets.join("cluster-secret").display().to_string(),
        ),
        (
            "RINGKV_PASSWORD_FILE",
            secrets.join("password").display().to_string(),
        ),
        (
            "RINGKV_ADMIN_TOKEN_FILE",
            secrets.join("admin-token").display().to_string(),
        ),
        ("RINGKV_DATA_DIR", "/var/lib/ringkv".to_string()),
    ]
}

#[test]
fn the_entrypoint_derives_the_node_id_from_the_host_ordinal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_secrets(dir.path());
    for ordinal in 0..3u32 {
        let output = entrypoint(
            dir.path(),
            &cluster_env(&secrets, &format!("ringkv-{ordinal}")),
            &["--check-config"],
        )
        .output()
        .expect("run the entrypoint");
        let seen = summary(&output);
        assert_eq!(seen["node_id"], ordinal.to_string());
        assert_eq!(seen["rack"], format!("rack-{ordinal}"));
        let others: Vec<String> = (0..3u32)
            .filter(|&i| i != ordinal)
            .map(|i| format!("{i}=ringkv-{i}.ringkv.test.svc.cluster.local:7380 (dc1/rack-{i})"))
            .collect();
        assert_eq!(seen["peers"], others.join(", "), "{seen:?}");
        assert_eq!(seen["client_listen"], "0.0.0.0:6380");
        assert_eq!(seen["peer_listen"], "0.0.0.0:7380");
        assert_eq!(seen["http_listen"], "0.0.0.0:9380");
        assert_eq!(seen["data_dir"], "/var/lib/ringkv");
        assert_eq!(seen["cluster_secret"], "set");
        assert_eq!(seen["password"], "set");
        assert_eq!(
            seen["admin_token_file"],
            secrets.join("admin-token").display().to_string()
        );
        assert_eq!(seen["replication"], "n 3 r 2 w 2");
    }
}

#[test]
fn the_entrypoint_describes_spares_the_same_way_on_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_secrets(dir.path());
    let seen = |host: &str| {
        let mut env = cluster_env(&secrets, host);
        env.push(("RINGKV_SPARE_COUNT", "2".to_string()));
        summary(
            &entrypoint(dir.path(), &env, &["--check-config"])
                .output()
                .expect("run"),
        )
    };
    let address = |i: u32| format!("{i}=ringkv-{i}.ringkv.test.svc.cluster.local:7380");
    let member = seen("ringkv-1");
    assert_eq!(member["initial_member"], "true");
    assert_eq!(
        member["peers"],
        format!(
            "{} (dc1/rack-0), {} (dc1/rack-2), {} (dc1/rack-3, spare), {} (dc1/rack-4, spare)",
            address(0),
            address(2),
            address(3),
            address(4)
        )
    );
    let spare = seen("ringkv-4");
    assert_eq!(spare["node_id"], "4");
    assert_eq!(spare["initial_member"], "false");
    assert!(
        spare["peers"].ends_with(&format!("{} (dc1/rack-3, spare)", address(3))),
        "{spare:?}"
    );
    assert_eq!(
        spare["replication"], member["replication"],
        "a spare counts the same initial ring"
    );
    let mut env = cluster_env(&secrets, "ringkv-5");
    env.push(("RINGKV_SPARE_COUNT", "2".to_string()));
    let output = entrypoint(dir.path(), &env, &["--check-config"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64), "{}", text(&output));
    assert!(text(&output).contains("ids 0 to 4"), "{}", text(&output));
}

#[test]
fn the_entrypoint_takes_an_explicit_id_and_peer_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_secrets(dir.path());
    let env = vec![
        ("RINGKV_NODE_ID", "7".to_string()),
        (
            "RINGKV_PEERS",
            "5=db5.example:7380,7=db7.example:7380,9=db9.example:7380".to_string(),
        ),
        ("RINGKV_DATACENTER", "east".to_string()),
        ("RINGKV_CLIENT_LISTEN", "127.0.0.1:6380".to_string()),
        (
            "RINGKV_CLUSTER_SECRET_FILE",
            secrets.join("cluster-secret").display().to_string(),
        ),
        ("RINGKV_N", "3".to_string()),
        ("RINGKV_W", "3".to_string()),
    ];
    let output = entrypoint(dir.path(), &env, &["--check-config"])
        .output()
        .expect("run");
    let seen = summary(&output);
    assert_eq!(seen["node_id"], "7");
    assert_eq!(seen["datacenter"], "east");
    assert_eq!(
        seen["peers"], "5=db5.example:7380 (east/rack1), 9=db9.example:7380 (east/rack1)",
        "this node is left out of its own peer list"
    );
    assert_eq!(
        seen["password"], "none",
        "a loopback client port needs none"
    );
    assert_eq!(seen["replication"], "n 3 r 2 w 3");
}

#[test]
fn the_entrypoint_refuses_what_would_make_a_wrong_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_secrets(dir.path());
    let with = |changes: &[(&'static str, &str)]| {
        let mut env = cluster_env(&secrets, "ringkv-1");
        for (key, value) in changes {
            env.retain(|(k, _)| k != key);
            env.push((key, value.to_string()));
        }
        let output = entrypoint(dir.path(), &env, &["--check-config"])
            .output()
            .expect("run");
        (output.status.code(), text(&output))
    };
    let refused = |changes: &[(&'static str, &str)], why: &str| {
        let (code, said) = with(changes);
        assert_eq!(code, Some(64), "{changes:?}: {said}");
        assert!(said.contains(why), "{changes:?}: {said}");
    };
    refused(&[("RINGKV_HOSTNAME", "ringkv")], "set RINGKV_NODE_ID");
    refused(&[("RINGKV_HOSTNAME", "ringkv-x")], "is not a node id");
    refused(&[("RINGKV_HOSTNAME", "ringkv-4294967296")], "too large");
    refused(&[("RINGKV_HOSTNAME", "ringkv-3")], "outside the cluster");
    refused(
        &[("RINGKV_PEER_ADDR_TEMPLATE", "ringkv:7380")],
        "has no {id}",
    );
    refused(&[("RINGKV_PEERS", "2=b:7380")], "not both");
    refused(&[("RINGKV_PROTECTED_MODE", "maybe")], "true or false");
    refused(&[("RINGKV_N", "three")], "must be a number");
    // The largest id the node accepts is accepted (with an explicit peer list).
    let (code, said) = with(&[
        ("RINGKV_HOSTNAME", "ringkv-4294967295"),
        ("RINGKV_CLUSTER_SIZE", ""),
        ("RINGKV_PEERS", "1=a:7380,2=b:7380"),
    ]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("node_id = 4294967295"), "{said}");
    // A value the node refuses is quoted intact, so the node names the field.
    let (code, said) = with(&[("RINGKV_DATACENTER", "dc\"1")]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("`datacenter`"), "{said}");
    // And the node's own checks reach through: without a password on an open client port.
    let (code, said) = with(&[("RINGKV_PASSWORD_FILE", "")]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("protected_mode"), "{said}");
}

#[test]
fn the_entrypoint_execs_a_node_that_serves_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_secrets(dir.path());
    let http = format!("127.0.0.1:{}", free_port());
    let env = vec![
        ("RINGKV_HOSTNAME", "ringkv-0".to_string()),
        ("RINGKV_CLUSTER_SIZE", "1".to_string()),
        ("RINGKV_PEER_ADDR_TEMPLATE", "ringkv-{id}:7380".to_string()),
        ("RINGKV_CLIENT_LISTEN", "127.0.0.1:0".to_string()),
        ("RINGKV_PEER_LISTEN", "127.0.0.1:0".to_string()),
        ("RINGKV_HTTP_LISTEN", http.clone()),
        (
            "RINGKV_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        (
            "RINGKV_ADMIN_TOKEN_FILE",
            secrets.join("admin-token").display().to_string(),
        ),
    ];
    let mut child = entrypoint(dir.path(), &env, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the entrypoint");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains(ringkv_node::server::LISTENING_CLIENTS));
    assert!(
        listening.is_some(),
        "the node never listened: {:?}",
        child.wait_with_output().map(|o| text(&o))
    );
    let (code, body) = common::http(&http, "GET", "/health");
    assert_eq!(
        (code, body.as_str()),
        (200, "{\"status\":\"ok\",\"node\":0}\n")
    );
    let written = std::fs::read_to_string(dir.path().join("node.toml")).expect("node.toml");
    assert!(written.contains("node_id = 0\n"), "{written}");
    // exec: the process the entrypoint started is the node, so SIGTERM reaches it and it drains.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stopped cleanly") || rest.iter().any(|l| l.contains("stopped")),
        "{stderr}{rest:?}"
    );
}

fn yaml(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        })
        .collect()
}

use serde::Deserialize as _;

fn get<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |at, key| {
        let next = match key.parse::<usize>() {
            Ok(index) => at.get(index),
            Err(_) => at.get(key),
        };
        next.unwrap_or_else(|| panic!("no `{key}` of `{path}` in {at:?}"))
    })
}

fn string<'a>(value: &'a Value, path: &str) -> &'a str {
    get(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string"))
}

/// The environment variables every deployment must set so the node gets what it needs: its
/// peers, listen addresses, data directory, secret, password and admin token (the node id
/// comes from the host name's ordinal, checked separately).
const NEEDED: [&str; 9] = [
    "RINGKV_CLUSTER_SIZE",
    "RINGKV_PEER_ADDR_TEMPLATE",
    "RINGKV_CLUSTER_SECRET_FILE",
    "RINGKV_PASSWORD_FILE",
    "RINGKV_ADMIN_TOKEN_FILE",
    "RINGKV_DATA_DIR",
    "RINGKV_CLIENT_LISTEN",
    "RINGKV_PEER_LISTEN",
    "RINGKV_HTTP_LISTEN",
];

/// Runs the entrypoint with a deployment's environment (secret paths moved under `secrets`)
/// and returns the node's summary.
fn check_deployment_env(
    dir: &Path,
    secrets: &Path,
    secrets_prefix: &str,
    host: &str,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let env: Vec<(&str, String)> = env
        .iter()
        .map(|(k, v)| {
            let v = match v.strip_prefix(secrets_prefix) {
                Some(name) => secrets
                    .join(name.trim_start_matches('/'))
                    .display()
                    .to_string(),
                None => v.clone(),
            };
            (k.as_str(), v)
        })
        .chain([("RINGKV_HOSTNAME", host.to_string())])
        .collect();
    let output = entrypoint(dir, &env, &["--check-config"])
        .output()
        .expect("run");
    summary(&output)
}

#[test]
fn compose_runs_three_nodes_the_entrypoint_can_configure() {
    let mut documents = yaml("compose.yaml");
    // The services share their settings through a YAML anchor and merge key (`<<: *ringkv`).
    documents[0].apply_merge().expect("merge keys");
    let compose = &documents[0];
    let services = get(compose, "services").as_mapping().expect("services");
    assert_eq!(services.len(), 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_secrets(dir.path());
    let mut ids = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().expect("a service name");
        assert_eq!(
            string(service, "hostname"),
            name,
            "the id comes from the host name"
        );
        let env: BTreeMap<String, String> = get(service, "environment")
            .as_mapping()
            .expect("environment")
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => panic!("{name}: quote environment values: {other:?}"),
                };
                (k.as_str().expect("a key").to_string(), v)
            })
            .collect();
        for needed in NEEDED {
            let defaulted = needed.ends_with("_LISTEN");
            assert!(
                defaulted || env.contains_key(needed),
                "{name} does not set {needed}"
            );
        }
        assert!(!env.contains_key("RINGKV_NODE_ID"));
        // Every secret file the node reads is a Compose secret, mounted where the env says.
        let mounted: Vec<&str> = get(service, "secrets")
            .as_sequence()
            .expect("secrets")
            .iter()
            .map(|s| s.as_str().expect("a secret name"))
            .collect();
        for key in [
            "RINGKV_CLUSTER_SECRET_FILE",
            "RINGKV_PASSWORD_FILE",
            "RINGKV_ADMIN_TOKEN_FILE",
        ] {
            let file = env[key].strip_prefix("/run/secrets/").expect("a secret");
            assert!(mounted.contains(&file), "{name}: {key} {file} not mounted");
            let source = string(compose, &format!("secrets.{file}.file"));
            assert!(source.starts_with("./secrets/"), "{source}");
        }
        let volume = get(service, "volumes.0").as_str().expect("a volume");
        assert_eq!(volume, format!("{name}:{}", env["RINGKV_DATA_DIR"]));
        let grace = string(service, "stop_grace_period");
        assert!(
            grace.ends_with('s')
                && grace.trim_end_matches('s').parse::<u32>().expect("seconds") >= 60
        );
        assert!(
            get(service, "ulimits.nofile.soft")
                .as_u64()
                .expect("nofile")
                >= 65536
        );
        assert_eq!(string(service, "stop_signal"), "SIGTERM");
        let seen = check_deployment_env(dir.path(), &secrets, "/run/secrets", name, &env);
        assert_eq!(seen["password"], "set");
        assert_eq!(seen["cluster_secret"], "set");
        ids.insert(seen["node_id"].clone());
        let expected_peers = 2;
        assert_eq!(
            seen["peers"].split(", ").count(),
            expected_peers,
            "{seen:?}"
        );
    }
    assert_eq!(ids, BTreeSet::from(["0", "1", "2"].map(String::from)));
}

#[test]
fn kubernetes_statefulset_service_and_budget_fit_together() {
    let documents = yaml("kubernetes/ringkv.yaml");
    let kind = |kind: &str| -> Vec<&Value> {
        documents
            .iter()
            .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
            .collect()
    };
    let set = kind("StatefulSet")[0];
    let services = kind("Service");
    let budget = kind("PodDisruptionBudget")[0];
    let labels = get(set, "spec.template.metadata.labels");
    assert_eq!(get(set, "spec.selector.matchLabels"), labels);
    assert_eq!(get(budget, "spec.selector.matchLabels"), labels);
    assert_eq!(get(budget, "spec.maxUnavailable").as_u64(), Some(1));
    let headless_name = string(set, "spec.serviceName");
    let headless = services
        .iter()
        .find(|s| string(s, "metadata.name") == headless_name)
        .expect("the headless service the StatefulSet names");
    assert_eq!(string(headless, "spec.clusterIP"), "None");
    assert_eq!(
        get(headless, "spec.publishNotReadyAddresses").as_bool(),
        Some(true)
    );
    assert_eq!(get(headless, "spec.selector"), labels);

    let pod = get(set, "spec.template.spec");
    let container = get(pod, "containers.0");
    let mut env = BTreeMap::new();
    for entry in get(container, "env").as_sequence().expect("env") {
        if let Some(value) = entry.get("value").and_then(Value::as_str) {
            env.insert(string(entry, "name").to_string(), value.to_string());
        }
    }
    for needed in NEEDED {
        assert!(
            env.contains_key(needed),
            "the container does not set {needed}"
        );
    }
    assert!(
        !env.contains_key("RINGKV_NODE_ID"),
        "the id comes from the pod ordinal"
    );
    let replicas = get(set, "spec.replicas").as_u64().expect("replicas");
    let spares: u64 = env
        .get("RINGKV_SPARE_COUNT")
        .map_or(0, |count| count.parse().expect("a count"));
    assert_eq!(
        env["RINGKV_CLUSTER_SIZE"],
        (replicas - spares).to_string(),
        "every pod is a member or a spare"
    );
    // Peers by stable DNS names: <set>-<ordinal>.<headless service>.<namespace>.svc...
    let template = &env["RINGKV_PEER_ADDR_TEMPLATE"];
    let set_name = string(set, "metadata.name");
    assert!(
        template.starts_with(&format!(
            "{set_name}-{{id}}.{headless_name}.$(POD_NAMESPACE).svc"
        )),
        "{template}"
    );
    let namespace_from = get(container, "env.0.valueFrom.fieldRef.fieldPath");
    assert_eq!(namespace_from.as_str(), Some("metadata.namespace"));

    // Ports: the probes, the services and the listen addresses agree.
    let ports: BTreeMap<&str, u64> = get(container, "ports")
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                string(p, "name"),
                get(p, "containerPort").as_u64().expect("port"),
            )
        })
        .collect();
    for (name, key) in [
        ("client", "RINGKV_CLIENT_LISTEN"),
        ("peer", "RINGKV_PEER_LISTEN"),
        ("http", "RINGKV_HTTP_LISTEN"),
    ] {
        assert!(env[key].ends_with(&format!(":{}", ports[name])), "{key}");
    }
    assert!(template.ends_with(&format!(":{}", ports["peer"])));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            string(container, &format!("{probe}.httpGet.path")),
            "/health"
        );
        assert_eq!(string(container, &format!("{probe}.httpGet.port")), "http");
    }
    for service in &services {
        for port in get(service, "spec.ports").as_sequence().expect("ports") {
            let target = string(port, "targetPort");
            assert!(ports.contains_key(target), "service port {target}");
        }
    }

    // The data directory is the volume claim; the secrets are mounted where the env reads them.
    let mounts: BTreeMap<&str, &str> = get(container, "volumeMounts")
        .as_sequence()
        .expect("mounts")
        .iter()
        .map(|m| (string(m, "name"), string(m, "mountPath")))
        .collect();
    let claim = string(set, "spec.volumeClaimTemplates.0.metadata.name");
    assert_eq!(mounts[claim], env["RINGKV_DATA_DIR"]);
    let secrets_dir = mounts["secrets"];
    for key in [
        "RINGKV_CLUSTER_SECRET_FILE",
        "RINGKV_PASSWORD_FILE",
        "RINGKV_ADMIN_TOKEN_FILE",
    ] {
        assert!(env[key].starts_with(&format!("{secrets_dir}/")), "{key}");
    }
    assert_eq!(
        mounts["tmp"], env["TMPDIR"],
        "the config is written to a writable place"
    );
    assert!(
        get(pod, "terminationGracePeriodSeconds")
            .as_u64()
            .expect("grace")
            >= 60
    );

    // Each pod's environment, as Kubernetes expands it, configures a node the node accepts.
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_secrets(dir.path());
    env.remove("TMPDIR");
    let expanded = env["RINGKV_PEER_ADDR_TEMPLATE"].replace("$(POD_NAMESPACE)", "ringkv");
    env.insert("RINGKV_PEER_ADDR_TEMPLATE".to_string(), expanded);
    for ordinal in 0..replicas {
        let pod_name = format!("{set_name}-{ordinal}");
        let seen = check_deployment_env(dir.path(), &secrets, secrets_dir, &pod_name, &env);
        assert_eq!(seen["node_id"], ordinal.to_string());
        assert!(
            seen["peers"].contains(&format!(
                "{}={set_name}-{}.{headless_name}.ringkv.svc.cluster.local:7380",
                (ordinal + 1) % replicas,
                (ordinal + 1) % replicas
            )),
            "{seen:?}"
        );
    }
}

#[test]
fn the_dockerfile_ships_the_entrypoint_it_runs() {
    let text = read("Dockerfile");
    let instructions: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' '))
        .filter(|(word, _)| word.chars().all(|c| c.is_ascii_uppercase()))
        .collect();
    let all = |word: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(w, _)| *w == word)
            .map(|(_, rest)| rest.trim())
            .collect()
    };
    assert_eq!(
        all("FROM").len(),
        2,
        "multi-stage: a build stage and a runtime stage"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut entrypoint_copied = None;
    for copy in all("COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().collect();
        let (sources, destination) = parts.split_at(parts.len() - 1);
        for source in sources {
            assert!(root.join(source).exists(), "COPY {source}: missing");
            if source.ends_with("docker-entrypoint.sh") {
                entrypoint_copied = Some(destination[0]);
            }
        }
    }
    let entrypoint = all("ENTRYPOINT");
    assert_eq!(
        entrypoint,
        [format!(
            "[\"{}\"]",
            entrypoint_copied.expect("the entrypoint is copied")
        )]
    );
    let exposed: BTreeSet<&str> = all("EXPOSE")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert_eq!(exposed, BTreeSet::from(["6380", "7380", "9380"]));
    assert_eq!(all("STOPSIGNAL"), ["SIGTERM"]);
    // `COPY . .` takes the whole context: the secrets must not be part of it.
    let ignored = read("Dockerfile.dockerignore");
    assert!(
        ignored.lines().any(|l| l.trim() == "deploy/secrets"),
        "{ignored}"
    );
    let secrets_ignored = read(".gitignore");
    assert!(secrets_ignored.lines().any(|l| l.trim() == "secrets/"));
    let user = all("USER");
    assert!(!user.is_empty() && !user.iter().any(|u| u.starts_with("root")));
    let script = read("docker-entrypoint.sh");
    for (port, variable) in [
        ("6380", "RINGKV_CLIENT_LISTEN:-0.0.0.0:"),
        ("7380", "RINGKV_PEER_LISTEN:-0.0.0.0:"),
        ("9380", "RINGKV_HTTP_LISTEN:-0.0.0.0:"),
    ] {
        assert!(script.contains(&format!("{variable}{port}")), "{variable}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(deploy_dir().join("docker-entrypoint.sh"))
            .expect("entrypoint")
            .permissions(),
    );
    assert!(mode & 0o111 != 0, "the entrypoint must be executable");
}

#[test]
fn the_systemd_unit_verifies_and_drains() {
    let unit = read("ringkv.service");
    let settings: BTreeMap<&str, &str> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    assert_eq!(settings["Type"], "exec");
    assert_eq!(settings["KillSignal"], "SIGTERM");
    let stop: u64 = settings["TimeoutStopSec"].parse().expect("seconds");
    // A drain waits for client commands up to the request timeout, then syncs and flushes.
    let defaults = ringkv_node::config::FileConfig::parse("node_id = 1\n")
        .and_then(|file| file.validate())
        .expect("defaults");
    assert!(
        stop * 1000 >= 10 * defaults.cluster.request_timeout_ms,
        "{stop}"
    );
    let files: usize = settings["LimitNOFILE"].parse().expect("a number");
    let connections =
        defaults.limits.connections_max + defaults.limits.connections_reserved_loopback;
    assert!(
        files >= connections + 1000,
        "{files} < {connections} connections + files"
    );
    assert!(settings["ExecStart"].ends_with("--config /etc/ringkv/node.toml"));
    assert!(settings["ExecStartPre"].ends_with("--check-config"));

    let Some(analyze) = find_on_path("systemd-analyze") else {
        println!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let verify = |text: &str| {
        let path = dir.path().join("ringkv.service");
        std::fs::write(&path, text).expect("unit");
        let output = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("run systemd-analyze");
        (output.status.success(), text_of(&output))
    };
    fn text_of(output: &Output) -> String {
        text(output)
    }
    // The unit names the installed path; point it at the binary this test built.
    let here = unit.replace("/usr/local/bin/ringkv-node", node_binary());
    let (ok, said) = verify(&here);
    assert!(ok && !said.contains("ringkv.service"), "{said}");
    // The control: verify does look at the binary.
    let missing = unit.replace("/usr/local/bin/ringkv-node", "/nonexistent/ringkv-node");
    let (ok, said) = verify(&missing);
    assert!(!ok && said.contains("/nonexistent/ringkv-node"), "{said}");
}

/// Every `ringkv_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("ringkv_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/ringkv-dashboard.json")).expect("dashboard JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().expect("a title").to_string();
            panel["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_string()))
        })
        .collect()
}

#[test]
fn the_dashboard_and_alerts_name_metrics_a_node_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = format!("127.0.0.1:{}", free_port());
    let node = NodeProcess::start(
        dir.path(),
        &args(&[
            "--dev",
            "--client-listen",
            "127.0.0.1:0",
            "--http-listen",
            &http,
            "--data-dir",
            "data",
        ]),
        "dev",
    );
    let (code, exposition) = common::http(&http, "GET", "/metrics");
    assert_eq!(code, 200);
    drop(node);
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();

    let queries = dashboard_queries();
    let in_dashboard: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .collect();
    let in_alerts = metric_names(&read("prometheus/ringkv-alerts.yml"));
    for name in in_dashboard.iter().chain(&in_alerts) {
        assert!(
            exported.contains(name),
            "{name} is not exported by the node"
        );
    }
    // What the issue asks each to show.
    let panel = |needle: &str| -> Vec<&str> {
        queries
            .iter()
            .filter(|(_, e)| e.contains(needle))
            .map(|(t, _)| t.as_str())
            .collect()
    };
    for (needle, what) in [
        (
            "sum by (level, outcome) (rate(ringkv_requests_total",
            "requests by level and outcome",
        ),
        (
            "histogram_quantile(0.99, sum by (operation, le) (rate(ringkv_request_duration",
            "p99 by operation",
        ),
        ("ringkv_hints_pending", "hints pending"),
        (
            "ringkv_anti_entropy_ranges_differing_total",
            "anti-entropy ranges differing",
        ),
        ("max by (status) (ringkv_members", "members by status"),
        (
            "ringkv_storage_sync_duration_seconds_bucket",
            "fsync latency",
        ),
        ("ringkv_storage_level0_tables", "level-0 tables"),
        ("ringkv_storage_write_stalls_total", "stalls"),
    ] {
        assert!(!panel(needle).is_empty(), "no panel shows {what}");
    }
    let alerts = read("prometheus/ringkv-alerts.yml");
    for (needle, what) in [
        ("ringkv_members{status=\"down\"}", "a member down"),
        ("deriv(ringkv_hints_pending", "hints growing"),
        ("outcome=\"indeterminate\"", "indeterminate writes"),
    ] {
        assert!(alerts.contains(needle), "no alert for {what}");
    }
}

#[test]
fn alert_rules_and_dashboard_queries_pass_promtool() {
    let Some(promtool) = find_on_path("promtool") else {
        println!(
            "skipped: promtool is not installed (Debian: apt-get install prometheus; .ci/run \
             installs it when it can)"
        );
        return;
    };
    let prometheus = deploy_dir().join("prometheus");
    let run = |args: &[&str], cwd: &Path| {
        let output = Command::new(&promtool)
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("run promtool");
        assert!(
            output.status.success(),
            "promtool {args:?}: {}",
            text(&output)
        );
        text(&output)
    };
    let checked = run(&["check", "rules", "ringkv-alerts.yml"], &prometheus);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = run(&["test", "rules", "ringkv-alerts.test.yml"], &prometheus);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // The dashboard's queries as recording rules, so promtool parses each as PromQL (Grafana's
    // variables replaced by what they expand to).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$node", ".*");
        rules.push_str(&format!(
            "      - record: ringkv:dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("quoted")
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), &rules).expect("rules");
    let queries = dashboard_queries().len();
    let checked = run(&["check", "rules", "dashboard.yml"], dir.path());
    assert!(
        checked.contains(&format!("SUCCESS: {queries} rules found")),
        "{checked}"
    );
}

/// A node started through the entrypoint; killed on drop if still running.
struct EntrypointNode {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    http: String,
    client: String,
}

impl EntrypointNode {
    fn start(dir: &Path, id: u32, env: &[(&str, String)], http: String) -> EntrypointNode {
        let node_dir = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let mut env = env.to_vec();
        env.push(("RINGKV_HTTP_LISTEN", http.clone()));
        env.push((
            "RINGKV_DATA_DIR",
            node_dir.join("data").display().to_string(),
        ));
        let mut child = entrypoint(&node_dir, &env, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the entrypoint");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = EntrypointNode {
            child,
            lines,
            http,
            client: String::new(),
        };
        let line = node.wait_for_line(ringkv_node::server::LISTENING_CLIENTS);
        node.client = line.rsplit(' ').next().expect("an address").to_string();
        node
    }

    fn wait_for_line(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(LINE_WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} ({e:?})"),
            }
        }
    }

    /// SIGTERM, and the node must drain and exit 0.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status}");
    }
}

impl Drop for EntrypointNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The documented way to grow a cluster, end to end through the entrypoint: three nodes, a
/// rolling restart that adds one spare to every node's configuration (`RINGKV_SPARE_COUNT`),
/// the spare started, `ringkv admin join`, and every node then agrees on a four-member ring in
/// which the data written before is still readable. Each node has its own loopback address
/// (127.0.1.ID), so one address template serves them all, as a DNS name does in Kubernetes.
#[test]
fn a_cluster_grows_by_a_rolling_restart_with_a_spare_and_a_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_secrets(dir.path());
    let peer_port = free_port();
    let env = |id: u32, spares: u32| -> Vec<(&'static str, String)> {
        vec![
            ("RINGKV_NODE_ID", id.to_string()),
            ("RINGKV_CLUSTER_SIZE", "3".to_string()),
            ("RINGKV_SPARE_COUNT", spares.to_string()),
            (
                "RINGKV_PEER_ADDR_TEMPLATE",
                format!("127.0.1.{{id}}:{peer_port}"),
            ),
            ("RINGKV_PEER_LISTEN", format!("127.0.1.{id}:{peer_port}")),
            ("RINGKV_CLIENT_LISTEN", "127.0.0.1:0".to_string()),
            (
                "RINGKV_CLUSTER_SECRET_FILE",
                secrets.join("cluster-secret").display().to_string(),
            ),
            (
                "RINGKV_ADMIN_TOKEN_FILE",
                secrets.join("admin-token").display().to_string(),
            ),
            ("RINGKV_N", "3".to_string()),
        ]
    };
    let http: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes: Vec<EntrypointNode> = (0..3)
        .map(|id| EntrypointNode::start(dir.path(), id, &env(id, 0), http[id as usize].clone()))
        .collect();
    for node in &nodes {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    let mut client = connect(&nodes[0].client);
    for i in 0..20 {
        let key = format!("k{i}");
        run(&mut client, &["SET", &key, &key]).expect("set");
    }
    drop(client);

    // The rolling restart: each node in turn drains and comes back knowing the spare.
    for id in 0..3u32 {
        let old = nodes.remove(0);
        old.stop();
        nodes.push(EntrypointNode::start(
            dir.path(),
            id,
            &env(id, 1),
            http[id as usize].clone(),
        ));
    }
    let spare = EntrypointNode::start(dir.path(), 3, &env(3, 1), http[3].clone());
    spare.wait_for_line(ringkv_node::server::PEERS_REACHED);
    let spare_client = spare.client.clone();
    nodes.push(spare);

    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "admin",
            "join",
            "3",
            "--node-http",
            &http[0],
            "--token-file",
        ])
        .arg(secrets.join("admin-token"))
        .output()
        .expect("ringkv admin join");
    assert!(output.status.success(), "{}", text(&output));

    let waited = ringkv_node::clock::Clock::stopwatch();
    loop {
        let rings: Vec<(u64, usize)> = nodes
            .iter()
            .map(|node| {
                let (code, body) = common::http(&node.http, "GET", "/status.json");
                assert_eq!(code, 200, "{body}");
                let status: ringkv_node::status::StatusSnapshot =
                    serde_json::from_str(&body).expect("status");
                let members = status.members.iter().filter(|m| m.in_ring).count();
                (status.ring_changes, members)
            })
            .collect();
        if rings.iter().all(|&ring| ring == (4, 4)) {
            break;
        }
        assert!(
            waited.elapsed() < LINE_WAIT,
            "the nodes do not agree on the four-member ring: {rings:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Reads through the new member find what was written before it joined (at quorum, two of
    // a key's three replicas answer, whichever of them anti-entropy has reached yet).
    let mut client = connect(&spare_client);
    for i in 0..20 {
        let key = format!("k{i}");
        assert_eq!(
            run(&mut client, &["GET", &key]).expect("get"),
            bulk(&key),
            "{key}"
        );
    }
    for node in nodes {
        node.stop();
    }
}
