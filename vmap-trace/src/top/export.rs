//! `f`: an SVG flamegraph of the window since the last reset, written to the current
//! directory under a timestamped name (`crate::flamegraph` folds and renders it).
//!
//! Rendering a few hundred stacks takes a noticeable time (seconds in a debug build on a busy
//! machine), so it happens on a thread of its own (`FlamegraphWriter`) and the view stays live.
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};

use anyhow::{Context, Result};

use super::window::Window;
use crate::flamegraph::{self, ClassFilter, FlamegraphError, FoldOptions, StackFilter};

/// What `write` did, as the status line should say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    Svg {
        path: PathBuf,
        stacks: usize,
        span: String,
    },
    /// Nothing to draw, and why.
    Empty(String),
}

impl Exported {
    pub fn message(&self) -> String {
        match self {
            Exported::Svg { path, stacks, span } => {
                format!("wrote {} ({stacks} stacks, {span})", path.display())
            }
            Exported::Empty(why) => format!("no flamegraph written: {why}"),
        }
    }
}

/// Draw `window` into `dir` under a name that does not overwrite anything. `vmap_only` keeps
/// the stacks through vmap functions, as the lock table does when filtered.
pub fn write(
    window: &Window,
    vmap_only: bool,
    dir: &Path,
    stamp: &str,
    span: String,
) -> Result<Exported> {
    if window.profile.stacks.is_empty() {
        return Ok(Exported::Empty(format!("no contended stack {span}")));
    }
    let mut profile = window.profile.clone();
    profile
        .meta
        .notes
        .push(format!("window of `vmap-trace top`: {span}"));
    let opts = FoldOptions {
        filter: StackFilter {
            class: vmap_only.then_some(ClassFilter::Vmap),
            ..Default::default()
        },
        ..Default::default()
    };
    let graph = match flamegraph::flamegraph(&profile, &opts) {
        Ok(g) => g,
        Err(e @ (FlamegraphError::NoStacks { .. } | FlamegraphError::NothingMatches { .. })) => {
            return Ok(Exported::Empty(e.to_string()))
        }
        Err(e) => return Err(e).context("cannot draw the flamegraph"),
    };
    let path = free_name(dir, &format!("vmap-trace-top-{stamp}"), "svg");
    // Written aside and renamed, so a viewer never opens half a file; readable by all, like
    // any file the user writes (a temporary file would be private).
    let tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut out = BufWriter::new(tmp);
    graph
        .write_svg(&mut out)
        .context("cannot render the flamegraph")?;
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let tmp = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist_noclobber(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Exported::Svg {
        path,
        stacks: graph.folded.len(),
        span,
    })
}

/// Writes flamegraphs on a background thread, one at a time.
#[derive(Default)]
pub struct FlamegraphWriter {
    pending: Option<Receiver<Result<Exported, String>>>,
}

/// The name of the writer's thread.
pub const WRITER_THREAD: &str = "vmap-trace-flamegraph";

impl FlamegraphWriter {
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Start writing `window` (see `write`); false when one is still being written.
    pub fn start(
        &mut self,
        window: Window,
        vmap_only: bool,
        dir: PathBuf,
        stamp: String,
        span: String,
    ) -> bool {
        if self.busy() {
            return false;
        }
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || {
                let result =
                    std::panic::catch_unwind(|| write(&window, vmap_only, &dir, &stamp, span))
                        .unwrap_or_else(|panic| {
                            Err(anyhow::anyhow!(
                                "the renderer panicked: {}",
                                panic_message(&panic)
                            ))
                        })
                        .map_err(|e| format!("{e:#}"));
                let _ = tx.send(result);
            });
        match spawned {
            Ok(_) => {
                self.pending = Some(rx);
                true
            }
            Err(e) => {
                let (tx, rx) = mpsc::channel();
                let _ = tx.send(Err(format!("cannot start a thread: {e}")));
                self.pending = Some(rx);
                true
            }
        }
    }

    /// The outcome, once the write has finished.
    pub fn poll(&mut self) -> Option<Result<Exported, String>> {
        let rx = self.pending.as_ref()?;
        let outcome = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err("the writer stopped".into()),
        };
        self.pending = None;
        Some(outcome)
    }
}

