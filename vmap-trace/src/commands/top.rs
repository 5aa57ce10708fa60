//! `vmap-trace top`: a live, full-screen view of vmap lock contention.
use std::time::Duration;

use anyhow::{bail, Result};

use crate::probe::slowpath::SpinWaitChoice;
use crate::top::{self, SortKey, TopOptions};

/// Live full-screen view of vmap lock contention, refreshed every interval (like top).
///
/// Keys: s sort, p/space pause, r reset, f flamegraph, a window, tab view, ? help, q quit.
/// Needs root (or CAP_BPF and CAP_PERFMON) and a terminal; for non-interactive use see
/// `vmap-trace record`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Seconds between refreshes (0.1 to 60).
    #[arg(short = 'i', long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
    /// Initial order of the lock and task tables (`s` cycles it).
    #[arg(short, long, value_enum, default_value_t = SortKey::Wait)]
    pub sort: SortKey,
    /// No colours (also when the NO_COLOR environment variable is set and not empty).
    #[arg(long)]
    pub no_color: bool,
    /// Also time every vmap lock acquisition (wait and hold) around the lock calls, which adds
    /// the hold columns. Needs kprobes or fentry and probes every spin_lock/mutex_lock in the
    /// system (see `record --lock-timing`).
    #[arg(long)]
    pub lock_timing: bool,
    /// Where spinlock wait times come from: the qspinlock slow path (sees two-way waits and
    /// the spinning of VMs without paravirt spinlocks), the lock:contention_* tracepoints, or
    /// auto (the slow path where kprobes or fentry work). See `record --help`.
    #[arg(long, value_name = "SOURCE", value_enum, default_value_t = SpinWaitChoice::Auto)]
    pub spin_waits: SpinWaitChoice,
}

impl TopArgs {
    pub fn options(&self) -> Result<TopOptions> {
        if !(self.interval.is_finite() && (0.1..=60.0).contains(&self.interval)) {
            bail!(
                "--interval must be between 0.1 and 60 seconds, got {}",
                self.interval
            );
        }
        Ok(TopOptions {
            interval: Duration::from_secs_f64(self.interval),
            sort: self.sort,
            color: color_wanted(self.no_color, std::env::var_os("NO_COLOR")),
            lock_timing: self.lock_timing,
            spin_waits: self.spin_waits,
        })
    }
}

/// Colour unless `--no-color`, or NO_COLOR set to anything but the empty string
/// (https://no-color.org).
fn color_wanted(no_color_flag: bool, no_color_env: Option<std::ffi::OsString>) -> bool {
    !(no_color_flag || no_color_env.is_some_and(|v| !v.is_empty()))
}

pub fn run(args: TopArgs) -> Result<()> {
    top::run(args.options()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        top: TopArgs,
    }

    fn parse(args: &[&str]) -> Result<TopOptions> {
        Cli::try_parse_from(std::iter::once("top").chain(args.iter().copied()))?
            .top
            .options()
    }

    #[test]
    fn flags_and_defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.interval, o.sort, o.lock_timing),
            (Duration::from_secs(1), SortKey::Wait, false)
        );
        let o = parse(&["-i", "0.5", "--sort", "count", "--lock-timing"]).unwrap();
        assert_eq!(
            (o.interval, o.sort, o.lock_timing),
            (Duration::from_millis(500), SortKey::Count, true)
        );
        assert!(parse(&["--interval", "0.05"])
            .unwrap_err()
            .to_string()
            .contains("between 0.1 and 60"));
        assert!(parse(&["--interval", "NaN"]).is_err());
        assert!(parse(&["--sort", "bogus"]).is_err());
    }

    #[test]
    fn no_color_flag_and_environment() {
        assert!(color_wanted(false, None));
        assert!(!color_wanted(true, None));
        assert!(!color_wanted(false, Some("1".into())));
        // https://no-color.org: set but empty does not count
        assert!(color_wanted(false, Some("".into())));
    }
}
