//! A private apt configuration for fetching Debian kernels of several releases.
//!
//! Its sources list, package lists, download cache and (empty) dpkg status live under
//! target/vm/apt/, and `APT_CONFIG` points apt at a generated apt.conf that reads none of the
//! machine's apt configuration: the machine's sources, lists and conf parts stay untouched, and
//! the kernels chosen do not depend on which suites this machine happens to follow.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::setup::run_checked;

/// Debian's archive keyring (package debian-archive-keyring): every suite below is verified
/// against it with `signed-by`, so nothing is trusted without a signature.
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Which of the machine's two Debian mirrors serves a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archive {
    Main,
    Security,
}

/// The suites the kernel matrix draws from. A stable release's point releases are in the suite
/// itself, and the kernel ABIs uploaded between point releases are in `-security` (bookworm's
/// newest 6.1 images are only there), so each stable release comes with its `-updates` and
/// `-security` suites. Only `main`: the kernels are all there.
const SUITES: &[(&str, Archive)] = &[
    ("bullseye", Archive::Main),
    ("bullseye-updates", Archive::Main),
    ("bullseye-security", Archive::Security),
    ("bookworm", Archive::Main),
    ("bookworm-updates", Archive::Main),
    ("bookworm-security", Archive::Security),
    ("trixie", Archive::Main),
    ("trixie-updates", Archive::Main),
    ("trixie-security", Archive::Security),
    ("sid", Archive::Main),
];

/// Names a Debian suite starts with, to tell the machine's Debian entries from third-party
/// repositories (a cloud SDK's `cloud-sdk-bookworm` does not start with one).
const DEBIAN_SUITE_BASES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// The machine's Debian mirrors: its archive, and its security archive if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    pub archive: String,
    pub security: Option<String>,
}

/// One entry of a sources file (one-line or deb822), reduced to what mirror discovery needs.
#[derive(Debug, Default)]
struct Entry {
    types: Vec<String>,
    uris: Vec<String>,
    suites: Vec<String>,
}

