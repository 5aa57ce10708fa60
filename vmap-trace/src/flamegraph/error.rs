//! Everything that can go wrong between a recording and a flamegraph, each with a message that
//! says what the user can do about it.
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum FlamegraphError {
    /// `--lock` named a lock this recording never saw.
    #[error("no lock in this recording matches `{requested}`; {available}")]
    UnknownLock {
        requested: String,
        available: String,
    },

    /// `--lock` was neither a lock name nor an address.
    #[error("`{0}` is not a lock: give a lock name (as `vmap-trace report` shows it) or its address (0x...)")]
    BadLockSelector(String),

    /// The recording holds no contended stacks at all.
    #[error("this recording has no contended kernel stacks to draw: {reason}")]
    NoStacks { reason: String },

    /// Stacks exist, but the filters leave none with a non-zero weight.
    #[error("no contended stacks match {filters}; {hint}")]
    NothingMatches { filters: String, hint: String },

    #[error("this recording has no hold times (needs kprobe/fentry mode); use --weight wait or --weight count")]
    NoHoldTimes,

    /// `record --lock-timing` measured holds per vmap lock, but no stack is attached to them.
    #[error(
        "this recording has hold times per vmap lock ({locks}), not per stack, so they cannot weight a flamegraph; \
         `vmap-trace report` shows them; use --weight wait or --weight count here"
    )]
    HoldTimesWithoutStacks { locks: String },

    #[error("this recording has no user stacks: it was made without `record --user-stacks`, so --user-stacks cannot be honoured")]
    NoUserStacks,

    /// Stacks were not keyed by task in this recording, only per-task totals exist.
    #[error(
        "--task {task}: this recording keeps per-task totals, not per-task stacks (record with --per-task or --user-stacks), so a flamegraph cannot be filtered by task; {detail}"
    )]
    NoPerTaskStacks { task: String, detail: String },

    /// A task filter that matches no process of a per-task recording.
    #[error("--task {task}: no contended stack in this recording comes from such a process; processes with the most wait: {known}")]
    UnknownTask { task: String, known: String },

    /// An error about one recording of several (a diff's before or after side).
    #[error("{name}: {source}")]
    InRecording {
        name: String,
        source: Box<FlamegraphError>,
    },

    /// The two sides of a diff cannot be compared.
    #[error("cannot diff: {0}")]
    Diff(String),

    /// A line of folded text is not `frame;frame;... COUNT`.
    #[error("folded stacks, line {line_no}: expected `frame;frame;... COUNT`, got `{line}`")]
    BadFoldedLine { line_no: usize, line: String },

    /// Not a `source`: the message already carries the io error, and `{:#}` would print it
    /// twice.
    #[error("cannot render the flamegraph: {0}")]
    Render(io::Error),
}

impl From<io::Error> for FlamegraphError {
    fn from(e: io::Error) -> Self {
        FlamegraphError::Render(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_render_error_names_its_io_error_once() {
        let e: anyhow::Error =
            FlamegraphError::from(io::Error::from_raw_os_error(libc::ENOSPC)).into();
        let text = format!("{e:#}");
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
    }
}
