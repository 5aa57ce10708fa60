//! Reading kernel memory through /proc/kcore (an ELF core file of the running kernel).
//!
//! Needed for values only the running kernel knows, such as where the node-sharded design
//! kmalloc'd its `vmap_nodes` array. Requires root; refused under lockdown=confidentiality.
use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

const PT_LOAD: u32 = 1;

struct Segment {
    vaddr: u64,
    size: u64,
    offset: u64,
}

pub struct KernelMemory {
    file: File,
    segments: Vec<Segment>,
}

impl KernelMemory {
    pub fn open() -> Result<Self> {
        let file = File::open("/proc/kcore").context(
            "cannot open /proc/kcore (needs root; refused under lockdown=confidentiality)",
        )?;
        let mut ehdr = [0u8; 64];
        file.read_exact_at(&mut ehdr, 0)
            .context("cannot read /proc/kcore's ELF header")?;
        if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 {
            bail!("/proc/kcore is not a 64-bit ELF file");
        }
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let phoff = u64_at(&ehdr, 32);
        let phentsize = u16_at(&ehdr, 54) as u64;
        let phnum = u16_at(&ehdr, 56) as u64;
        let mut segments = Vec::new();
        for i in 0..phnum {
            let mut ph = vec![0u8; phentsize as usize];
            file.read_exact_at(&mut ph, phoff + i * phentsize)?;
            if u32_at(&ph, 0) == PT_LOAD {
                segments.push(Segment {
                    offset: u64_at(&ph, 8),
                    vaddr: u64_at(&ph, 16),
                    size: u64_at(&ph, 32),
                });
            }
        }
        Ok(KernelMemory { file, segments })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let seg = self
            .segments
            .iter()
            .find(|s| addr >= s.vaddr && addr + buf.len() as u64 <= s.vaddr + s.size)
            .with_context(|| format!("kernel address {addr:#x} is not mapped in /proc/kcore"))?;
        self.file
            .read_exact_at(buf, seg.offset + (addr - seg.vaddr))
            .with_context(|| format!("cannot read kernel memory at {addr:#x}"))
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_u32(&self, addr: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}
