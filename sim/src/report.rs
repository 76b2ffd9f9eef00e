//! The result of one seed: the human summary and the one-line JSON (serde_json, read back by a
//! `--jobs` parent), and the totals of a sweep.

use crate::checks::Verdict;
use crate::json::{to_line, Fixed, Ordered};
use crate::scenario::Expect;
use ringkv_core::buggify::SiteCount;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Operation counts by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Fault sites (`buggify!`) reached while live, with how often each was reached and fired,
    /// in name order; sites not live at this seed are absent.
    pub buggify: Vec<(&'static str, SiteCount)>,
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
        replay_command(&self.path, self.seed)
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
        if !self.buggify.is_empty() {
            let sites: Vec<String> = self
                .buggify
                .iter()
                .map(|(site, c)| format!("{site} {} of {}", c.fired, c.reached))
                .collect();
            let _ = writeln!(s, "buggify      fired of reached: {}", sites.join(", "));
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

    /// The seed's JSON line as data: what `--json` prints and what a `--jobs` parent reads back
    /// from its children.
    pub fn line(&self) -> ReportLine {
        let named = |pairs: &[(&'static str, Verdict)], f: fn(&Verdict) -> String| {
            Ordered(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), f(v)))
                    .collect(),
            )
        };
        let counts = |pairs: &[(&'static str, u64)]| {
            Ordered(pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect())
        };
        let t = &self.availability_time;
        ReportLine {
            scenario: self.scenario.clone(),
            seed: self.seed,
            ok: self.ok(),
            as_expected: self.as_expected(),
            fingerprint: self.fingerprint.clone(),
            ops: self.ops.clone(),
            availability: Fixed::new(self.availability),
            availability_time: AvailabilityTimeLine {
                window_ms: t.window_ms,
                windows: t.windows,
                some_ok: Fixed::new(t.some_ok),
                all_ok: Fixed::new(t.all_ok),
            },
            latency_ms: LatencyLine {
                p50: Fixed::new(self.latency_p50_ms),
                p99: Fixed::new(self.latency_p99_ms),
            },
            checks: named(&self.checks, |v| v.word().to_string()),
            check_details: named(&self.checks, |v| v.detail().to_string()),
            events: self.events,
            sim_ms: self.sim_ms,
            wall_ms: self.wall_ms,
            gossip: self.gossip.as_ref().map(|g| GossipLine {
                messages: g.messages,
                bytes: g.bytes,
                down_ms: g.down_ms.iter().map(|&ms| Fixed::new(ms)).collect(),
                alive_ms: g.alive_ms.iter().map(|&ms| Fixed::new(ms)).collect(),
            }),
            rejections: counts(&self.rejections),
            sends_failed: counts(&self.sends_failed),
            buggify: Ordered(
                self.buggify
                    .iter()
                    .map(|(site, c)| ((*site).to_string(), SiteLine::from(*c)))
                    .collect(),
            ),
            replay: self.replay_command(),
            drawn: Ordered(self.swarm.clone()),
        }
    }

    /// One JSON object on one line; `drawn` (last) holds the swarm knobs, empty for an
    /// ordinary scenario.
    pub fn to_json(&self) -> String {
        to_line(&self.line())
    }
}

/// One seed's `--json` line for a seed that ran: the fields, their order and their shapes are
/// the interface scripts read (`"as_expected": true`, `"drawn"`), so they change only on purpose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportLine {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// No check failed.
    pub ok: bool,
    /// The outcome is the scenario's `expect`.
    pub as_expected: bool,
    /// Fingerprint of the event trace.
    pub fingerprint: String,
    /// Operations by outcome.
    pub ops: OpCounts,
    /// Fraction of fault-phase operations that succeeded.
    pub availability: Fixed<6>,
    /// Availability over time.
    pub availability_time: AvailabilityTimeLine,
    /// Simulated latency of successful operations.
    pub latency_ms: LatencyLine,
    /// `pass`, `fail` or `skipped` by check, in the checks' fixed order.
    pub checks: Ordered<String>,
    /// Each check's explanation.
    pub check_details: Ordered<String>,
    /// Events processed.
    pub events: u64,
    /// Simulated time, milliseconds.
    pub sim_ms: u64,
    /// Wall time, milliseconds.
    pub wall_ms: u64,
    /// Gossip figures, `null` without gossip.
    pub gossip: Option<GossipLine>,
    /// Typed rejections by error.
    pub rejections: Ordered<u64>,
    /// Sends not queued, by class.
    pub sends_failed: Ordered<u64>,
    /// Fault sites reached while live, by name: `{"area/what": {"reached": n, "fired": m}}`.
    /// Lines written before sites were counted have none.
    #[serde(default)]
    pub buggify: Ordered<SiteLine>,
    /// The command that replays the seed.
    pub replay: String,
    /// The knobs a swarm seed drew (`{}` otherwise); last, so a line ends with `}}`.
    pub drawn: Ordered<crate::swarm::Knob>,
}

