//! The daemon's log lines on stderr, in a form journald understands.
//!
//! Under systemd, stderr goes to the journal, which adds its own timestamps and reads a
//! leading `<N>` as the syslog priority (sd-daemon(3)): lines are `<6>message`, `<4>message`,
//! `<3>message`, no colours, no timestamps. Elsewhere they are `vmap-trace: info: message`.
//! `auto` picks the journald form when `JOURNAL_STREAM` names our actual stderr (systemd sets
//! it to the device:inode of the stream it connected, so a variable merely inherited by a child
//! whose stderr was redirected does not count).
//!
//! The daemon writes its own lines rather than going through the `log` facade: `main`
//! initialises env_logger (timestamped, `warn` by default) for every command, and a daemon's
//! lifecycle messages must not depend on RUST_LOG.
use std::fmt::Display;
use std::io::Write;

/// How log lines are formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journald when stderr is connected to the journal, plain otherwise.
    Auto,
    /// `<6>message`: syslog priority prefixes for journald (no timestamps, no colours).
    Journald,
    /// `vmap-trace: info: message`.
    Plain,
}

/// Syslog priorities used by the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Info = 6,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
        }
    }
}

/// Writes one line per message to stderr; cheap to copy into every thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logger {
    journald: bool,
}

impl Logger {
    pub fn new(format: LogFormat) -> Self {
        let journald = match format {
            LogFormat::Auto => {
                journal_stream_is_stderr(std::env::var("JOURNAL_STREAM").ok().as_deref())
            }
            LogFormat::Journald => true,
            LogFormat::Plain => false,
        };
        Logger { journald }
    }

    /// The line for `message` at `level`, without the newline.
    pub fn format(&self, level: Level, message: &str) -> String {
        // One message, one line: journald would split an embedded newline into lines that
        // lose the priority prefix.
        let message = message.replace('\n', " ");
        if self.journald {
            format!("<{}>{message}", level as u8)
        } else {
            format!("vmap-trace: {}: {message}", level.word())
        }
    }

    pub fn log(&self, level: Level, message: impl Display) {
        let line = self.format(level, &message.to_string());
        // A closed stderr must not bring the daemon down.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    pub fn info(&self, message: impl Display) {
        self.log(Level::Info, message)
    }

    pub fn warning(&self, message: impl Display) {
        self.log(Level::Warning, message)
    }

    pub fn error(&self, message: impl Display) {
        self.log(Level::Error, message)
    }
}

/// True when the value of `JOURNAL_STREAM` ("<device>:<inode>") matches file descriptor 2.
fn journal_stream_is_stderr(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat only writes into the zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_lines_carry_the_priority_and_nothing_else() {
        let log = Logger::new(LogFormat::Journald);
        assert_eq!(log.format(Level::Info, "serving"), "<6>serving");
        assert_eq!(log.format(Level::Warning, "slow"), "<4>slow");
        assert_eq!(log.format(Level::Error, "a\nb"), "<3>a b");
    }

    #[test]
    fn plain_lines_name_the_program_and_level() {
        let log = Logger::new(LogFormat::Plain);
        assert_eq!(
            log.format(Level::Warning, "slow"),
            "vmap-trace: warning: slow"
        );
    }

    #[test]
    fn auto_ignores_a_journal_stream_that_is_not_our_stderr() {
        // Device 0 inode 0 is never a real stream.
        assert!(!journal_stream_is_stderr(Some("0:0")));
        assert!(!journal_stream_is_stderr(Some("garbage")));
        assert!(!journal_stream_is_stderr(None));
        // Our actual stderr, whatever it is, matches.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(2, &mut st) }, 0);
        assert!(journal_stream_is_stderr(Some(&format!(
            "{}:{}",
            st.st_dev, st.st_ino
        ))));
    }
}
