//! Periodic recordings in a directory, with rotation.
//!
//! Files are named `vmap-trace-YYYYMMDDTHHMMSSZ.rec` (UTC), so names sort in time order; only
//! files with exactly that shape are ever deleted, never anything else in the directory.
//! Each recording is cumulative since the daemon attached, like the kernel maps it is read
//! from: the newest file holds everything, older ones let `vmap-trace diff` compare periods.
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::profile::{recording, Profile};

const PREFIX: &str = "vmap-trace-";
const SUFFIX: &str = ".rec";

/// A directory of rotated recordings.
#[derive(Debug, Clone)]
pub struct RecordingRotation {
    dir: PathBuf,
    keep: usize,
}

impl RecordingRotation {
    /// Create `dir` if needed and check that it is writable now, not at the first recording.
    pub fn open(dir: &Path, keep: usize) -> Result<Self> {
        if keep == 0 {
            bail!("--keep must be at least 1");
        }
        if dir.exists() && !dir.is_dir() {
            bail!("--record-dir {}: not a directory", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "--record-dir {}: cannot create the directory",
                dir.display()
            )
        })?;
        tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("--record-dir {}: cannot write there", dir.display()))?;
        Ok(RecordingRotation {
            dir: dir.to_path_buf(),
            keep,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Write `profile` as the recording taken at `at`, then delete the oldest beyond `keep`.
    /// Returns the new file. A recording in the same second as the previous one replaces it
    /// (it is cumulative, so it holds everything the older one did).
    pub fn write(&self, profile: &Profile, at: SystemTime) -> Result<PathBuf> {
        let path = self.dir.join(file_name(at));
        recording::save(profile, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.prune()
            .with_context(|| format!("cannot rotate recordings in {}", self.dir.display()))?;
        Ok(path)
    }

    /// Rotated recordings present, oldest first.
    pub fn list(&self) -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(is_rotated_name))
            .map(|e| e.path())
            .collect();
        files.sort();
        Ok(files)
    }

    fn prune(&self) -> Result<()> {
        let files = self.list()?;
        let excess = files.len().saturating_sub(self.keep);
        for old in &files[..excess] {
            match std::fs::remove_file(old) {
                Ok(()) => {}
                // Someone else removed it first: the goal is reached.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot delete {}", old.display()))
                }
            }
        }
        Ok(())
    }
}

/// `vmap-trace-YYYYMMDDTHHMMSSZ.rec` for `at` in UTC.
pub fn file_name(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{PREFIX}{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z{SUFFIX}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// True for names `file_name` produces, and only those.
fn is_rotated_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(PREFIX)
        .and_then(|n| n.strip_suffix(SUFFIX))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn names_are_utc_and_sort_in_time_order() {
        assert_eq!(file_name(at(0)), "vmap-trace-19700101T000000Z.rec");
        assert_eq!(
            file_name(at(951_782_400)),
            "vmap-trace-20000229T000000Z.rec"
        ); // leap day
        assert_eq!(
            file_name(at(1_700_000_000)),
            "vmap-trace-20231114T221320Z.rec"
        );
        assert!(file_name(at(1_700_000_000)) < file_name(at(1_700_000_001)));
        assert!(is_rotated_name(&file_name(at(1_234_567_890))));
        for other in [
            "vmap-trace.rec",
            "vmap-trace-20231114T221320Z.rec.tmp",
            "vmap-trace-2023111xT221320Z.rec",
            "notes.txt",
        ] {
            assert!(!is_rotated_name(other), "{other}");
        }
    }

    #[test]
    fn keeps_the_newest_n_and_never_touches_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep-me.rec"), b"x").unwrap();
        let rotation = RecordingRotation::open(dir.path(), 2).unwrap();
        let p = sample_profile();
        let written: Vec<PathBuf> = (0..5)
            .map(|i| rotation.write(&p, at(1_700_000_000 + i)).unwrap())
            .collect();
        assert_eq!(rotation.list().unwrap(), written[3..].to_vec());
        assert!(dir.path().join("keep-me.rec").exists());
        assert_eq!(recording::load(&written[4]).unwrap(), p);
    }

    #[test]
    fn same_second_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = RecordingRotation::open(dir.path(), 3).unwrap();
        let mut p = sample_profile();
        rotation.write(&p, at(5)).unwrap();
        p.ops.allocs += 1;
        let path = rotation.write(&p, at(5)).unwrap();
        assert_eq!(rotation.list().unwrap(), vec![path.clone()]);
        assert_eq!(recording::load(&path).unwrap().ops.allocs, p.ops.allocs);
    }

    #[test]
    fn bad_directories_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = RecordingRotation::open(&file, 3).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        let err = format!(
            "{:#}",
            RecordingRotation::open(&file.join("sub"), 3).unwrap_err()
        );
        assert!(err.contains("cannot create"), "{err}");
        assert!(RecordingRotation::open(dir.path(), 0).is_err());
        let created = dir.path().join("a/b");
        RecordingRotation::open(&created, 1).unwrap();
        assert!(created.is_dir());
    }
}