/// `availability_time` of a [`ReportLine`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityTimeLine {
    /// Window length, milliseconds.
    pub window_ms: u64,
    /// Windows in the fault phase.
    pub windows: u64,
    /// Fraction of windows in which some request succeeded.
    pub some_ok: Fixed<6>,
    /// Fraction of windows in which every request succeeded.
    pub all_ok: Fixed<6>,
}

/// `latency_ms` of a [`ReportLine`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyLine {
    /// Median.
    pub p50: Fixed<3>,
    /// 99th percentile.
    pub p99: Fixed<3>,
}

/// One site of `buggify` in a [`ReportLine`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteLine {
    /// Reached at a seed where the site is live.
    pub reached: u64,
    /// Of those, fired.
    pub fired: u64,
}

impl From<SiteCount> for SiteLine {
    fn from(c: SiteCount) -> Self {
        SiteLine {
            reached: c.reached,
            fired: c.fired,
        }
    }
}

/// `gossip` of a [`ReportLine`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GossipLine {
    /// Gossip messages sent.
    pub messages: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// Milliseconds until a crash was seen `Down` everywhere.
    pub down_ms: Vec<Fixed<1>>,
    /// Milliseconds until a restart was seen `Alive` everywhere.
    pub alive_ms: Vec<Fixed<1>>,
}

/// The `--json` line of a seed that produced no report (it panicked, or the child process
/// running it died): not as expected, with why and the replay command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PanicLine {
    /// Scenario file.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Always false.
    pub ok: bool,
    /// Always false.
    pub as_expected: bool,
    /// The panic message and location, or how the child died.
    pub panic: String,
    /// The command that replays the seed.
    pub replay: String,
}

impl PanicLine {
    /// The line of `seed` of the scenario at `path`, which gave no report because of `why`.
    pub fn new(path: &str, seed: u64, why: &str) -> Self {
        Self {
            scenario: path.to_string(),
            seed,
            ok: false,
            as_expected: false,
            panic: why.to_string(),
            replay: replay_command(path, seed),
        }
    }
}

/// Whatever `--json` prints for one seed. A `--jobs` parent parses its children's lines into
/// this same type, so it reports exactly what a single process does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SeedLine {
    /// The seed ran.
    Report(Box<ReportLine>),
    /// The seed gave no report.
    Panic(PanicLine),
}

impl SeedLine {
    /// Parses one line a child printed.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The line's text.
    pub fn to_json(&self) -> String {
        to_line(self)
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        match self {
            SeedLine::Report(r) => r.seed,
            SeedLine::Panic(p) => p.seed,
        }
    }

    /// The outcome is what the scenario expects.
    pub fn as_expected(&self) -> bool {
        match self {
            SeedLine::Report(r) => r.as_expected,
            SeedLine::Panic(_) => false,
        }
    }

    /// The seed's line in a human sweep listing.
    pub fn human(&self) -> String {
        match self {
            SeedLine::Report(r) => format!(
                "seed {:>6}  {}  ok {:>6} failed {:>5} indet {:>5}  avail {:>6.2}%  fp {}{}",
                r.seed,
                if r.ok { "pass     " } else { "violation" },
                r.ops.ok,
                r.ops.failed,
                r.ops.indeterminate,
                r.availability.0 * 100.0,
                r.fingerprint,
                if r.as_expected { "" } else { "  << UNEXPECTED" }
            ),
            SeedLine::Panic(p) => {
                format!("seed {:>6}  PANIC      {}  << UNEXPECTED", p.seed, p.panic)
            }
        }
    }
}

/// The command that replays `seed` of the scenario at `path`.
pub fn replay_command(path: &str, seed: u64) -> String {
    format!("cargo run --release -p sim -- {path} --seed {seed}")
}

/// What a seed sweep reports after its per-seed lines, added up from the lines themselves so
/// that one process and `--jobs N` processes say the same.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepTotals {
    /// Seeds reported.
    pub seeds: u64,
    /// Of which as expected.
    pub as_expected: u64,
    /// Events over all seeds that ran.
    pub events: u64,
    /// Simulated milliseconds over all seeds that ran.
    pub sim_ms: u64,
    /// Why each seed that was not as expected was not, with its replay command, in seed order.
    pub unexpected: Vec<String>,
    /// Fault sites over the seeds that ran, by name.
    pub buggify: BTreeMap<String, SiteTotals>,
}

/// One fault site over a sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteTotals {
    /// Seeds at which the site was reached while live.
    pub seeds_reached: u64,
    /// Seeds at which it fired at least once.
    pub seeds_fired: u64,
    /// Reaches while live over all seeds.
    pub reached: u64,
    /// Firings over all seeds.
    pub fired: u64,
}