/// The text of a caught panic.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// `base.ext`, or `base-2.ext`, `base-3.ext`, ... if taken (two `f` in the same second).
fn free_name(dir: &Path, base: &str, ext: &str) -> PathBuf {
    let first = dir.join(format!("{base}.{ext}"));
    if !first.exists() {
        return first;
    }
    (2u32..)
        .map(|n| dir.join(format!("{base}-{n}.{ext}")))
        .find(|p| !p.exists())
        .expect("some suffix is free")
}

/// Local time as `20250131-142501`, for file names.
pub fn timestamp_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r only writes into `tm`, which lives on this stack frame.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return format!("{now}");
    }
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;
    use crate::top::window::zero_like;

    #[test]
    fn writes_svgs_without_overwriting() {
        let p = sample_profile();
        let w = Window::between(&zero_like(&p), &p);
        let dir = tempfile::tempdir().unwrap();
        let first = write(
            &w,
            false,
            dir.path(),
            "20250101-000000",
            "since start 2.0 s".into(),
        )
        .unwrap();
        let second = write(
            &w,
            false,
            dir.path(),
            "20250101-000000",
            "since start 2.0 s".into(),
        )
        .unwrap();
        let (
            Exported::Svg {
                path: a, stacks, ..
            },
            Exported::Svg { path: b, .. },
        ) = (&first, &second)
        else {
            panic!("expected SVGs: {first:?} {second:?}");
        };
        assert_eq!(*stacks, 2);
        assert_eq!(a.file_name().unwrap(), "vmap-trace-top-20250101-000000.svg");
        assert_eq!(
            b.file_name().unwrap(),
            "vmap-trace-top-20250101-000000-2.svg"
        );
        let svg = std::fs::read_to_string(a).unwrap();
        assert!(
            svg.starts_with("<?xml") && svg.contains("[spinlock vmap_area_lock]"),
            "{svg}"
        );
        assert!(svg.contains("tty_lock"));
        assert_eq!(
            first.message(),
            format!("wrote {} (2 stacks, since start 2.0 s)", a.display())
        );
        assert_eq!(
            std::fs::metadata(a).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // only temporary files renamed into place: nothing else left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn vmap_only_draws_only_vmap_stacks() {
        let p = sample_profile();
        let w = Window::between(&zero_like(&p), &p);
        let dir = tempfile::tempdir().unwrap();
        let Exported::Svg { path, stacks, .. } =
            write(&w, true, dir.path(), "x", "since start 2.0 s".into()).unwrap()
        else {
            panic!("expected an SVG");
        };
        assert_eq!(stacks, 1);
        assert!(!std::fs::read_to_string(path).unwrap().contains("tty_lock"));
    }

    #[test]
    fn the_writer_works_in_the_background_one_at_a_time() {
        let p = sample_profile();
        let w = Window::between(&zero_like(&p), &p);
        let dir = tempfile::tempdir().unwrap();
        let mut writer = FlamegraphWriter::default();
        assert!(writer.poll().is_none());
        assert!(writer.start(
            w.clone(),
            false,
            dir.path().to_path_buf(),
            "t".into(),
            "since start 2.0 s".into()
        ));
        assert!(!writer.start(
            w,
            false,
            dir.path().to_path_buf(),
            "t".into(),
            "since start 2.0 s".into()
        ));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let done = loop {
            if let Some(r) = writer.poll() {
                break r;
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(
            matches!(done, Ok(Exported::Svg { stacks: 2, .. })),
            "{done:?}"
        );
        assert!(!writer.busy());
        // an unwritable directory is reported, not fatal
        let missing = dir.path().join("gone");
        assert!(writer.start(
            Window::between(&zero_like(&p), &p),
            false,
            missing,
            "t".into(),
            "x".into()
        ));
        let err = loop {
            if let Some(r) = writer.poll() {
                break r.unwrap_err();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(err.starts_with("cannot write in "), "{err}");
    }

    #[test]
    fn empty_window_writes_nothing() {
        let p = sample_profile();
        let dir = tempfile::tempdir().unwrap();
        let out = write(
            &Window::empty(&p),
            false,
            dir.path(),
            "x",
            "since reset 0.0 s".into(),
        )
        .unwrap();
        assert_eq!(
            out.message(),
            "no flamegraph written: no contended stack since reset 0.0 s"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(timestamp_now().len(), 15);
    }
}
