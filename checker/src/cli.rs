//! The entry points a command line uses: read a file, check it, report.
//!
//! `sim check-history --model cas-register FILE [--report FILE.html]` maps to
//! [`check_history_file`]; printing the returned [`CheckReport`] gives a first line
//! `verdict: linearizable (12.3 ms)`, `verdict: not linearizable (key "x", ...) (..)` or
//! `verdict: unknown (...) (..)`, followed by statistics and, for a violation, the timeline.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::formats::{jepsen_etcd, porcupine_kv, register_log, ParseError};
use crate::history::{History, HistoryError};
use crate::model::Model;
use crate::models::cas_register::CasRegister;
use crate::models::register::Register;
use crate::scheduler::{check, SearchLimits, SearchStats};
use crate::verdict::Verdict;
use crate::{html, timeline};

/// The models a history file can be checked against, by their command-line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelName {
    /// `cas-register`: Jepsen etcd logs ([`jepsen_etcd`]), model [`CasRegister`].
    CasRegister,
    /// `kv-append`: Porcupine kv files ([`porcupine_kv`]), model [`crate::KvAppend`].
    KvAppend,
    /// `register`: ringkv register logs ([`register_log`]), model [`Register`].
    Register,
}

impl ModelName {
    /// Every model, in the order `--help` should list them.
    pub const ALL: [ModelName; 3] = [Self::CasRegister, Self::KvAppend, Self::Register];

    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CasRegister => "cas-register",
            Self::KvAppend => "kv-append",
            Self::Register => "register",
        }
    }
}

impl FromStr for ModelName {
    type Err = CheckerError;

    fn from_str(name: &str) -> Result<Self, CheckerError> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| CheckerError::UnknownModel(name.to_string()))
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a history file could not be checked (as opposed to a verdict, which is never an error).
#[derive(Debug)]
pub enum CheckerError {
    /// The model name is not one of [`ModelName::ALL`].
    UnknownModel(String),
    /// The file could not be read or the report written.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a history of the expected format.
    Parse(ParseError),
    /// The history is malformed (e.g. a return before its invocation).
    History(HistoryError),
}

impl fmt::Display for CheckerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownModel(name) => {
                let known: Vec<&str> = ModelName::ALL.iter().map(|m| m.as_str()).collect();
                write!(f, "unknown model {name:?} (known: {})", known.join(", "))
            }
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Parse(error) => write!(f, "malformed history: {error}"),
            Self::History(error) => write!(f, "malformed history: {error}"),
        }
    }
}

impl std::error::Error for CheckerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Parse(error) => Some(error),
            Self::History(error) => Some(error),
            Self::UnknownModel(_) => None,
        }
    }
}

/// The result of checking one history.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The model used.
    pub model: ModelName,
    /// The answer.
    pub verdict: Verdict,
    /// Work done by the search.
    pub stats: SearchStats,
    /// Wall time of the check (pre-checks and search), measured by [`measure_wall_time`].
    pub elapsed: Duration,
    /// Wall time spent parsing the file.
    pub parse_elapsed: Duration,
    /// The ASCII timeline of the failing window, for a violation.
    pub timeline: Option<String>,
}

