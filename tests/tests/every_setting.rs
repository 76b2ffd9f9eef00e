//! Every core setting is settable from both files that configure a cluster (issue #12 item 6):
//! the node's TOML and a scenario's `[cluster]` table. The list of settings is read from core's
//! own section types, so a setting added there is covered here the day it is added; the test
//! fails if either consumer cannot set it, or sets it without it reaching the configuration the
//! machines are built from.

use ringkv_core::config::setting_names;
use ringkv_core::membership::MembershipConfig;
use ringkv_core::ClusterConfig;
use ringkv_node::config::{cluster_setting_table, FileConfig, Settings};
use sim::scenario::Scenario;

/// A core section of settings, as both consumers know it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Section {
    Cluster,
    Membership,
}

/// Every (section, setting) core declares.
fn core_settings() -> Vec<(Section, &'static str)> {
    let cluster = setting_names::<ClusterConfig>();
    let membership = setting_names::<MembershipConfig>();
    assert!(cluster.len() > 20, "{cluster:?}");
    assert!(membership.len() > 5, "{membership:?}");
    let both: Vec<&&str> = cluster.iter().filter(|n| membership.contains(n)).collect();
    assert!(
        both.is_empty(),
        "{both:?} is in both sections: a flat [cluster] table could not tell them apart"
    );
    let cluster = cluster.iter().map(|name| (Section::Cluster, *name));
    let membership = membership.iter().map(|name| (Section::Membership, *name));
    cluster.chain(membership).collect()
}

/// The section's defaults as a file would spell them.
fn defaults(section: Section) -> toml::Table {
    let value = match section {
        Section::Cluster => toml::Table::try_from(ClusterConfig::default()),
        Section::Membership => toml::Table::try_from(MembershipConfig::default()),
    };
    value.expect("a section renders as a table")
}

/// A value for `name` other than its default that is valid on its own in both consumers
/// (`datacenter`: the name the consumer gives its only datacenter). A number steps down by one
/// (every limit's default sits above its minimum), a switch flips; a setting of another kind
/// needs a line here.
fn non_default(section: Section, name: &str, datacenter: &str) -> toml::Value {
    match (section, name) {
        (Section::Cluster, "consistency") => toml::Value::String("quorum".into()),
        (Section::Cluster, "conflict") => toml::Value::String("vector-clock".into()),
        (Section::Cluster, "replicas_per_datacenter") => toml::Value::Table(
            toml::Table::from_iter([(datacenter.to_string(), toml::Value::Integer(3))]),
        ),
        _ => match defaults(section).get(name) {
            Some(toml::Value::Integer(default)) if *default > 1 => {
                toml::Value::Integer(default - 1)
            }
            Some(toml::Value::Integer(default)) => toml::Value::Integer(default + 1),
            Some(toml::Value::Boolean(default)) => toml::Value::Boolean(!default),
            other => panic!(
                "{name} (default {other:?}): add a non-default value for this new setting here"
            ),
        },
    }
}

/// The value `name` has in a built configuration, as a file would spell it.
fn rendered(
    section: Section,
    cluster: &ClusterConfig,
    membership: &MembershipConfig,
    name: &str,
) -> Option<toml::Value> {
    let table = match section {
        Section::Cluster => toml::Table::try_from(cluster),
        Section::Membership => toml::Table::try_from(membership),
    };
    table.expect("renders").get(name).cloned()
}

/// A node file with four peers (so `n`, `r` and `w` can move both ways) and `extra` merged in.
fn node_settings(extra: toml::Table) -> Settings {
    let secret = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("every-setting.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write the secret");
    let mut file: toml::Table = toml::from_str(&format!(
        "node_id = 1\ncluster_secret_file = {:?}\n\
         peers = [\"2=127.0.0.1:7002\", \"3=127.0.0.1:7003\", \"4=127.0.0.1:7004\", \
         \"5=127.0.0.1:7005\"]\n",
        secret.display().to_string()
    ))
    .expect("base file");
    for (table, values) in extra {
        file.insert(table, values);
    }
    let text = toml::to_string(&file).expect("renders");
    FileConfig::parse(&text)
        .and_then(|f| f.validate())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A scenario with five nodes in one datacenter, gossip on, and `extra` merged into `[cluster]`.
fn scenario(extra: toml::Table) -> Scenario {
    let mut file: toml::Table = toml::from_str(
        r#"
name = "every-setting"
description = "one core setting set away from its default"
duration_ms = 1000
settle_ms = 1000
[cluster]
nodes = 5
gossip = true
[workload]
clients = 1
operations = 10
keys = 5
read_fraction = 0.5
value_bytes = [8, 16]
"#,
    )
    .expect("base scenario");
    let cluster = file
        .get_mut("cluster")
        .and_then(toml::Value::as_table_mut)
        .expect("[cluster]");
    cluster.extend(extra);
    let text = toml::to_string(&file).expect("renders");
    Scenario::parse("every-setting.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn node_rendered(section: Section, settings: &Settings, name: &str) -> Option<toml::Value> {
    rendered(section, &settings.cluster, &settings.membership, name)
}

fn scenario_rendered(section: Section, scenario: &Scenario, name: &str) -> Option<toml::Value> {
    let cluster = scenario.cluster_config().expect("valid cluster");
    let membership = scenario
        .membership_config()
        .expect("valid membership")
        .expect("gossip is on");
    rendered(section, &cluster, &membership, name)
}

#[test]
fn every_core_setting_is_settable_from_the_node_file_and_from_a_scenario() {
    let node_baseline = node_settings(toml::Table::new());
    let scenario_baseline = scenario(toml::Table::new());
    for (section, name) in core_settings() {
        // The node: in the table its file keeps the setting in.
        let value = non_default(section, name, "dc1");
        let table = match section {
            Section::Cluster => cluster_setting_table(name),
            Section::Membership => "membership",
        };
        assert_ne!(
            node_rendered(section, &node_baseline, name).as_ref(),
            Some(&value),
            "node: {name} = {value} is no change from the baseline"
        );
        let extra = toml::Table::from_iter([(
            table.to_string(),
            toml::Value::Table(toml::Table::from_iter([(name.to_string(), value.clone())])),
        )]);
        let settings = node_settings(extra);
        assert_eq!(
            node_rendered(section, &settings, name),
            Some(value),
            "node: [{table}] {name} did not arrive"
        );

        // The scenario: flat in `[cluster]`.
        let value = non_default(section, name, "dc0");
        assert_ne!(
            scenario_rendered(section, &scenario_baseline, name).as_ref(),
            Some(&value),
            "scenario: {name} = {value} is no change from the baseline"
        );
        let extra = toml::Table::from_iter([(name.to_string(), value.clone())]);
        let scenario = scenario(extra);
        assert_eq!(
            scenario_rendered(section, &scenario, name),
            Some(value),
            "scenario: [cluster] {name} did not arrive"
        );
    }
}

#[test]
fn fields_a_driver_derives_are_no_file_setting() {
    // The node must never reach the simulator's switches, whatever a file says.
    for name in ["simulation", "unsafe_ack_before_persist", "seeds"] {
        assert!(
            !core_settings().iter().any(|(_, setting)| *setting == name),
            "{name}"
        );
        let text = format!("node_id = 1\n[limits]\n{name} = true\n");
        let error = FileConfig::parse(&text).expect_err(name);
        assert_eq!(error.field, format!("limits.{name}"));
    }
}
