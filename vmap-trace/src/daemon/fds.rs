//! File descriptors: the daemon must never let HTTP connections take the descriptors its
//! recordings and map reads need (EMFILE there loses data; a refused scrape is retried).
//!
//! At start the soft RLIMIT_NOFILE is raised to the hard limit (bounded), and the connection cap
//! is the smaller of `--max-connections` and what the limit leaves beside the descriptors
//! already open (maps, programs, links, the runtime's) and a reserve.

/// Descriptors kept free for the sampler thread: a recording's temporary file and directory
/// listing, /proc and tracefs reads, symbolizer files; a few dozen at most, doubled for margin.
pub const FD_RESERVE: u64 = 128;

/// The soft limit is raised no further: enough for any sensible `--max-connections`, and
/// small enough that nothing sized by the limit (fd tables, poll sets) grows absurdly when the
/// hard limit is "infinity".
pub const NOFILE_CEILING: u64 = 65_536;

/// The soft and hard RLIMIT_NOFILE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: u64,
    pub hard: u64,
}

fn get() -> std::io::Result<NofileLimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(NofileLimit {
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// The soft limit to ask for: the hard one, at most [`NOFILE_CEILING`], never lower than now.
pub fn raised_soft(limit: NofileLimit) -> u64 {
    limit.hard.min(NOFILE_CEILING).max(limit.soft)
}

/// Raise the soft limit (see [`raised_soft`]); returns the limit before and after.
pub fn raise_nofile_limit() -> std::io::Result<(NofileLimit, NofileLimit)> {
    let before = get()?;
    let soft = raised_soft(before);
    if soft != before.soft {
        let r = libc::rlimit {
            rlim_cur: soft,
            rlim_max: before.hard,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, get()?))
}

/// Descriptors open in this process now.
pub fn open_fds() -> std::io::Result<u64> {
    // The directory's own descriptor is in the listing too.
    Ok((std::fs::read_dir("/proc/self/fd")?.count() as u64).saturating_sub(1))
}

/// How many connections may be open at once: `max_connections`, or fewer if the soft limit
/// leaves less room beside the `open` descriptors and [`FD_RESERVE`]; at least one.
pub fn connection_cap(max_connections: usize, soft: u64, open: u64) -> usize {
    let room = soft.saturating_sub(open.saturating_add(FD_RESERVE));
    (max_connections as u64).min(room).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_within_the_ceiling() {
        let l = |soft, hard| NofileLimit { soft, hard };
        assert_eq!(raised_soft(l(1024, 524_288)), NOFILE_CEILING);
        assert_eq!(raised_soft(l(1024, 4096)), 4096);
        assert_eq!(raised_soft(l(1024, 1024)), 1024);
        assert_eq!(raised_soft(l(100_000, 200_000)), 100_000, "never lowered");
        assert_eq!(raised_soft(l(1024, libc::RLIM_INFINITY)), NOFILE_CEILING);
    }

    #[test]
    fn raising_the_live_limit_reaches_the_computed_value() {
        let (before, after) = raise_nofile_limit().unwrap();
        assert_eq!(after.soft, raised_soft(before));
        assert_eq!(after.hard, before.hard);
    }

    #[test]
    fn the_cap_leaves_the_reserve_free() {
        // The shipped unit's 1024 descriptors, ~100 taken by maps, programs and links.
        assert_eq!(connection_cap(256, 1024, 100), 256);
        assert_eq!(
            connection_cap(2000, 1024, 100),
            1024 - 100 - FD_RESERVE as usize
        );
        assert_eq!(connection_cap(256, 200, 100), 1, "at least one, never zero");
        assert!(
            open_fds().unwrap() >= 3,
            "stdin, stdout and stderr at least"
        );
    }
}
