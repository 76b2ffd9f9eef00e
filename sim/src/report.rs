//! The result of one seed: the human summary and the one-line JSON.

use crate::checks::Verdict;
use crate::scenario::Expect;
use std::fmt::Write as _;

/// Operation counts by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Succeeded.
    pub ok: u64,
    /// Known to have had no effect.
    pub failed: u64,
    /// May or may not have taken effect.
    pub indeterminate: u64,
}

/// Availability over time: the fault phase cut into equal windows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimeAvailability {
    /// Window length, milliseconds.
    pub window_ms: u64,
    /// Windows in the fault phase.
    pub windows: u64,
    /// Fraction of windows in which some request succeeded.
    pub some_ok: f64,
    /// Fraction of windows in which requests ended and every one succeeded.
    pub all_ok: f64,
}

/// Everything reported about one seed.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Scenario file, for the replay command.
    pub path: String,
    /// The seed.
    pub seed: u64,
    /// Expected outcome.
    pub expect: Expect,
    /// Options drawn from the seed.
    pub drawn: Vec<String>,
    /// Swarm mode: the knobs this seed drew (empty for an ordinary scenario).
    pub swarm: crate::swarm::Knobs,
    /// Operations by outcome.
    pub ops: OpCounts,
    /// Fraction of fault-phase operations that succeeded.
    pub availability: f64,
    /// Availability over time during the fault phase.
    pub availability_time: TimeAvailability,
    /// Simulated latency of successful operations, milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub latency_p99_ms: f64,
    /// Events processed.
    pub events: u64,
    /// Messages between nodes, lost, duplicated.
    pub messages: (u64, u64, u64),
    /// Faults applied.
    pub faults: u64,
    /// Anti-entropy messages and their encoded bytes.
    pub anti_entropy: (u64, u64),
    /// Sends that could not be made (a full link or an unencodable message), by the class the
    /// core treated them as (see `RunCounters::sends_failed`).
    pub sends_failed: Vec<(&'static str, u64)>,
    /// Typed rejections clients were answered with, by error (`busy`, `value-too-large`, ...).
    pub rejections: Vec<(&'static str, u64)>,
    /// Hints: (handed off, stored, delivered, overflowed, expired, pending at the end).
    pub hints: (u64, u64, u64, u64, u64, usize),
    /// Gossip traffic and failure-detection times, when gossip ran.
    pub gossip: Option<crate::world::GossipFigures>,
    /// Nodes in the cluster (for per-node rates).
    pub nodes: u32,
    /// Simulated time, milliseconds.
    pub sim_ms: u64,
    /// Wall time, milliseconds (0 until the caller measures it).
    pub wall_ms: u64,
    /// Check verdicts by name, in a fixed order.
    pub checks: Vec<(&'static str, Verdict)>,
    /// Fingerprint of the whole event trace.
    pub fingerprint: String,
}

impl RunReport {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|(_, v)| matches!(v, Verdict::Fail(_)))
    }

    /// True when the outcome is what the scenario expects.
    pub fn as_expected(&self) -> bool {
        match self.expect {
            Expect::Pass => self.ok(),
            Expect::Violation => !self.ok(),
        }
    }

    /// The command that replays this seed.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p sim -- {} --seed {}",
            self.path, self.seed
        )
    }

    /// The human summary; `with_wall_time = false` gives a machine-independent text (snapshots).
    pub fn render(&self, with_wall_time: bool) -> String {
        let mut s = String::new();
        let total = self.ops.ok + self.ops.failed + self.ops.indeterminate;
        let _ = writeln!(s, "scenario     {}", self.scenario);
        let _ = writeln!(s, "seed         {}", self.seed);
        if !self.swarm.is_empty() {
            let _ = writeln!(s, "drawn        {}", crate::swarm::knobs_line(&self.swarm));
        }
        for line in &self.drawn {
            let _ = writeln!(s, "drawn        {line}");
        }
        let _ = writeln!(
            s,
            "operations   {total}: ok {}, failed {}, indeterminate {}",
            self.ops.ok, self.ops.failed, self.ops.indeterminate
        );
        if !self.rejections.is_empty() {
            let _ = writeln!(s, "rejected     {}", counts_line(&self.rejections));
        }
        let _ = writeln!(
            s,
            "availability {:.2}% of operations during faults succeeded",
            self.availability * 100.0
        );
        let t = &self.availability_time;
        if t.windows > 0 {
            let _ = writeln!(
            s,
            "  over time  {:.2}% of {} windows of {} ms had a request succeed, {:.2}% had every request succeed",
            t.some_ok * 100.0,
            t.windows,
            t.window_ms,
            t.all_ok * 100.0
        );
        }
        let _ = writeln!(
            s,
            "latency      p50 {:.2} ms, p99 {:.2} ms (simulated)",
            self.latency_p50_ms, self.latency_p99_ms
        );
        let (sent, lost, duplicated) = self.messages;
        let _ = writeln!(
            s,
            "network      {sent} messages, {lost} lost, {duplicated} duplicated; {} faults applied",
            self.faults
        );
        if !self.sends_failed.is_empty() {
            let _ = writeln!(
                s,
                "backpressure sends not queued: {} (a request counts as its replica's Busy refusal)",
                counts_line(&self.sends_failed)
            );
        }
        let _ = writeln!(
            s,
            "events       {} over {:.1} s simulated",
            self.events,
            self.sim_ms as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "repair       anti-entropy {} messages, {} bytes",
            self.anti_entropy.0, self.anti_entropy.1
        );
        let (handed, stored, delivered, overflowed, expired, pending) = self.hints;
        if handed + stored > 0 || pending > 0 {
            let _ = writeln!(
                s,
                "hints        {handed} handed off, {stored} stored, {delivered} delivered, {overflowed} overflowed, {expired} expired, {pending} pending at the end"
            );
        }
        if let Some(g) = &self.gossip {
            let seconds = (self.sim_ms as f64 / 1000.0).max(1e-3);
            let per_node = f64::from(self.nodes.max(1)) * seconds;
            let _ = writeln!(
                s,
                "gossip       {} messages, {} bytes: {:.1} messages and {:.0} bytes per node per s",
                g.messages,
                g.bytes,
                g.messages as f64 / per_node,
                g.bytes as f64 / per_node
            );
            let _ = writeln!(
                s,
                "detection    crash seen Down everywhere after {} ms; restart seen Alive everywhere after {} ms",
                list_ms(&g.down_ms),
                list_ms(&g.alive_ms)
            );
        }
        if with_wall_time {
            let wall = self.wall_ms.max(1) as f64;
            let _ = writeln!(
                s,
                "wall time    {} ms: {:.0} events/s, {:.0}x real time",
                self.wall_ms,
                self.events as f64 / wall * 1000.0,
                self.sim_ms as f64 / wall
            );
        }
        for (name, verdict) in &self.checks {
            let _ = writeln!(s, "check        {name}: {verdict}");
        }
        let _ = writeln!(s, "fingerprint  {}", self.fingerprint);
        let expected = match self.expect {
            Expect::Pass => "pass",
            Expect::Violation => "violation",
        };
        let outcome = if self.ok() { "pass" } else { "violation" };
        let _ = writeln!(
            s,
            "result       {outcome} (expected {expected}){}",
            if self.as_expected() {
                ""
            } else {
                "  << UNEXPECTED"
            }
        );
        if !self.as_expected() {
            let _ = writeln!(s, "replay       {}", self.replay_command());
        }
        s
    }

    /// The gossip figures as JSON (`null` without gossip).
    fn gossip_json(&self) -> String {
        let Some(g) = &self.gossip else {
            return "null".into();
        };
        let list = |v: &[f64]| {
            let items: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
            format!("[{}]", items.join(", "))
        };
        format!(
            "{{\"messages\": {}, \"bytes\": {}, \"down_ms\": {}, \"alive_ms\": {}}}",
            g.messages,
            g.bytes,
            list(&g.down_ms),
            list(&g.alive_ms)
        )
    }

    /// One JSON object on one line; `drawn` (last, so the sweep's field reader never meets a
    /// knob's name first) holds the swarm knobs, empty for an ordinary scenario.
    pub fn to_json(&self) -> String {
        let checks: Vec<String> = self
            .checks
            .iter()
            .map(|(name, v)| format!("{}: {}", json_string(name), json_string(v.word())))
            .collect();
        let details: Vec<String> = self
            .checks
            .iter()
            .map(|(name, v)| format!("{}: {}", json_string(name), json_string(v.detail())))
            .collect();
        format!(
            concat!(
                "{{\"scenario\": {}, \"seed\": {}, \"ok\": {}, \"as_expected\": {}, \"fingerprint\": {}, ",
                "\"ops\": {{\"ok\": {}, \"failed\": {}, \"indeterminate\": {}}}, \"availability\": {:.6}, ",
                "\"availability_time\": {{\"window_ms\": {}, \"windows\": {}, \"some_ok\": {:.6}, \"all_ok\": {:.6}}}, ",
                "\"latency_ms\": {{\"p50\": {:.3}, \"p99\": {:.3}}}, \"checks\": {{{}}}, \"check_details\": {{{}}}, ",
                "\"events\": {}, \"sim_ms\": {}, \"wall_ms\": {}, \"gossip\": {}, ",
                "\"rejections\": {}, \"sends_failed\": {}, \"replay\": {}, \"drawn\": {}}}"
            ),
            json_string(&self.scenario),
            self.seed,
            self.ok(),
            self.as_expected(),
            json_string(&self.fingerprint),
            self.ops.ok,
            self.ops.failed,
            self.ops.indeterminate,
            self.availability,
            self.availability_time.window_ms,
            self.availability_time.windows,
            self.availability_time.some_ok,
            self.availability_time.all_ok,
            self.latency_p50_ms,
            self.latency_p99_ms,
            checks.join(", "),
            details.join(", "),
            self.events,
            self.sim_ms,
            self.wall_ms,
            self.gossip_json(),
            counts_json(&self.rejections),
            counts_json(&self.sends_failed),
            json_string(&self.replay_command()),
            crate::swarm::knobs_json(&self.swarm),
        )
    }
}

/// Named counts as `name n, name n`.
fn counts_line(counts: &[(&'static str, u64)]) -> String {
    let items: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    items.join(", ")
}

/// Named counts as a JSON object.
fn counts_json(counts: &[(&'static str, u64)]) -> String {
    let items: Vec<String> = counts
        .iter()
        .map(|(k, v)| format!("{}: {v}", json_string(k)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `q`-quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Milliseconds as a short list: "none", or up to six values.
fn list_ms(values: &[f64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = values.iter().take(6).map(|v| format!("{v:.0}")).collect();
    let more = if values.len() > 6 { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.99), 4.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