impl CheckReport {
    /// A process exit code for command lines: 0 linearizable, 1 not linearizable, 2 unknown.
    /// (Errors, which produce no report, conventionally exit with 3.)
    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::Linearizable => 0,
            Verdict::NotLinearizable { .. } => 1,
            Verdict::Unknown { .. } => 2,
        }
    }

    /// A self-contained HTML page describing the verdict, headed by `title`.
    pub fn render_html(&self, title: &str) -> String {
        match &self.verdict {
            Verdict::NotLinearizable { key, violation } => html::render(title, key, violation),
            other => format!(
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
                 <body style=\"font-family: sans-serif; margin: 24px\"><h1>{t}: {v}</h1></body></html>\n",
                t = escape_html(title),
                v = escape_html(&other.to_string()),
            ),
        }
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.elapsed.as_secs_f64() * 1e3;
        writeln!(f, "verdict: {} ({ms:.1} ms)", self.verdict)?;
        writeln!(
            f,
            "model {}: {} operations on {} keys, {} search steps in {} rounds, largest memo {} entries \
             (parse {:.1} ms)",
            self.model,
            self.stats.operations,
            self.stats.keys,
            self.stats.steps,
            self.stats.rounds,
            self.stats.memo_entries_max,
            self.parse_elapsed.as_secs_f64() * 1e3,
        )?;
        if let Some(timeline) = &self.timeline {
            write!(f, "{timeline}")?;
        }
        Ok(())
    }
}

/// Runs `work` and returns its result with the wall time it took.
///
/// The one place this crate reads a clock: elapsed time is reported, never fed into a search.
#[allow(
    clippy::disallowed_methods,
    reason = "wall time is only reported, never used by the search"
)]
pub fn measure_wall_time<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = work();
    (value, start.elapsed())
}

fn run<M: Model>(
    model_name: ModelName,
    model: &M,
    history: &History<M::Input, M::Output>,
    limits: &SearchLimits,
    parse_elapsed: Duration,
) -> Result<CheckReport, CheckerError> {
    let (outcome, elapsed) = measure_wall_time(|| check(model, history, limits));
    let outcome = outcome.map_err(CheckerError::History)?;
    let timeline = match &outcome.verdict {
        Verdict::NotLinearizable { violation, .. } => Some(timeline::render(violation)),
        _ => None,
    };
    Ok(CheckReport {
        model: model_name,
        verdict: outcome.verdict,
        stats: outcome.stats,
        elapsed,
        parse_elapsed,
        timeline,
    })
}

/// Parses `text` in the format of `model_name` and checks it.
pub fn check_history_text(
    model_name: &str,
    text: &str,
    limits: &SearchLimits,
) -> Result<CheckReport, CheckerError> {
    let name: ModelName = model_name.parse()?;
    match name {
        ModelName::CasRegister => {
            let (history, parse_elapsed) = measure_wall_time(|| jepsen_etcd::parse(text));
            run(
                name,
                &CasRegister,
                &history.map_err(CheckerError::Parse)?,
                limits,
                parse_elapsed,
            )
        }
        ModelName::KvAppend => {
            let (parsed, parse_elapsed) = measure_wall_time(|| porcupine_kv::parse(text));
            let (model, history) = parsed.map_err(CheckerError::Parse)?;
            run(name, &model, &history, limits, parse_elapsed)
        }
        ModelName::Register => {
            let (history, parse_elapsed) = measure_wall_time(|| register_log::parse(text));
            run(
                name,
                &Register,
                &history.map_err(CheckerError::Parse)?,
                limits,
                parse_elapsed,
            )
        }
    }
}

/// Reads the history at `path`, checks it with the default [`SearchLimits`] against the model
/// named `model_name` (`cas-register`, `kv-append` or `register`), and, if `report_html` is
/// given, writes an HTML page of the verdict there.
pub fn check_history_file(
    model_name: &str,
    path: &Path,
    report_html: Option<&Path>,
) -> Result<CheckReport, CheckerError> {
    check_history_file_with_limits(model_name, path, report_html, &SearchLimits::default())
}

/// [`check_history_file`] with explicit limits.
pub fn check_history_file_with_limits(
    model_name: &str,
    path: &Path,
    report_html: Option<&Path>,
    limits: &SearchLimits,
) -> Result<CheckReport, CheckerError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let report = check_history_text(model_name, &text, limits)?;
    if let Some(out) = report_html {
        let title = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        std::fs::write(out, report.render_html(&title)).map_err(|source| CheckerError::Io {
            path: out.to_path_buf(),
            source,
        })?;
    }
    Ok(report)
}
