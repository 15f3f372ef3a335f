//! Standard output for every command.
//!
//! `println!` panics when standard output is gone ("failed printing to stdout: Broken
//! pipe", with a backtrace): `tarn fs ls -R / | head` would end that way. Every command
//! writes through [`outln!`] instead, which returns the error; a reader that closed the
//! pipe becomes [`StdoutClosed`], and `main` ends the command quietly with status 0 (as
//! `hdfs dfs` does; `ls` is killed by SIGPIPE, which `set -o pipefail` scripts then see as
//! a failure of `tarn fs ls | grep -q x`). `tarn/clippy.toml` forbids `print!` and
//! `println!` in this crate, so no command can bring the panic back.
//!
//! Why not SIGPIPE's default disposition (what C tools get)? The process also writes to
//! sockets: tokio writes TLS records with `writev`, which (unlike `send` with
//! `MSG_NOSIGNAL`) raises SIGPIPE on a connection the peer closed, so a namenode failover
//! or a datanode dying under `tarn fs put` would kill the client silently instead of
//! letting it retry or recover its pipeline.

use std::fmt;
use std::io::{self, Write};

/// Standard output was closed by its reader: the command stops, and `tarn` exits quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes to standard output (through its lock, so lines of concurrent tasks never mix).
pub fn write(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    io::stdout().lock().write_fmt(args).map_err(error)
}

/// The error of a failed write to standard output: [`StdoutClosed`] for a closed pipe,
/// else the I/O error (a full disk behind a redirection is a failure).
pub fn error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("write to standard output")
    }
}

/// Whether `e` (or what it wraps) is a closed standard output.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// For daemons: what they print is a courtesy, so a closed standard output does not stop
/// them (a command stops; a daemon keeps serving).
pub fn daemon_note(r: anyhow::Result<()>) {
    if let Err(e) = r {
        tracing::debug!(error = %format!("{e:#}"), "standard output not written");
    }
}

/// `println!` that returns `anyhow::Result<()>` instead of panicking (see the module docs).
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// `pb` styled by `template` (a bar or spinner of indicatif), drawn on standard error only
/// when it is a terminal: redirected output gets no progress frames.
pub fn progress(pb: indicatif::ProgressBar, template: &str) -> indicatif::ProgressBar {
    if !io::IsTerminal::is_terminal(&io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| {
        if pb.length().is_some() {
            indicatif::ProgressStyle::default_bar()
        } else {
            indicatif::ProgressStyle::default_spinner()
        }
    });
    pb.set_style(style);
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_told_apart_from_other_write_errors() {
        let closed = error(io::Error::from(io::ErrorKind::BrokenPipe)).context("list /");
        assert!(is_closed(&closed), "{closed:#}");
        let full = error(io::Error::new(io::ErrorKind::StorageFull, "no space"));
        assert!(!is_closed(&full));
        assert!(format!("{full:#}").contains("write to standard output"), "{full:#}");
    }
}