impl SweepTotals {
    /// Counts one seed's line.
    pub fn add(&mut self, line: &SeedLine) {
        self.seeds += 1;
        match line {
            SeedLine::Report(r) => {
                self.events += r.events;
                self.sim_ms += r.sim_ms;
                for (site, count) in &r.buggify.0 {
                    let totals = self.buggify.entry(site.clone()).or_default();
                    totals.seeds_reached += u64::from(count.reached > 0);
                    totals.seeds_fired += u64::from(count.fired > 0);
                    totals.reached += count.reached;
                    totals.fired += count.fired;
                }
                if r.as_expected {
                    self.as_expected += 1;
                } else {
                    self.unexpected.push(format!(
                        "seed {} did not match expect; replay: {}",
                        r.seed, r.replay
                    ));
                }
            }
            SeedLine::Panic(p) => self.unexpected.push(format!(
                "seed {} panicked: {}; replay: {}",
                p.seed, p.panic, p.replay
            )),
        }
    }

    /// The summary line of a human sweep listing; `wall_s` is the sweep's wall time.
    pub fn summary(&self, wall_s: f64) -> String {
        let wall = wall_s.max(1e-9);
        format!(
            "{} seeds, {} as expected; {} events in {wall:.1} s ({:.0} events/s, {:.0}x real time)",
            self.seeds,
            self.as_expected,
            self.events,
            self.events as f64 / wall,
            self.sim_ms as f64 / 1000.0 / wall
        )
    }
}

impl SweepTotals {
    /// The registered fault sites that never fired in this sweep, in registry order.
    pub fn sites_never_fired(&self) -> Vec<&'static str> {
        ringkv_core::buggify::registered_sites()
            .filter(|site| self.buggify.get(*site).is_none_or(|t| t.fired == 0))
            .collect()
    }

    /// The fault-site table of this sweep (`sim --buggify-report`): every registered site, and
    /// any unregistered one that was reached, with the seeds at which it was live and fired and
    /// its reaches and firings; then the sites that never fired.
    pub fn buggify_table(&self) -> String {
        let mut names: Vec<String> = ringkv_core::buggify::registered_sites()
            .map(str::to_string)
            .collect();
        let unregistered: Vec<String> = self
            .buggify
            .keys()
            .filter(|site| !names.contains(site))
            .cloned()
            .collect();
        names.extend(unregistered);
        let width = names.iter().map(String::len).max().unwrap_or(4).max(4);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<width$}  {:>13}  {:>11}  {:>9}  {:>7}",
            "site", "seeds reached", "seeds fired", "reached", "fired"
        );
        for site in &names {
            let t = self.buggify.get(site).copied().unwrap_or_default();
            let _ = writeln!(
                s,
                "{site:<width$}  {:>13}  {:>11}  {:>9}  {:>7}",
                t.seeds_reached, t.seeds_fired, t.reached, t.fired
            );
        }
        let never = self.sites_never_fired();
        if never.is_empty() {
            let _ = writeln!(s, "every registered site fired in {} seeds", self.seeds);
        } else {
            let _ = writeln!(
                s,
                "never fired in {} seeds: {}",
                self.seeds,
                never.join(", ")
            );
        }
        s
    }
}

/// Named counts as `name n, name n`.
fn counts_line(counts: &[(&'static str, u64)]) -> String {
    let items: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    items.join(", ")
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

    /// A registered site with no firing in the sweep is named, whether it was reached (live but
    /// never fired) or never seen; a site that fired once is not.
    #[test]
    fn the_sweep_table_names_every_registered_site_that_never_fired() {
        let registered: Vec<&str> = ringkv_core::buggify::registered_sites().collect();
        let mut totals = SweepTotals {
            seeds: 3,
            ..SweepTotals::default()
        };
        for site in &registered {
            totals.buggify.insert(
                (*site).to_string(),
                SiteTotals {
                    seeds_reached: 1,
                    seeds_fired: 1,
                    reached: 10,
                    fired: 1,
                },
            );
        }
        assert!(totals.sites_never_fired().is_empty());
        assert!(totals
            .buggify_table()
            .contains("every registered site fired in 3 seeds"));
        let quiet = registered[0];
        if let Some(t) = totals.buggify.get_mut(quiet) {
            t.fired = 0;
            t.seeds_fired = 0;
        }
        assert_eq!(totals.sites_never_fired(), [quiet]);
        totals.buggify.remove(quiet);
        totals
            .buggify
            .insert("test/unregistered".into(), SiteTotals::default());
        assert_eq!(totals.sites_never_fired(), [quiet]);
        let table = totals.buggify_table();
        assert!(
            table.contains(&format!("never fired in 3 seeds: {quiet}")),
            "{table}"
        );
        assert!(table.contains("test/unregistered"), "{table}");
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.99), 4.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
