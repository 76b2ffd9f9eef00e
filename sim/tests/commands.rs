//! The command interface of the simulated workload: what the history records of each command is
//! what core's command machines mean by it (a vector-clock `SET` is a read and then a write with
//! that read's context; a `DEL` deletes only what its read found), and the default interface
//! records no commands at all.

use sim::history::{CommandOutcome, CommandResultKind, History, HistoryOp, OpKind, OpOutcome};
use sim::world::World;
use sim::Scenario;

fn run(name: &str, seed: u64, edit: impl Fn(String) -> String) -> History {
    let path = format!("{}/../scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let scenario = Scenario::parse(&path, &edit(text)).unwrap_or_else(|e| panic!("{e:?}"));
    let mut world = World::new(&scenario, seed, false).expect("world");
    world.run();
    world.history
}

fn steps<'a>(history: &'a History, ops: &[usize]) -> Vec<&'a HistoryOp> {
    ops.iter().map(|&i| &history.ops[i]).collect()
}

#[test]
fn vector_clock_set_and_del_write_with_the_context_their_read_returned() {
    let history = run("vector-clock-commands", 1, |t| t);
    let (mut sets, mut dels_found, mut dels_absent) = (0, 0, 0);
    for command in &history.commands {
        let ops = steps(&history, &command.ops);
        assert!(ops
            .iter()
            .all(|op| op.key == command.key && op.client == command.client));
        match command.name {
            "SET" | "DEL" => {
                let Some(read) = ops.first() else {
                    continue; // abandoned before its first request (the workload ended)
                };
                assert_eq!(
                    read.kind,
                    OpKind::Get,
                    "{command:?} does not start with a read"
                );
                let Some(write) = ops.get(1) else {
                    // No write: the read failed, or a DEL found nothing (and counted 0).
                    if command.name == "DEL"
                        && read.outcome == OpOutcome::Ok
                        && command.outcome != CommandOutcome::Unfinished
                    {
                        assert!(
                            read.read.is_empty(),
                            "{command:?} found a value, deleted none"
                        );
                        assert_eq!(
                            command.outcome,
                            CommandOutcome::Result(CommandResultKind::Count(0))
                        );
                        dels_absent += 1;
                    }
                    continue;
                };
                assert_eq!(ops.len(), 2, "{command:?}");
                assert_eq!(read.outcome, OpOutcome::Ok);
                assert!(read.context.is_some(), "an ok read records its context");
                assert_eq!(
                    write.context, read.context,
                    "{command:?} wrote with another context than its read returned"
                );
                if command.name == "SET" {
                    assert_eq!(write.kind, OpKind::Put);
                    sets += 1;
                } else {
                    assert_eq!(write.kind, OpKind::Delete);
                    assert!(
                        !read.read.is_empty(),
                        "{command:?} deleted what it did not find"
                    );
                    dels_found += 1;
                }
                if write.outcome == OpOutcome::Ok {
                    assert!(command.wrote(), "{command:?} acknowledged but not reported");
                }
            }
            "GET" | "KV.GET" => assert!(ops.len() <= 1 && ops.iter().all(|op| !op.is_write())),
            "KV.PUT" | "KV.DEL" => assert!(ops.len() <= 1 && ops.iter().all(|op| op.is_write())),
            other => panic!("the workload issued {other}"),
        }
    }
    assert!(
        sets > 100 && dels_found > 10 && dels_absent > 0,
        "{sets} {dels_found} {dels_absent}"
    );
}

#[test]
fn lww_set_is_one_put_without_context() {
    let history = run("lww-commands", 1, |t| t);
    let mut sets = 0;
    for command in history.commands.iter().filter(|c| c.name == "SET") {
        let ops = steps(&history, &command.ops);
        assert!(ops.len() <= 1, "{command:?}");
        if let Some(put) = ops.first() {
            assert_eq!(put.kind, OpKind::Put);
            assert_eq!(put.context, None);
            sets += 1;
        }
    }
    assert!(sets > 100, "{sets}");
}

#[test]
fn the_default_interface_records_no_commands() {
    let history = run("vector-clock-commands", 1, |t| {
        t.replace("interface = \"commands\"\n", "")
    });
    assert!(!history.ops.is_empty());
    assert!(history.commands.is_empty());
    assert!(history.ops.iter().all(|op| op.command.is_none()));
}
