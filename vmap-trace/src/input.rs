//! Reading the files a user names on the command line (recordings, model workloads and
//! parameters), safely: every file input of the CLI goes through [`read`].
//!
//! A path can name anything: `/dev/zero` would be read until memory runs out, a FIFO with no
//! writer blocks `open` forever, a directory fails with an unhelpful EISDIR. So the file is
//! opened without blocking, checked on the opened descriptor (no race between check and read),
//! refused unless it is a regular file no larger than the limit for its kind, and read with a
//! bound, so a file that grows while it is read cannot take more than the limit either.
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest recording read: far above any real one (the kernel's tables are bounded; a
/// full stack table with user stacks is tens of MiB of JSON).
pub const RECORDING_LIMIT: u64 = 1 << 30;
/// The largest model input (TOML workloads and parameters, measured-workload JSON, the
/// published figures): these are hand-written files of a few KiB.
pub const TEXT_LIMIT: u64 = 16 << 20;

/// What a file holds, for messages: "vmap-trace reads {what} from regular files".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub what: &'static str,
    pub limit: u64,
}

pub const RECORDING: Kind = Kind {
    what: "recordings",
    limit: RECORDING_LIMIT,
};
pub const MODEL_INPUT: Kind = Kind {
    what: "model inputs",
    limit: TEXT_LIMIT,
};

/// The causes are part of each message, not `source`s: `{:#}` would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} is {file_type}: vmap-trace reads {what} from regular files")]
    NotRegular {
        path: String,
        file_type: &'static str,
        what: &'static str,
    },
    #[error("{path} is larger than {limit} bytes, the most vmap-trace reads for {what}")]
    TooLarge {
        path: String,
        limit: u64,
        what: &'static str,
    },
    #[error("{path}: not UTF-8 text: {error}")]
    NotText {
        path: String,
        error: std::string::FromUtf8Error,
    },
}

/// The whole of a regular file of at most `kind.limit` bytes.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>, InputError> {
    let name = || path.display().to_string();
    let io = |error| InputError::Io {
        path: name(),
        error,
    };
    let file = open(path, kind)?;
    let meta = file.metadata().map_err(io)?;
    check_type(&meta, path, kind)?;
    let too_large = || InputError::TooLarge {
        path: name(),
        limit: kind.limit,
        what: kind.what,
    };
    if meta.len() > kind.limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew beyond it from one that ends there.
    file.take(kind.limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > kind.limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text (TOML and JSON inputs).
pub fn read_text(path: &Path, kind: Kind) -> Result<String, InputError> {
    String::from_utf8(read(path, kind)?).map_err(|error| InputError::NotText {
        path: path.display().to_string(),
        error,
    })
}

/// Open for reading without blocking: opening a FIFO that has no writer returns at once (its
/// type is refused next) instead of waiting for one.
fn open(path: &Path, kind: Kind) -> Result<File, InputError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|error| {
            // A socket cannot be opened at all (ENXIO); say what it is rather than the errno.
            match std::fs::metadata(path) {
                Ok(meta) if !meta.is_file() && !meta.is_dir() => InputError::NotRegular {
                    path: path.display().to_string(),
                    file_type: type_name(&meta),
                    what: kind.what,
                },
                _ => InputError::Io {
                    path: path.display().to_string(),
                    error,
                },
            }
        })
}

fn check_type(meta: &Metadata, path: &Path, kind: Kind) -> Result<(), InputError> {
    if meta.is_file() {
        return Ok(());
    }
    Err(InputError::NotRegular {
        path: path.display().to_string(),
        file_type: type_name(meta),
        what: kind.what,
    })
}

fn type_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::time::{Duration, Instant};

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    const SMALL: Kind = Kind {
        what: "recordings",
        limit: 16,
    };

    #[test]
    fn reads_a_regular_file_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"0123456789abcdef").unwrap();
        assert_eq!(read(&path, SMALL).unwrap(), b"0123456789abcdef");
        std::fs::write(&path, b"0123456789abcdefg").unwrap();
        let err = read(&path, SMALL).unwrap_err();
        assert!(
            matches!(err, InputError::TooLarge { limit: 16, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("is larger than 16 bytes, the most vmap-trace reads for recordings"),
            "{err}"
        );
    }

    #[test]
    fn the_read_is_bounded_even_where_the_size_is_not_known() {
        // /proc files stat as empty; so does a file still being written: the bound still holds.
        let err = read(Path::new("/proc/self/status"), SMALL).unwrap_err();
        assert!(
            matches!(err, InputError::TooLarge { limit: 16, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        mkfifo(&path);
        let started = Instant::now();
        let err = read(&path, RECORDING).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a FIFO: vmap-trace reads recordings from regular files",
                path.display()
            )
        );
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A link to /dev/zero stands for any device a path can lead to (open follows it).
        let zero = dir.path().join("zero.rec");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = read(&zero, RECORDING).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "zero.rec is a character device: vmap-trace reads recordings from regular files"
            ),
            "{err}"
        );
        let err = read(dir.path(), MODEL_INPUT).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is a directory: vmap-trace reads model inputs from regular files"),
            "{err}"
        );
        let err = read(&dir.path().join("absent"), RECORDING).unwrap_err();
        assert!(matches!(err, InputError::Io { .. }), "{err}");
        // The io error is said once, also in the `{:#}` form main prints.
        let shown = format!("{:#}", anyhow::Error::new(err));
        assert_eq!(shown.matches("No such file").count(), 1, "{shown}");
    }

    #[test]
    fn a_socket_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = read(&path, RECORDING).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("sock is a socket: vmap-trace reads recordings from regular files"),
            "{err}"
        );
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(&path, b"name = \"\xff\"").unwrap();
        assert!(matches!(
            read_text(&path, MODEL_INPUT),
            Err(InputError::NotText { .. })
        ));
        std::fs::write(&path, "name = \"x\"").unwrap();
        assert_eq!(read_text(&path, MODEL_INPUT).unwrap(), "name = \"x\"");
    }
}
