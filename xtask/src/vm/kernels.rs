//! Choosing a series' Debian kernel package from the private apt lists, and fetching its
//! vmlinuz, config and System.map.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Result};

use super::apt::PrivateApt;
use super::{vm_dir, KernelSeries};

/// Which end of a series' version range to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Newest,
    Oldest,
}

/// How Debian packages a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Up to 6.12 (bullseye..trixie): `linux-image-<release>-unsigned` holds /boot/vmlinuz-*
    /// and /boot/config-*.
    Image,
    /// sid's 7.x: `linux-image-<release>` is a metapackage. `linux-binary-unsigned-<release>`
    /// holds /usr/lib/modules/<release>/vmlinuz.unsigned (built by the `linux` source itself;
    /// `linux-binary-<release>` is its Secure Boot signed copy from linux-signed-amd64, which
    /// can lag behind), `linux-base-<release>` the config.
    Split,
}

impl Layout {
    /// What surrounds the kernel release in the name of the package holding vmlinuz.
    fn affixes(self) -> (&'static str, &'static str) {
        match self {
            Layout::Image => ("linux-image-", "-unsigned"),
            Layout::Split => ("linux-binary-unsigned-", ""),
        }
    }
}

/// A series: which kernel releases belong to it, which end to pick, and the layout. A release
/// belongs if it is `release_prefix` VERSION `flavour`, VERSION being numbers and dots
/// optionally followed by `+debNN` (and a rebuild's `.N`). That keeps other flavours out
/// (6.12.118+deb13-cloud-amd64 has a '-' in VERSION), and backports (bullseye-security's
/// 6.1.0-0.deb11.48-amd64 is a 6.1 built for Debian 11, not one of bookworm's).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// "6.1.0-", "6.12.", "7.".
    pub release_prefix: &'static str,
    /// "-amd64", "-rt-amd64".
    pub flavour: &'static str,
    /// The Debian release a 6.12 was built for ("deb12", "deb13": both trixie's and
    /// bookworm's backport are 6.12.N); None: any or none.
    pub deb: Option<&'static str>,
    pub pick: Pick,
    pub layout: Layout,
}

/// One file to take out of a package.
#[derive(Debug, PartialEq, Eq)]
pub struct Member {
    pub package: String,
    /// A `tar --wildcards` pattern; the first match is taken.
    pub pattern: &'static str,
    pub file: &'static str,
    pub required: bool,
}

/// Files every fetched kernel has.
pub const REQUIRED_FILES: &[&str] = &["vmlinuz", "config"];
/// The real System.map: only in the -dbg package (0.8-1.2 GB to download), so fetched only
/// when asked for (research on which functions and symbols a kernel has), not for vm-test.
pub const SYSTEM_MAP: &str = "System.map";

impl Spec {
    /// The package-name prefix to list (`apt-cache pkgnames`).
    pub fn name_prefix(&self) -> String {
        format!("{}{}", self.layout.affixes().0, self.release_prefix)
    }

    /// The kernel release (`uname -r`) a package of this layout carries.
    pub fn release<'a>(&self, package: &'a str) -> Option<&'a str> {
        let (before, after) = self.layout.affixes();
        package.strip_prefix(before)?.strip_suffix(after)
    }

    /// The VERSION of `name` if it is a package of the series.
    fn version<'a>(&self, name: &'a str) -> Option<&'a str> {
        let version = self
            .release(name)?
            .strip_prefix(self.release_prefix)?
            .strip_suffix(self.flavour)?;
        let numbers = |s: &str| {
            s.split('.')
                .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        };
        let ok = match version.split_once('+') {
            None => numbers(version) && self.deb.is_none(),
            Some((number, tag)) => {
                let (deb, rebuild) = tag.split_once('.').unwrap_or((tag, "0"));
                let deb_ok = match self.deb {
                    Some(want) => deb == want,
                    None => deb.strip_prefix("deb").is_some_and(numbers),
                };
                numbers(number) && numbers(rebuild) && deb_ok
            }
        };
        ok.then_some(version)
    }

    /// The package of the series to fetch, from the names apt knows. Ordered by VERSION
    /// alone: the digits of "amd64" after it would rank 115+deb13 above 115+deb13.1.
    pub fn choose(&self, names: &[String]) -> Option<String> {
        let mut ours: Vec<(Vec<u64>, &String)> = names
            .iter()
            .filter_map(|n| Some((version_key(self.version(n)?), n)))
            .collect();
        ours.sort();
        match self.pick {
            Pick::Newest => ours.last(),
            Pick::Oldest => ours.first(),
        }
        .map(|(_, n)| n.to_string())
    }

    /// What to extract, and from which packages. System.map, when wanted, comes from the -dbg
    /// package: the image packages ship a one-line placeholder that says so.
    pub fn members(&self, package: &str, system_map: bool) -> Vec<Member> {
        let release = self.release(package).unwrap_or(package);
        let dbg = format!("linux-image-{release}-dbg");
        let member = |package: &str, pattern, file, required| Member {
            package: package.to_string(),
            pattern,
            file,
            required,
        };
        let changelog = "./usr/share/doc/*/changelog.Debian.gz";
        let mut members = match self.layout {
            Layout::Image => vec![
                member(package, "./boot/vmlinuz-*", "vmlinuz", true),
                member(package, "./boot/config-*", "config", true),
                member(package, changelog, "changelog.Debian.gz", false),
            ],
            Layout::Split => {
                let base = format!("linux-base-{release}");
                vec![
                    member(package, "./usr/lib/modules/*/vmlinuz*", "vmlinuz", true),
                    member(&base, "./usr/lib/modules/*/config", "config", true),
                    member(&base, changelog, "changelog.Debian.gz", false),
                ]
            }
        };
        if system_map {
            members.push(member(
                &dbg,
                "./usr/lib/debug/*System.map*",
                SYSTEM_MAP,
                true,
            ));
        }
        members
    }
}

