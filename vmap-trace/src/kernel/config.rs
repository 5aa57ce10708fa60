//! The kernel build configuration, when the kernel exposes it.
use std::collections::HashMap;
use std::io::Read;

/// `CONFIG_X` -> value (`y`, `m`, a number...) from /proc/config.gz or /boot/config-<release>.
pub fn load(release: &str) -> Option<(String, HashMap<String, String>)> {
    if let Ok(gz) = std::fs::read("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(("/proc/config.gz".into(), parse(&text)));
        }
    }
    let path = format!("/boot/config-{release}");
    std::fs::read_to_string(&path)
        .ok()
        .map(|t| (path, parse(&t)))
}

pub fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_set_and_ignores_unset() {
        let c = super::parse("# CONFIG_KPROBES is not set\nCONFIG_VMAP_STACK=y\nCONFIG_NR_CPUS=64\nCONFIG_X=\"a b\"\n");
        assert_eq!(c.get("CONFIG_VMAP_STACK").map(String::as_str), Some("y"));
        assert_eq!(c.get("CONFIG_NR_CPUS").map(String::as_str), Some("64"));
        assert_eq!(c.get("CONFIG_X").map(String::as_str), Some("a b"));
        assert!(!c.contains_key("CONFIG_KPROBES"));
    }
}
