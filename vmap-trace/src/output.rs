//! Writing the files a user names with `-o` (recordings, SVGs, folded stacks).
//!
//! The target is whatever the user named, so it is treated as theirs:
//! - a new file is written aside and renamed into place, so a crash never leaves half of it;
//! - an existing regular file is first written aside in full (a full disk fails there, with the
//!   old file untouched), then copied over the old one in place, so it keeps its inode, mode,
//!   owner and hard links;
//! - a character device or FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is written to, as a
//!   shell's `>` would, never replaced;
//! - a symlink is followed: its target is written, the link stays;
//! - a directory, block device or socket is refused before any work starts, and so is a
//!   target that is one of the command's own inputs.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// How deep a chain of symlinks may go before it is taken for a loop (Linux's own limit).
const MAX_LINK_DEPTH: usize = 40;

/// What an output path names, after following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Nothing there yet: created.
    New,
    /// A regular file: overwritten in place once the new content is safely written aside.
    Regular,
    /// A character device or FIFO: written to as a stream.
    Stream,
}

/// Check `path` before the work starts, so a bad target fails in a second rather than after a
/// long recording. `inputs` are the files the command reads; writing over one of them would
/// destroy what is being read.
pub fn check(path: &Path, inputs: &[&Path]) -> Result<TargetKind> {
    let target = resolve(path)?;
    let kind = classify(path, &target)?;
    for input in inputs {
        if same_file(&target, input) {
            bail!(
                "refusing to write {}: it is the input {}; choose another output file",
                path.display(),
                input.display()
            );
        }
    }
    match kind {
        TargetKind::New => {
            let dir = parent_dir(&target);
            if !dir.is_dir() {
                bail!(
                    "cannot write {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                );
            }
            tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write to directory {}", dir.display()))?;
        }
        TargetKind::Regular => {
            OpenOptions::new()
                .append(true)
                .open(&target)
                .with_context(|| format!("cannot write {}", path.display()))?;
            tempfile::NamedTempFile::new_in(parent_dir(&target)).with_context(|| {
                format!(
                    "cannot write {}: no room for a temporary copy beside it",
                    path.display()
                )
            })?;
        }
        TargetKind::Stream => {}
    }
    Ok(kind)
}

/// Write `bytes` to `path` as the module documentation describes.
///
/// On an error after the new content was written aside in full, the error names the file that
/// holds it, so nothing is lost.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = resolve(path)?;
    match classify(path, &target)? {
        TargetKind::Stream => OpenOptions::new()
            .write(true)
            .open(&target)
            .and_then(|mut f| f.write_all(bytes))
            .with_context(|| format!("cannot write {}", path.display())),
        TargetKind::New => {
            write_new(&target, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
        TargetKind::Regular => {
            overwrite(&target, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
    }
}

/// Follow symlinks to the path that is really written; a dangling link names a file to create.
fn resolve(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINK_DEPTH {
        match fs::symlink_metadata(&current) {
            Ok(md) if md.file_type().is_symlink() => {
                let link = fs::read_link(&current)
                    .with_context(|| format!("cannot read the link {}", current.display()))?;
                current = parent_dir(&current).join(link);
            }
            _ => return Ok(current),
        }
    }
    bail!(
        "cannot write {}: too many levels of symbolic links",
        path.display()
    )
}

fn classify(path: &Path, target: &Path) -> Result<TargetKind> {
    let md = match fs::metadata(target) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TargetKind::New),
        Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
    };
    let ft = md.file_type();
    if ft.is_file() {
        Ok(TargetKind::Regular)
    } else if ft.is_char_device() || ft.is_fifo() {
        Ok(TargetKind::Stream)
    } else if ft.is_dir() {
        bail!(
            "cannot write {}: it is a directory; name a file in it, e.g. {}",
            path.display(),
            path.join("vmap-trace.rec").display()
        )
    } else {
        let what = if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        bail!("refusing to write {}: it is {what}", path.display())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The whole content in a temporary file beside `target`, synced to disk.
fn write_aside(target: &Path, bytes: &[u8]) -> io::Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::NamedTempFile::new_in(parent_dir(target))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn write_new(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_aside(target, bytes)?;
    // Temporary files are private (0600); give the mode a plain create would have had.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o666 & !umask()))?;
    // No clobber: if something appeared meanwhile, it is not ours to replace.
    tmp.persist_noclobber(target).map_err(|e| e.error)?;
    Ok(())
}

fn overwrite(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_aside(target, bytes)?;
    let copied = File::options()
        .write(true)
        .truncate(true)
        .open(target)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = copied {
        // The old content may be gone; the new one is complete in the temporary file.
        let kept = tmp
            .keep()
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_else(|k| format!("(lost: {})", k.error));
        return Err(e).with_context(|| format!("the complete output is kept in {kept}"));
    }
    Ok(())
}

fn umask() -> u32 {
    // SAFETY: umask only swaps the process's mask; it is restored at once, before any other
    // file is created.
    unsafe {
        let mask = libc::umask(0);
        libc::umask(mask);
        mask as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn new_file_gets_the_umask_mode_and_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.svg");
        assert_eq!(check(&path, &[]).unwrap(), TargetKind::New);
        write(&path, b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask());
        // Nothing but the file itself is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn existing_file_keeps_inode_mode_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.rec");
        let link = dir.path().join("hard-link");
        fs::write(&path, b"old content, longer than the new one").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(&path, &link).unwrap();
        let before = fs::metadata(&path).unwrap();
        assert_eq!(check(&path, &[]).unwrap(), TargetKind::Regular);
        write(&path, b"new").unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_eq!(after.ino(), before.ino());
        assert_eq!(after.permissions().mode() & 0o777, 0o640);
        assert_eq!(after.uid(), before.uid());
        assert_eq!(fs::read(&link).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn fifo_is_written_to_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        assert_eq!(check(&fifo, &[]).unwrap(), TargetKind::Stream);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        write(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn char_device_is_written_to_not_replaced() {
        // A device node of our own in a temporary directory, never the system's /dev. mknod
        // needs CAP_MKNOD; without it the symlink case below still covers a device target.
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("null");
        let c = CString::new(node.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; makedev(1, 3) is the null device.
        let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        let link = dir.path().join("to-null");
        if made == 0 {
            write(&node, b"discarded").unwrap();
            assert!(fs::metadata(&node).unwrap().file_type().is_char_device());
            std::os::unix::fs::symlink(&node, &link).unwrap();
        } else {
            std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        }
        assert_eq!(check(&link, &[]).unwrap(), TargetKind::Stream);
        write(&link, b"discarded").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::metadata(&link).unwrap().file_type().is_char_device());
    }

    #[test]
    fn symlink_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.rec");
        let link = dir.path().join("link.rec");
        fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real.rec", &link).unwrap();
        write(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        // A dangling link creates its target, as `>` would.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("created.rec", &dangling).unwrap();
        write(&dangling, b"made").unwrap();
        assert_eq!(fs::read(dir.path().join("created.rec")).unwrap(), b"made");
        // A loop is an error, not a hang.
        let a = dir.path().join("a");
        std::os::unix::fs::symlink("b", &a).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        let err = write(&a, b"x").unwrap_err().to_string();
        assert!(err.contains("too many levels"), "{err}");
    }

    #[test]
    fn directory_and_inputs_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", check(dir.path(), &[]).unwrap_err());
        assert!(err.contains("is a directory"), "{err}");
        let input = dir.path().join("in.rec");
        fs::write(&input, b"recording").unwrap();
        let err = format!(
            "{:#}",
            check(&input, &[Path::new("other"), &input]).unwrap_err()
        );
        assert!(err.contains("it is the input"), "{err}");
        // The same file through a symlink is still the input.
        let link = dir.path().join("alias.rec");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert!(check(&link, &[&input]).is_err());
        assert_eq!(fs::read(&input).unwrap(), b"recording");
        let missing = dir.path().join("no/such/dir/x.rec");
        let err = format!("{:#}", check(&missing, &[]).unwrap_err());
        assert!(err.contains("does not exist"), "{err}");
    }
}