/// Numeric parts of a version, for ordering (9 < 56, 115+deb13 < 115+deb13.1).
pub fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// The placeholder Debian's image packages install as System.map.
fn is_placeholder_map(text: &str) -> bool {
    text.lines().count() < 2 && text.contains("The real System.map is in")
}

/// A fetched kernel: its directory under target/vm/kernels/ holds `REQUIRED_FILES`, the
/// Debian changelog when the package has one, and packages.txt (name and version of each
/// package the files came from).
#[derive(Debug)]
pub struct Kernel {
    pub package: String,
    pub dir: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
}

/// Choose the series' package from the private lists; download and extract what is missing.
pub fn fetch(series: KernelSeries, apt: &PrivateApt, system_map: bool) -> Result<Kernel> {
    let spec = series.spec();
    let names = apt.package_names(&spec.name_prefix())?;
    let package = spec.choose(&names).ok_or_else(|| {
        anyhow!(
            "no {}* package of release {}<version>{} in the private apt lists",
            spec.name_prefix(),
            spec.release_prefix,
            spec.flavour
        )
    })?;
    let dir = vm_dir().join("kernels").join(&package);
    fs::create_dir_all(&dir)?;
    let members = spec.members(&package, system_map);
    // Only missing required files trigger a download: a package without the optional
    // changelog must not be downloaded again on every run.
    let mut packages: Vec<&str> = Vec::new();
    for m in members
        .iter()
        .filter(|m| m.required && !dir.join(m.file).exists())
    {
        if !packages.contains(&m.package.as_str()) {
            packages.push(&m.package);
        }
    }
    for pkg in packages {
        let ours: Vec<&Member> = members.iter().filter(|m| m.package == pkg).collect();
        fetch_package(apt, pkg, &ours, &dir)?;
    }
    if system_map {
        check_system_map(&dir.join(SYSTEM_MAP))?;
    }
    Ok(Kernel { package, dir })
}

/// Download one package, extract its members, record its version, delete the .deb (the -dbg
/// packages are 0.8-1.2 GB; only their System.map is kept).
fn fetch_package(apt: &PrivateApt, package: &str, members: &[&Member], dir: &Path) -> Result<()> {
    eprintln!("vm: downloading {package}");
    let deb = apt.download(package, dir)?;
    for m in members {
        let found = extract(&deb, m.pattern, &dir.join(m.file))?;
        if !found && m.required {
            let _ = fs::remove_file(&deb);
            bail!("{package} has no {} ({})", m.file, m.pattern);
        }
    }
    let out = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .args(["Package", "Version"])
        .output()?;
    let line = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let mut manifest = fs::read_to_string(dir.join("packages.txt")).unwrap_or_default();
    if !manifest.lines().any(|l| l == line.trim()) {
        manifest.push_str(&format!("{}\n", line.trim()));
        fs::write(dir.join("packages.txt"), manifest)?;
    }
    fs::remove_file(&deb)?;
    Ok(())
}

