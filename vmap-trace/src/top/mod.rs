//! `vmap-trace top`: the live view.
//!
//! - `window`: windows (last interval, since reset) as differences of cumulative snapshots
//! - `app`: the view's state and what each key does to it; no terminal, no kernel
//! - `rows`: table rows computed from windows
//! - `render`: drawing an `App` with ratatui (pure, tested on a TestBackend)
//! - `history`, `verdict`, `export`: the sparkline's past, the model's verdict, `f`
//! - `keys`, `terminal`, `live`: key mapping, terminal setup/restore, the running loop
pub mod app;
pub mod export;
pub mod format;
pub mod history;
pub mod keys;
mod live;
pub mod render;
pub mod rows;
mod terminal;
pub mod verdict;
pub mod window;

pub use app::{Action, App, Effect, SortKey, TopOptions, View, WindowMode};
pub use live::run;