/// `deb [options] uri suite components...` lines.
fn one_line_entries(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let mut words = line.split_whitespace();
            let kind = words.next()?.to_string();
            let mut uri = words.next()?;
            if uri.starts_with('[') {
                // Options run up to the word that closes the bracket.
                while !uri.ends_with(']') {
                    uri = words.next()?;
                }
                uri = words.next()?;
            }
            Some(Entry {
                types: vec![kind],
                uris: vec![uri.to_string()],
                suites: vec![words.next()?.to_string()],
            })
        })
        .collect()
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`), skipping those with `Enabled: no`.
fn deb822_entries(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for stanza in text.split("\n\n") {
        let mut entry = Entry::default();
        let mut enabled = true;
        for line in stanza.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let values = value.split_whitespace().map(str::to_string).collect();
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => entry.types = values,
                "uris" => entry.uris = values,
                "suites" => entry.suites = values,
                "enabled" => enabled = value.trim() != "no",
                _ => {}
            }
        }
        if enabled && !entry.uris.is_empty() {
            entries.push(entry);
        }
    }
    entries
}

fn is_debian_suite(suite: &str) -> bool {
    let base = suite.split(['-', '/']).next().unwrap_or("");
    DEBIAN_SUITE_BASES.contains(&base)
}

/// The first archive and security URIs of the binary (`deb`) Debian entries.
fn mirrors_from(entries: &[Entry]) -> Option<Mirrors> {
    let (mut archive, mut security) = (None, None);
    for entry in entries
        .iter()
        .filter(|e| e.types.iter().any(|t| t == "deb"))
    {
        for suite in entry.suites.iter().filter(|s| is_debian_suite(s)) {
            let slot = if suite.ends_with("-security") || suite.ends_with("/updates") {
                &mut security
            } else {
                &mut archive
            };
            if slot.is_none() {
                *slot = entry.uris.first().cloned();
            }
        }
    }
    Some(Mirrors {
        archive: archive?,
        security,
    })
}

/// The mirrors this machine's own apt uses (/etc/apt/sources.list and sources.list.d/*.list,
/// *.sources, as apt reads them): the matrix fetches from the same hosts, never another one.
pub fn machine_mirrors() -> Result<Mirrors> {
    let mut entries = Vec::new();
    let list = Path::new("/etc/apt/sources.list");
    if let Ok(text) = fs::read_to_string(list) {
        entries.extend(one_line_entries(&text));
    }
    let mut parts: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    parts.sort();
    for path in parts {
        let text = fs::read_to_string(&path).unwrap_or_default();
        match path.extension().and_then(|e| e.to_str()) {
            Some("list") => entries.extend(one_line_entries(&text)),
            Some("sources") => entries.extend(deb822_entries(&text)),
            _ => {}
        }
    }
    mirrors_from(&entries).ok_or_else(|| {
        anyhow!(
            "no Debian `deb` entry in /etc/apt/sources.list(.d): cannot tell which mirror to use"
        )
    })
}

/// The private sources list. `check-valid-until=no`: the mirror serves a snapshot whose
/// rolling suites' Release files outlive their Valid-Until (sid's had expired 27 days before
/// it was read here, 2026-12-03; the machine's own apt.conf.d turns the check off globally for
/// the same reason). Signatures are still checked against the archive keyring.
pub fn render_sources(mirrors: &Mirrors, keyring: &str) -> String {
    let mut out = String::from(
        "# Generated by xtask (xtask/src/vm/apt.rs); the private lists of vm-test's kernels.\n",
    );
    for (suite, archive) in SUITES {
        let uri = match archive {
            Archive::Main => Some(&mirrors.archive),
            Archive::Security => mirrors.security.as_ref(),
        };
        match uri {
            Some(uri) => out.push_str(&format!(
                "deb [signed-by={keyring} check-valid-until=no] {uri} {suite} main\n"
            )),
            None => out.push_str(&format!(
                "# {suite}: skipped, this machine has no Debian security mirror\n"
            )),
        }
    }
    out
}

/// apt.conf for `APT_CONFIG`. apt reads it before the machine's conf parts, so pointing the
/// parts, sources, preferences and trusted keys at empty places shuts all of those out (no
/// appstream downloads, no pinning, no keys but `signed-by`'s).
fn render_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "{d}/empty";
Dir::Etc::SourceList "{d}/sources.list";
Dir::Etc::SourceParts "{d}/empty";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "{d}/empty";
Dir::Etc::Trusted "/dev/null";
Dir::Etc::TrustedParts "{d}/empty";
Dir::State "{d}/state/";
Dir::State::Lists "{d}/lists/";
Dir::State::Status "{d}/status";
Dir::Cache "{d}/cache/";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
APT::Architectures {{ "amd64"; }};
APT::Sandbox::User "root";
"#
    )
}

/// Lists older than this are refreshed: the archive gains security uploads daily.
pub const MAX_LIST_AGE: Duration = Duration::from_secs(24 * 3600);

/// Whether to run `apt-get update`: asked to, never updated, updated for other sources, or
/// updated longer ago than `MAX_LIST_AGE`.
fn needs_update(refresh: bool, last: Option<(Duration, bool)>) -> bool {
    match last {
        None => true,
        Some((age, same_sources)) => refresh || !same_sources || age > MAX_LIST_AGE,
    }
}

/// The private apt state under target/vm/apt/.
pub struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    /// Write the configuration and refresh the lists when `needs_update` says so.
    pub fn prepare(dir: PathBuf, refresh: bool) -> Result<Self> {
        if !Path::new(KEYRING).exists() {
            crate::setup::install_apt(&["debian-archive-keyring"])?;
        }
        for sub in ["empty", "state", "lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        fs::write(dir.join("apt.conf"), render_conf(&dir))?;
        let sources = render_sources(&machine_mirrors()?, KEYRING);
        fs::write(dir.join("sources.list"), &sources)?;
        let apt = PrivateApt { dir };
        if needs_update(refresh, apt.last_update(&sources)) {
            apt.update(&sources)?;
        }
        Ok(apt)
    }

    /// The stamp holds the sources list of the last successful update; its age is the lists'.
    fn stamp(&self) -> PathBuf {
        self.dir.join("lists.stamp")
    }

    fn last_update(&self, sources: &str) -> Option<(Duration, bool)> {
        let stamp = self.stamp();
        let age = fs::metadata(&stamp).ok()?.modified().ok()?.elapsed().ok()?;
        Some((age, fs::read_to_string(&stamp).ok()? == sources))
    }

    fn update(&self, sources: &str) -> Result<()> {
        eprintln!(
            "vm: updating the private apt lists in {}",
            self.dir.display()
        );
        // --error-on=any: a suite that failed to download must not pass as an empty one.
        run_checked(
            self.command("apt-get")
                .args(["update", "-q", "--error-on=any"]),
        )?;
        fs::write(self.stamp(), sources)?;
        Ok(())
    }

    /// An apt tool reading only the private configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", self.dir.join("apt.conf"));
        cmd
    }

    /// Names of the packages in the private lists that start with `prefix`.
    pub fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .command("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache pkgnames {prefix} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Download `package`'s .deb into `into` and return its path.
    pub fn download(&self, package: &str, into: &Path) -> Result<PathBuf> {
        run_checked(
            self.command("apt-get")
                .current_dir(into)
                .args(["download", "-q", package]),
        )?;
        fs::read_dir(into)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|x| x == "deb")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{package}_")))
            })
            .ok_or_else(|| {
                anyhow!(
                    "apt-get download left no {package} .deb in {}",
                    into.display()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's /etc/apt/sources.list.d/debian.sources, as Debian's images ship it.
    const DEB822: &str = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

    #[test]
    fn finds_both_mirrors_in_deb822() {
        let m = mirrors_from(&deb822_entries(DEB822)).unwrap();
        assert_eq!(m.archive, "http://deb.debian.org/debian");
        assert_eq!(
            m.security.as_deref(),
            Some("http://deb.debian.org/debian-security")
        );
    }

    #[test]
    fn one_line_entries_skip_options_comments_sources_and_third_parties() {
        let text = "# deb http://old.example/debian bookworm main\n\
                    deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n\
                    deb http://mirror.example/debian-security bookworm-security main\n";
        let m = mirrors_from(&one_line_entries(text)).unwrap();
        assert_eq!(m.archive, "http://mirror.example/debian");
        assert_eq!(
            m.security.as_deref(),
            Some("http://mirror.example/debian-security")
        );
    }

    #[test]
    fn disabled_stanzas_and_foreign_repositories_give_no_mirror() {
        let text = "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nEnabled: no\n\n\
                    Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n";
        assert_eq!(mirrors_from(&deb822_entries(text)), None);
    }

    #[test]
    fn renders_every_suite_signed_by_the_keyring() {
        let m = mirrors_from(&deb822_entries(DEB822)).unwrap();
        let text = render_sources(&m, KEYRING);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("deb ")).collect();
        assert_eq!(lines.len(), SUITES.len());
        assert!(lines.contains(&"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg check-valid-until=no] http://deb.debian.org/debian sid main"));
        assert!(lines.contains(&"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg check-valid-until=no] http://deb.debian.org/debian-security bookworm-security main"));
        assert!(!text.contains("trusted="));
    }

    #[test]
    fn without_a_security_mirror_its_suites_are_left_out_visibly() {
        let m = Mirrors {
            archive: "http://m.example/debian".into(),
            security: None,
        };
        let text = render_sources(&m, KEYRING);
        assert!(!text.contains("-security main"));
        assert!(text.contains("# trixie-security: skipped"));
    }

    #[test]
    fn conf_keeps_every_path_under_the_private_dir() {
        let conf = render_conf(Path::new("/w/target/vm/apt"));
        for line in conf.lines().filter(|l| l.starts_with("Dir::")) {
            let value = line.split('"').nth(1).unwrap();
            assert!(
                value == "/dev/null" || value.starts_with("/w/target/vm/apt/"),
                "{line}"
            );
        }
    }

    #[test]
    fn updates_when_asked_missing_stale_or_for_other_sources() {
        let hour = Duration::from_secs(3600);
        assert!(needs_update(false, None));
        assert!(!needs_update(false, Some((hour, true))));
        assert!(needs_update(true, Some((hour, true))));
        assert!(needs_update(false, Some((hour, false))));
        assert!(needs_update(false, Some((MAX_LIST_AGE + hour, true))));
    }
}
