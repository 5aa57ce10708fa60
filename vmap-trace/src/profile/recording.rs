//! The recording file: a versioned, self-describing, checksummed container for a `Profile`.
//!
//! Layout:
//! ```text
//! VMAP-TRACE-RECORDING\n
//! {"format":1,"length":<body bytes>,"crc32":<crc32 of body>}\n
//! <body: the Profile as JSON>
//! ```
//! JSON keeps recordings readable with standard tools (jq); the header lets us tell a foreign
//! file, a truncated one, a corrupted one and one from a newer vmap-trace apart, each with its
//! own error. Files are written to a temporary name and renamed, so a crash never leaves half
//! a recording under the final name.
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Profile;

pub const MAGIC: &[u8] = b"VMAP-TRACE-RECORDING\n";
/// Version of the body schema this vmap-trace writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// Not a readable regular file of a sane size (see `crate::input`).
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("{path}: not a vmap-trace recording (it does not start with the vmap-trace header)")]
    Foreign { path: String },
    #[error("{path}: recording header is damaged: {detail}")]
    BadHeader { path: String, detail: String },
    #[error("{path}: recording format {found} is newer than this vmap-trace reads (up to {FORMAT_VERSION}); upgrade vmap-trace")]
    TooNew { path: String, found: u32 },
    /// Formats are numbered from 1: no vmap-trace ever wrote format 0.
    #[error("{path}: recording header is damaged: format 0 does not exist (formats start at 1)")]
    FormatZero { path: String },
    #[error("{path}: recording is truncated: header promises {expected} bytes of data, file has {actual}")]
    Truncated {
        path: String,
        expected: u64,
        actual: u64,
    },
    /// More bytes than the header promises: two recordings concatenated, or data appended.
    /// Reading only the promised part would silently report on part of the file.
    #[error("{path}: recording has {extra} bytes after the {length} bytes of data its header promises (two recordings concatenated?); a file holds one recording")]
    TrailingData {
        path: String,
        length: u64,
        extra: u64,
    },
    #[error("{path}: recording is corrupt: checksum mismatch (expected {expected:#010x}, computed {actual:#010x})")]
    Checksum {
        path: String,
        expected: u32,
        actual: u32,
    },
    #[error("{path}: recording is corrupt: {detail}")]
    Body { path: String, detail: String },
    /// Well-formed, but with figures no recording can hold (see `profile::sums`).
    #[error("{path}: recording is corrupt: {detail}")]
    Implausible { path: String, detail: String },
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    length: u64,
    crc32: u32,
}

pub fn encode(profile: &Profile) -> Vec<u8> {
    seal(&serde_json::to_vec(profile).expect("a Profile always serializes"))
}

/// A recording of `body` (a Profile as JSON, or anything a test wants `decode` to reach):
/// magic, then a current-format header with its length and checksum.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let header = Header {
        format: FORMAT_VERSION,
        length: body.len() as u64,
        crc32: crc32fast::hash(body),
    };
    let mut out = MAGIC.to_vec();
    out.extend(serde_json::to_vec(&header).expect("header serializes"));
    out.push(b'\n');
    out.extend(body);
    out
}

pub fn decode(bytes: &[u8], path: &str) -> Result<Profile, RecordingError> {
    let p = || path.to_string();
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| RecordingError::Foreign { path: p() })?;
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| RecordingError::BadHeader {
            path: p(),
            detail: "no end of header line".into(),
        })?;
    let header: Header =
        serde_json::from_slice(&rest[..nl]).map_err(|e| RecordingError::BadHeader {
            path: p(),
            detail: e.to_string(),
        })?;
    if header.format > FORMAT_VERSION {
        return Err(RecordingError::TooNew {
            path: p(),
            found: header.format,
        });
    }
    if header.format == 0 {
        return Err(RecordingError::FormatZero { path: p() });
    }
    let body = &rest[nl + 1..];
    let actual = body.len() as u64;
    if actual < header.length {
        return Err(RecordingError::Truncated {
            path: p(),
            expected: header.length,
            actual,
        });
    }
    if actual > header.length {
        return Err(RecordingError::TrailingData {
            path: p(),
            length: header.length,
            extra: actual - header.length,
        });
    }
    let actual = crc32fast::hash(body);
    if actual != header.crc32 {
        return Err(RecordingError::Checksum {
            path: p(),
            expected: header.crc32,
            actual,
        });
    }
    let profile: Profile = serde_json::from_slice(body).map_err(|e| RecordingError::Body {
        path: p(),
        detail: e.to_string(),
    })?;
    super::sums::check(&profile)
        .map_err(|detail| RecordingError::Implausible { path: p(), detail })?;
    Ok(profile)
}