/// Extract the first member matching `pattern` to `out`; false if there is none. tar stops
/// at the first match (`--occurrence`), so a System.map at the start of a 5 GB -dbg archive
/// costs a fraction of a second; dpkg-deb then dies of SIGPIPE and its complaint is dropped
/// (a broken .deb still shows, as tar finding no archive or no member).
fn extract(deb: &Path, pattern: &str, out: &Path) -> Result<bool> {
    let part = out.with_extension("part");
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"dpkg-deb --fsys-tarfile "$1" 2>/dev/null | tar -xO --occurrence=1 --wildcards "$2" > "$3""#)
        .arg("sh")
        .arg(deb)
        .arg(pattern)
        .arg(&part)
        .status()?;
    let found = status.success() && fs::metadata(&part).is_ok_and(|m| m.len() > 0);
    if found {
        fs::rename(&part, out)?;
    } else {
        let _ = fs::remove_file(&part);
    }
    Ok(found)
}

fn check_system_map(path: &Path) -> Result<()> {
    let text = fs::read_to_string(path)?;
    if is_placeholder_map(&text) {
        let _ = fs::remove_file(path);
        bail!(
            "{} is Debian's placeholder: {}",
            path.display(),
            text.trim()
        );
    }
    Ok(())
}

/// What `fetch` left where, and from which package versions, for messages.
pub fn describe(kernel: &Kernel) -> String {
    let manifest = fs::read_to_string(kernel.dir.join("packages.txt")).unwrap_or_default();
    let files: Vec<&str> = REQUIRED_FILES
        .iter()
        .chain([&SYSTEM_MAP])
        .copied()
        .filter(|f| kernel.dir.join(f).exists())
        .collect();
    format!(
        "{} in {} (from: {})",
        files.join(", "),
        kernel.dir.display(),
        manifest.trim().replace('\n', "; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Names from the private lists of 2026-12-03 (`apt-cache pkgnames linux-image-6.`,
    /// `linux-image-5.10.0-`, `linux-binary-`), a few of each kind: other flavours, -dbg,
    /// bullseye's 6.1 backports, bookworm's 6.12 backports, a `+deb13.1` rebuild, sid's
    /// metapackage and signed binary.
    const ARCHIVE: &[&str] = &[
        "linux-image-5.10.0-30-amd64-unsigned",
        "linux-image-5.10.0-46-amd64-unsigned",
        "linux-image-5.10.0-46-rt-amd64-unsigned",
        "linux-image-6.1.0-0.deb11.48-amd64-unsigned",
        "linux-image-6.1.0-0.deb11.52-amd64-unsigned",
        "linux-image-6.1.0-47-amd64-unsigned",
        "linux-image-6.1.0-47-amd64-dbg",
        "linux-image-6.1.0-47-amd64",
        "linux-image-6.1.0-50-amd64-unsigned",
        "linux-image-6.1.0-57-amd64-unsigned",
        "linux-image-6.1.0-57-cloud-amd64-unsigned",
        "linux-image-6.1.0-57-rt-amd64-unsigned",
        "linux-image-6.12.107+deb12-amd64-unsigned",
        "linux-image-6.12.118+deb12-amd64-unsigned",
        "linux-image-6.12.118+deb12-rt-amd64-unsigned",
        "linux-image-6.12.107+deb13-amd64-unsigned",
        "linux-image-6.12.115+deb13.1-amd64-unsigned",
        "linux-image-6.12.118+deb13-amd64-unsigned",
        "linux-image-6.12.118+deb13-cloud-amd64-unsigned",
        "linux-image-6.12.118+deb13-rt-amd64-unsigned",
        "linux-image-6.12.118+deb13-amd64-dbg",
        "linux-image-7.2.13+deb14-amd64",
        "linux-binary-7.2.13+deb14-amd64",
        "linux-binary-unsigned-7.2.13+deb14-amd64",
        "linux-binary-unsigned-7.2.13+deb14-rt-amd64",
    ];

    fn choices(series: KernelSeries, list: &[&str]) -> Vec<(&'static str, Option<String>)> {
        series
            .expand()
            .into_iter()
            .map(|s| (s.label(), s.spec().choose(&names(list))))
            .collect()
    }

    fn want(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, Option<String>)> {
        pairs
            .iter()
            .map(|(l, p)| (*l, Some(p.to_string())))
            .collect()
    }

    #[test]
    fn each_matrix_series_picks_its_own_kernel() {
        assert_eq!(
            choices(KernelSeries::Matrix, ARCHIVE),
            want(&[
                ("5.10", "linux-image-5.10.0-46-amd64-unsigned"),
                ("6.1-oldest", "linux-image-6.1.0-47-amd64-unsigned"),
                ("6.1", "linux-image-6.1.0-57-amd64-unsigned"),
                ("6.12-deb13", "linux-image-6.12.118+deb13-amd64-unsigned"),
                ("6.12-rt", "linux-image-6.12.118+deb13-rt-amd64-unsigned"),
                ("7.x", "linux-binary-unsigned-7.2.13+deb14-amd64"),
            ])
        );
    }

    /// CI boots `all`: adding a guest there costs CI minutes and must be a deliberate change.
    #[test]
    fn ci_boots_the_whole_matrix() {
        assert_eq!(
            choices(KernelSeries::All, ARCHIVE),
            choices(KernelSeries::Matrix, ARCHIVE)
        );
        assert_eq!(choices(KernelSeries::All, ARCHIVE).len(), 6);
    }

    #[test]
    fn numbers_not_text_order_the_versions() {
        let list = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-10-amd64-unsigned",
        ];
        let newest = choices(KernelSeries::V6_1, &list);
        let oldest = choices(KernelSeries::V6_1Oldest, &list);
        assert_eq!(
            newest,
            want(&[("6.1", "linux-image-6.1.0-56-amd64-unsigned")])
        );
        assert_eq!(
            oldest,
            want(&[("6.1-oldest", "linux-image-6.1.0-9-amd64-unsigned")])
        );
    }

    #[test]
    fn a_rebuild_counts_within_its_release() {
        let list = [
            "linux-image-6.12.115+deb13-amd64-unsigned",
            "linux-image-6.12.115+deb13.1-amd64-unsigned",
            "linux-image-6.12.116+deb12-amd64-unsigned",
        ];
        assert_eq!(
            choices(KernelSeries::V6_12Deb13, &list),
            want(&[("6.12-deb13", "linux-image-6.12.115+deb13.1-amd64-unsigned")])
        );
    }

    #[test]
    fn a_missing_series_chooses_nothing() {
        let list = ["linux-image-6.1.0-57-amd64-unsigned"];
        assert_eq!(choices(KernelSeries::V5_10, &list), vec![("5.10", None)]);
        assert_eq!(choices(KernelSeries::V7, &list), vec![("7.x", None)]);
    }

    #[test]
    fn releases_and_members_per_layout() {
        let image = KernelSeries::V6_1.spec();
        assert_eq!(
            image.release("linux-image-6.1.0-47-amd64-unsigned"),
            Some("6.1.0-47-amd64")
        );
        assert_eq!(image.name_prefix(), "linux-image-6.1.0-");
        let m = image.members("linux-image-6.1.0-47-amd64-unsigned", true);
        assert_eq!(m[0].package, "linux-image-6.1.0-47-amd64-unsigned");
        assert_eq!(m.last().unwrap().package, "linux-image-6.1.0-47-amd64-dbg");
        // Without System.map, no -dbg download (vm-test's case).
        let lean = image.members("linux-image-6.1.0-47-amd64-unsigned", false);
        assert!(
            lean.iter().all(|x| !x.package.ends_with("-dbg")),
            "{lean:?}"
        );
        let split = KernelSeries::V7.spec();
        assert_eq!(split.name_prefix(), "linux-binary-unsigned-7.");
        let m = split.members("linux-binary-unsigned-7.2.13+deb14-amd64", true);
        let from = |file: &str| {
            m.iter()
                .find(|x| x.file == file)
                .map(|x| x.package.as_str())
        };
        assert_eq!(
            from("vmlinuz"),
            Some("linux-binary-unsigned-7.2.13+deb14-amd64")
        );
        assert_eq!(from("config"), Some("linux-base-7.2.13+deb14-amd64"));
        assert_eq!(
            from("System.map"),
            Some("linux-image-7.2.13+deb14-amd64-dbg")
        );
        for file in REQUIRED_FILES.iter().chain([&SYSTEM_MAP]) {
            assert!(m.iter().any(|x| x.file == *file && x.required), "{file}");
        }
    }

    #[test]
    fn tells_the_placeholder_system_map_from_a_real_one() {
        let placeholder = "ffffffffffffffff B The real System.map is in the linux-image-6.1.0-47-amd64-dbg package\n";
        assert!(is_placeholder_map(placeholder));
        let real = "ffffffff81000000 T _text\nffffffff812ea4e0 t alloc_vmap_area\n";
        assert!(!is_placeholder_map(real));
    }
}
