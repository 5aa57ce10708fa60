//! Types shared by the eBPF programs and user space. Everything is `#[repr(C)]`.
#![no_std]
