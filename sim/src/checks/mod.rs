//! Checkers: they judge only what clients saw (the history) and what replicas hold, never the
//! system's opinion of itself.

pub mod cas;
pub mod convergence;
pub mod counters;
pub mod durability;
pub mod linearizable;
pub mod scan;
pub mod siblings;
pub mod ttl;

use std::fmt;

/// The verdict of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Held; the string says what was checked.
    Pass(String),
    /// Violated; the string explains the first violations.
    Fail(String),
    /// Not run, and why.
    Skipped(String),
}

impl Verdict {
    /// `pass`, `fail` or `skipped`, as JSON reports it.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass(_) => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::Skipped(_) => "skipped",
        }
    }

    /// The explanation.
    pub fn detail(&self) -> &str {
        match self {
            Verdict::Pass(s) | Verdict::Fail(s) | Verdict::Skipped(s) => s,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.word(), self.detail())
    }
}
