//! Stack symbolization with blazesym: kernel stacks over /proc/kallsyms, user stacks over a
//! live process's mappings and the ELF/DWARF of its binaries.
use blazesym::symbolize::{source, Input, Symbolized, Symbolizer};

use crate::profile::Frame;

pub struct KernelSymbolizer {
    symbolizer: Symbolizer,
    source: source::Source<'static>,
}

impl Default for KernelSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelSymbolizer {
    pub fn new() -> Self {
        // kallsyms only: it reflects the running kernel exactly (no vmlinux/KASLR guessing).
        let kernel = source::Kernel {
            kallsyms: blazesym::MaybeDefault::Default,
            vmlinux: blazesym::MaybeDefault::None,
            ..Default::default()
        };
        KernelSymbolizer {
            symbolizer: Symbolizer::new(),
            source: source::Source::Kernel(kernel),
        }
    }

    /// Symbolize kernel addresses; an address blazesym cannot place keeps `function: None`.
    pub fn symbolize(&self, addrs: &[u64]) -> Vec<Frame> {
        let syms = self
            .symbolizer
            .symbolize(&self.source, Input::AbsAddr(addrs))
            .unwrap_or_default();
        to_frames(addrs, &syms)
    }
}

/// One frame per address, named where blazesym placed it.
fn to_frames(addrs: &[u64], syms: &[Symbolized]) -> Vec<Frame> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| match syms.get(i) {
            Some(Symbolized::Sym(s)) => Frame {
                addr,
                function: Some(s.name.to_string()),
                offset: s.offset as u64,
            },
            _ => Frame {
                addr,
                function: None,
                offset: 0,
            },
        })
        .collect()
}

/// User-space symbolization against live processes. Keeps one blazesym symbolizer, which
/// caches each parsed binary (libc, the program), so symbolizing often stays cheap.
pub struct UserSymbolizer {
    symbolizer: Symbolizer,
}

impl Default for UserSymbolizer {
    fn default() -> Self {
        UserSymbolizer {
            symbolizer: Symbolizer::new(),
        }
    }
}

impl UserSymbolizer {
    /// Symbolize addresses of process `tgid`; None when the process is gone (its mappings
    /// are needed). Addresses blazesym cannot place keep `function: None`.
    pub fn symbolize(&self, tgid: u32, addrs: &[u64]) -> Option<Vec<Frame>> {
        if !std::path::Path::new(&format!("/proc/{tgid}/maps")).exists() {
            return None;
        }
        let mut process = source::Process::new(blazesym::Pid::from(tgid));
        // Symbol tables name the frames; DWARF would add inlined callers at the cost of
        // parsing every binary's debug info (hundreds of ms for a large program).
        process.debug_syms = false;
        let syms = self
            .symbolizer
            .symbolize(&source::Source::Process(process), Input::AbsAddr(addrs))
            .ok()?;
        let mut frames = to_frames(addrs, &syms);
        // Unnamed addresses (a stripped library's internal functions) still say which binary
        // they are in, as perf does: `libc.so.6+0x8f226`.
        if frames.iter().any(|f| f.function.is_none()) {
            let maps = std::fs::read_to_string(format!("/proc/{tgid}/maps")).unwrap_or_default();
            for f in frames.iter_mut().filter(|f| f.function.is_none()) {
                f.function = module_offset(&maps, f.addr);
            }
        }
        Some(frames)
    }
}

/// `binary+0xoffset` (offset in the file) of `addr` in a `/proc/PID/maps` text.
fn module_offset(maps: &str, addr: u64) -> Option<String> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            u64::from_str_radix(start, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
        );
        if !(start..end).contains(&addr) {
            return None;
        }
        let file_offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
        let path = fields.nth(2)?;
        let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
        Some(format!("{name}+{:#x}", addr - start + file_offset))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn unnamed_user_addresses_name_their_binary() {
        let maps = "55d0c0000000-55d0c0001000 r--p 00000000 fe:01 123 /usr/bin/sshd\n\
                    7f1200028000-7f120017d000 r-xp 00026000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n\
                    7f1300000000-7f1300001000 rw-p 00000000 00:00 0\n";
        assert_eq!(
            super::module_offset(maps, 0x7f1200029000).as_deref(),
            Some("libc.so.6+0x27000")
        );
        assert_eq!(
            super::module_offset(maps, 0x7ffd00000010).as_deref(),
            Some("[stack]+0x10")
        );
        assert_eq!(
            super::module_offset(maps, 0x7f1300000010),
            None,
            "anonymous memory"
        );
        assert_eq!(super::module_offset(maps, 0x1000), None, "not mapped");
    }

    #[test]
    fn symbolizes_a_live_process_user_address() {
        let user = super::UserSymbolizer::default();
        let addr = super::to_frames as *const () as u64;
        let frames = user
            .symbolize(std::process::id(), &[addr, 8])
            .expect("own process is alive");
        assert!(
            frames[0]
                .function
                .as_deref()
                .is_some_and(|f| f.contains("to_frames")),
            "{frames:?}"
        );
        assert_eq!(frames[1].function, None);
        assert!(
            user.symbolize(u32::MAX - 1, &[addr]).is_none(),
            "no such process"
        );
    }
}
