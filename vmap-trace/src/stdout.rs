//! Standard output for every command, through writes that return errors: `print!` panics
//! when stdout is a pipe its reader has closed (`vmap-trace doctor | true`).
//!
//! A reader that went away (`| head`) is its choice, not a failure: the command stops writing
//! and succeeds. Any other write error (a full disk behind `>`) is an error, with a message.
use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result};

const CANNOT: &str = "cannot write to standard output";

/// What became of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    All,
    /// The reader closed the pipe: write no more, and end successfully.
    ReaderGone,
}

/// Write `text` to standard output.
pub fn print(text: &str) -> Result<Written> {
    write_with(|w| w.write_all(text.as_bytes()).context(CANNOT))
}

/// Write to standard output through `write` (buffered, flushed at the end).
pub fn write_with(write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<Written> {
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let written = write(&mut w).and_then(|()| w.flush().context(CANNOT));
    match written {
        Ok(()) => Ok(Written::All),
        Err(e) if is_broken_pipe(&e) => Ok(Written::ReaderGone),
        Err(e) => Err(e),
    }
}

/// Whether `e` is, somewhere in its chain, a write to a pipe nobody reads any more.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use crate::flamegraph::FlamegraphError;
    let broken = |io: &io::Error| io.kind() == io::ErrorKind::BrokenPipe;
    e.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(broken)
            || matches!(
                cause.downcast_ref::<FlamegraphError>(),
                Some(FlamegraphError::Render(io)) if broken(io)
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flamegraph::FlamegraphError;

    #[test]
    fn only_a_closed_pipe_counts_as_the_reader_gone() {
        let pipe = || io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::new(pipe()).context(CANNOT)));
        assert!(is_broken_pipe(&FlamegraphError::Render(pipe()).into()));
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(!is_broken_pipe(&anyhow::Error::new(full).context(CANNOT)));
        assert!(!is_broken_pipe(&FlamegraphError::NoHoldTimes.into()));
    }
}
