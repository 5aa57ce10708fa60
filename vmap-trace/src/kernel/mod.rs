//! Facts about the running kernel: what it offers and how vmap-trace can use it.
pub mod btf;
pub mod config;
pub mod design;
pub mod kallsyms;
pub mod kcore;
pub mod privileges;
pub mod symbolize;
pub mod tracefs;
pub mod vmap_locks;
