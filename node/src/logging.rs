//! Where the node's log lines and status lines go, without ever failing the node.
//!
//! A log write can fail at any time for reasons outside the node: stderr on a full disk, or a
//! pipe whose reader went away (`ringkv-node 2>&1 | logger` with the logger restarted). Rust's
//! `eprintln!`/`println!` panic on such a failure, and tracing-subscriber reports its own write
//! errors with `eprintln!`, so one lost log line used to kill whichever task logged it (the
//! driver, leaving a process that answered PING but no request: issue #17 item 1). Here a failed
//! write is dropped and counted (`ringkv_log_write_errors_total`); serving requests matters
//! more than any log line.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// Log and status writes that failed, process-wide (the log sink is process-wide too).
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Log and status writes that failed since the process started.
pub fn write_errors() -> u64 {
    WRITE_ERRORS.load(Ordering::Relaxed)
}

/// A writer that forwards to `inner` and reports success whatever happens, counting failures.
pub struct Lossy<W>(pub W);

impl<W: Write> Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.write_all(buf).is_err() {
            WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.0.flush().is_err() {
            WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The log sink for `tracing_subscriber::fmt().with_writer(...)`: stderr, never failing.
pub fn stderr() -> Lossy<io::Stderr> {
    Lossy(io::stderr())
}

/// Prints one status line on stdout (the lines scripts wait for), never failing.
pub fn status_line(text: &str) {
    let mut out = Lossy(io::stdout().lock());
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader is gone.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_failed_write_is_counted_not_raised() {
        let before = write_errors();
        let mut lossy = Lossy(Broken);
        assert_eq!(lossy.write(b"a line\n").unwrap(), 7);
        assert!(lossy.flush().is_ok());
        assert!(write_errors() >= before + 2);
    }
}