pub fn load(path: &Path) -> Result<Profile, RecordingError> {
    let bytes = crate::input::read(path, crate::input::RECORDING)?;
    decode(&bytes, &path.display().to_string())
}

/// Write atomically: temporary file in the same directory, fsync, rename.
pub fn save(profile: &Profile, path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&encode(profile))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;

    #[test]
    fn round_trips() {
        let p = sample_profile();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.rec");
        save(&p, &path).unwrap();
        assert_eq!(load(&path).unwrap(), p);
    }

    #[test]
    fn rejects_foreign_truncated_corrupt_and_newer() {
        let bytes = encode(&sample_profile());
        assert!(matches!(
            decode(b"\x7fELF....", "f"),
            Err(RecordingError::Foreign { .. })
        ));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 10], "f"),
            Err(RecordingError::Truncated { .. })
        ));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 0x20;
        assert!(matches!(
            decode(&flipped, "f"),
            Err(RecordingError::Checksum { .. })
        ));
        let newer =
            String::from_utf8(bytes.clone())
                .unwrap()
                .replacen("\"format\":1", "\"format\":99", 1);
        let err = decode(newer.as_bytes(), "f").unwrap_err();
        assert!(matches!(err, RecordingError::TooNew { found: 99, .. }));
        assert!(err.to_string().contains("upgrade vmap-trace"));
        assert!(matches!(
            decode(&bytes[..MAGIC.len() + 3], "f"),
            Err(RecordingError::BadHeader { .. })
        ));
    }

    #[test]
    fn rejects_concatenated_recordings_and_trailing_bytes() {
        let one = encode(&sample_profile());
        let two = [one.clone(), one.clone()].concat();
        let err = decode(&two, "f").unwrap_err();
        assert!(
            matches!(err, RecordingError::TrailingData { extra, .. } if extra == one.len() as u64),
            "{err}"
        );
        assert!(
            err.to_string().contains("two recordings concatenated"),
            "{err}"
        );
        let mut newline = one.clone();
        newline.push(b'\n');
        assert!(matches!(
            decode(&newline, "f"),
            Err(RecordingError::TrailingData { extra: 1, .. })
        ));
        assert!(decode(&one, "f").is_ok());
    }

    /// `profile` with its body edited as JSON, sealed again (length and checksum).
    fn reencoded(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v = serde_json::to_value(sample_profile()).unwrap();
        edit(&mut v);
        seal(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn rejects_counters_that_cannot_be_added_up() {
        let bytes = reencoded(|v| {
            v["stacks"][0]["total_ns"] = u64::MAX.into();
        });
        let err = decode(&bytes, "f").unwrap_err();
        assert!(matches!(err, RecordingError::Implausible { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "f: recording is corrupt: stacks' wait totals add up to more than 2^64"
        );
    }

    #[test]
    fn rejects_a_histogram_with_more_buckets_than_bits() {
        let bytes = reencoded(|v| {
            v["ops"]["size_pages"]["buckets"] = vec![1u64; 65].into();
        });
        let err = decode(&bytes, "f").unwrap_err();
        assert!(matches!(err, RecordingError::Body { .. }), "{err}");
        assert!(err.to_string().contains("has 65 buckets"), "{err}");
    }

    /// The recordings tests/fuzz_recording.rs mutates, kept in step with the profiles they
    /// encode; `VMAP_TRACE_WRITE_FIXTURES=1` rewrites them after a change of `Profile`.
    #[test]
    fn fixtures_hold_the_test_profiles() {
        use crate::profile::tests::rich_profile;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for (name, profile) in [
            ("sample.rec", sample_profile()),
            ("rich.rec", rich_profile()),
        ] {
            let path = dir.join(name);
            if std::env::var_os("VMAP_TRACE_WRITE_FIXTURES").is_some() {
                save(&profile, &path).unwrap();
            }
            let stored = load(&path).unwrap_or_else(|e| {
                panic!("{e}: run with VMAP_TRACE_WRITE_FIXTURES=1 to write it")
            });
            assert!(
                stored == profile,
                "{name} is stale: run with VMAP_TRACE_WRITE_FIXTURES=1"
            );
        }
    }

    #[test]
    fn rejects_format_zero() {
        let bytes = encode(&sample_profile());
        let zero = String::from_utf8(bytes)
            .unwrap()
            .replacen("\"format\":1", "\"format\":0", 1);
        let err = decode(zero.as_bytes(), "f").unwrap_err();
        assert!(matches!(err, RecordingError::FormatZero { .. }), "{err}");
        assert!(err.to_string().contains("format 0 does not exist"), "{err}");
    }
}
