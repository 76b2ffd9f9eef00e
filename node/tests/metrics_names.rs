//! `/metrics` of a real dev node is the interface dashboards and alerts are written against: this
//! pins every series name a scrape yields, with its family's type, its label names and its help
//! text, in `metrics_families.txt`. The exposition format may change (Prometheus text 0.0.4 or
//! OpenMetrics: a counter family `x` with samples `x_total`) but not what a scraper stores.
//!
//! A metric added on purpose is a new line in `metrics_families.txt`: run the test with
//! `RINGKV_BLESS_METRICS=1` to rewrite the file, and review the diff.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};

/// One line per (series name, type, label names, help) in a scrape.
fn families(body: &str) -> BTreeSet<String> {
    let mut help: BTreeMap<&str, &str> = BTreeMap::new();
    let mut family: Option<(&str, &str)> = None;
    let mut rows = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name, text);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            family = Some((name, kind));
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            let (family_name, kind) =
                family.unwrap_or_else(|| panic!("a sample before any # TYPE: {line}"));
            let name_end = line.find(['{', ' ']).expect("a sample has a value");
            let name = &line[..name_end];
            assert!(
                name.starts_with(family_name),
                "sample {name} is not of family {family_name}"
            );
            // Label names sorted: their order on a line means nothing to a scraper.
            let mut labels: Vec<&str> = match line[name_end..].strip_prefix('{') {
                Some(rest) => {
                    let inside = &rest[..rest.find('}').expect("closed labels")];
                    inside
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| pair.split_once('=').expect("label=value").0)
                        .collect()
                }
                None => Vec::new(),
            };
            labels.sort_unstable();
            let help = help.get(family_name).copied().unwrap_or("(no help)");
            rows.insert(format!("{name}\t{kind}\t{}\t{help}", labels.join(",")));
        }
    }
    rows
}

#[test]
fn a_dev_node_exposes_every_pinned_metric_and_no_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http_addr = format!("127.0.0.1:{}", free_port());
    let node = NodeProcess::start(
        dir.path(),
        &args(&[
            "--dev",
            "--client-listen",
            "127.0.0.1:0",
            "--http-listen",
            &http_addr,
        ]),
        "dev",
    );
    // A request of each kind, so every labelled series a request creates exists whatever the
    // exposition does with series never touched.
    let mut client = node.client();
    run(&mut client, &["SET", "k", "v"]).expect("set");
    run(&mut client, &["GET", "k"]).expect("get");
    run(&mut client, &["DEL", "k"]).expect("del");
    let (status, body) = http(&http_addr, "GET", "/metrics");
    assert_eq!(status, 200);
    let actual = families(&body);
    let pinned_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics_families.txt");
    if std::env::var_os("RINGKV_BLESS_METRICS").is_some() {
        let text: String = actual.iter().map(|row| format!("{row}\n")).collect();
        std::fs::write(&pinned_path, text).expect("write metrics_families.txt");
        return;
    }
    let pinned: BTreeSet<String> = std::fs::read_to_string(&pinned_path)
        .expect("tests/metrics_families.txt")
        .lines()
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = pinned.difference(&actual).collect();
    let extra: Vec<&String> = actual.difference(&pinned).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "/metrics changed (rerun with RINGKV_BLESS_METRICS=1 if on purpose)\n\
         missing or changed:\n{missing:#?}\nnew or changed:\n{extra:#?}"
    );
    // Every series carries the node label.
    assert!(actual
        .iter()
        .all(|row| row.split('\t').nth(2).is_some_and(|l| l.contains("node"))));
}
