//! Reference model of the kernel's two vmap allocator designs (placeholder).
pub mod cli;
