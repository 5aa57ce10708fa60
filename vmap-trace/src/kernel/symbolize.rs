//! Kernel stack symbolization with blazesym over /proc/kallsyms.
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
        KernelSymbolizer { symbolizer: Symbolizer::new(), source: source::Source::Kernel(kernel) }
    }

    /// Symbolize kernel addresses; an address blazesym cannot place keeps `function: None`.
    pub fn symbolize(&self, addrs: &[u64]) -> Vec<Frame> {
        let syms = self.symbolizer.symbolize(&self.source, Input::AbsAddr(addrs)).unwrap_or_default();
        addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| match syms.get(i) {
                Some(Symbolized::Sym(s)) => Frame { addr, function: Some(s.name.to_string()), offset: s.offset as u64 },
                _ => Frame { addr, function: None, offset: 0 },
            })
            .collect()
    }
}
