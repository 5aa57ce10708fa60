//! The live view's state: the snapshots it keeps, the windows derived from them, and what the
//! user chose (view, sort, pause, ...). No terminal or kernel access happens here, so every
//! screen can be produced in tests from synthetic profiles.
use std::time::{Duration, Instant};

use super::history::History;
use super::verdict::Verdict;
use super::window::{zero_like, Window};
use crate::profile::Profile;

/// The main panel, cycled with tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Locks,
    Ops,
    Cpus,
    Tasks,
}

impl View {
    pub const ALL: [View; 4] = [View::Locks, View::Ops, View::Cpus, View::Tasks];

    pub fn title(self) -> &'static str {
        match self {
            View::Locks => "Locks",
            View::Ops => "Ops",
            View::Cpus => "CPUs",
            View::Tasks => "Tasks",
        }
    }

    fn step(self, by: isize) -> View {
        let i = View::ALL.iter().position(|&v| v == self).unwrap_or(0) as isize;
        View::ALL[(i + by).rem_euclid(View::ALL.len() as isize) as usize]
    }
}

/// The order of the lock and task tables, cycled with `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Time spent waiting per second.
    Wait,
    /// Contentions per second.
    Count,
    /// Mean wait per contention.
    Avg,
    /// 99th percentile wait (tasks, which have no histogram: max).
    P99,
    /// Longest wait.
    Max,
    /// Name, alphabetically.
    Name,
}

impl SortKey {
    pub const ALL: [SortKey; 6] = [
        SortKey::Wait,
        SortKey::Count,
        SortKey::Avg,
        SortKey::P99,
        SortKey::Max,
        SortKey::Name,
    ];

    /// The column header this key sorts by.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Wait => "wait/s",
            SortKey::Count => "cont/s",
            SortKey::Avg => "avg",
            SortKey::P99 => "p99",
            SortKey::Max => "max",
            SortKey::Name => "name",
        }
    }

    fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }
}

/// Which window the tables show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowMode {
    /// The last refresh interval, like top.
    Interval,
    /// Everything since start or the last `r`, like `iotop -a`.
    SinceReset,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    CycleSort,
    TogglePause,
    Reset,
    Flamegraph,
    NextView,
    PreviousView,
    ToggleHelp,
    CloseHelp,
    ToggleWindow,
    ToggleVmapOnly,
    ScrollUp,
    ScrollDown,
    PageUp,
    PageDown,
    ScrollHome,
    ScrollEnd,
}

/// What the caller must do after an action: things that leave the pure state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// Write a flamegraph of `App::flamegraph_window`.
    WriteFlamegraph,
}

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct TopOptions {
    pub interval: Duration,
    pub sort: SortKey,
    pub color: bool,
    /// Also time vmap lock acquisitions and holds (see `record --lock-timing`).
    pub lock_timing: bool,
    /// Where spinlock waits are timed (see `record --spin-waits`).
    pub spin_waits: crate::probe::slowpath::SpinWaitChoice,
}

impl Default for TopOptions {
    fn default() -> Self {
        TopOptions {
            interval: Duration::from_secs(1),
            sort: SortKey::Wait,
            color: true,
            lock_timing: false,
            spin_waits: Default::default(),
        }
    }
}

/// A message in the footer, shown for a few seconds.
#[derive(Debug, Clone)]
pub struct Status {
    pub text: String,
    pub error: bool,
    until: Instant,
}

/// How long a status message stays.
const STATUS_TTL: Duration = Duration::from_secs(8);

/// The sparkline keeps this much history (more than any terminal is wide at 1 s).
const HISTORY_SPAN: Duration = Duration::from_secs(600);

pub struct App {
    pub options: TopOptions,
    pub view: View,
    pub sort: SortKey,
    pub window_mode: WindowMode,
    pub paused: bool,
    pub help: bool,
    /// First line of the help shown (it can be taller than the terminal).
    pub help_scroll: usize,
    /// Lock table limited to locks waited for on vmap paths.
    pub vmap_only: bool,
    /// First row shown in the main table (scrolling); clamped when drawn.
    pub scroll: usize,
    /// Rows the main table showed last time it was drawn, for page up/down.
    pub page_rows: usize,
    /// Origin of "since reset": zero at start, the latest snapshot after `r`.
    baseline: Profile,
    /// The newest cumulative snapshot.
    latest: Profile,
    /// Snapshots ingested so far (the first interval needs two).
    samples: u64,
    interval: Window,
    since_reset: Window,
    pub history: History,
    verdict: Verdict,
    status: Option<Status>,
}

impl App {
    /// Start from the session's first snapshot; rates appear with the next one.
    pub fn new(options: TopOptions, first: Profile) -> App {
        let baseline = zero_like(&first);
        let since_reset = Window::between(&baseline, &first);
        let capacity =
            (HISTORY_SPAN.as_secs_f64() / options.interval.as_secs_f64().max(0.01)).ceil() as usize;
        App {
            view: View::Locks,
            sort: options.sort,
            window_mode: WindowMode::Interval,
            paused: false,
            help: false,
            help_scroll: 0,
            vmap_only: false,
            scroll: 0,
            page_rows: 10,
            interval: Window::empty(&first),
            verdict: Verdict::Pending,
            since_reset,
            baseline,
            latest: first,
            samples: 0,
            history: History::new(capacity.clamp(60, 3600)),
            status: None,
            options,
        }
    }

    /// A new cumulative snapshot: recompute the windows and extend the history.
    pub fn ingest(&mut self, snapshot: Profile) {
        self.interval = Window::between(&self.latest, &snapshot);
        self.since_reset = Window::between(&self.baseline, &snapshot);
        self.history.push(&self.interval);
        self.latest = snapshot;
        self.samples += 1;
    }

    /// Apply a key's action; side effects are returned for the caller to perform.
    pub fn apply(&mut self, action: Action) -> Effect {
        match action {
            Action::Quit => return Effect::Quit,
            Action::ToggleHelp => {
                self.help = !self.help;
                self.help_scroll = 0;
            }
            Action::CloseHelp => self.help = false,
            // While help is up, scroll keys scroll it; other keys only close it (like htop).
            Action::ScrollUp | Action::PageUp if self.help => {
                self.help_scroll = self.help_scroll.saturating_sub(1)
            }
            Action::ScrollDown | Action::PageDown if self.help => {
                self.help_scroll = self.help_scroll.saturating_add(1)
            }
            _ if self.help => self.help = false,
            Action::CycleSort => {
                self.sort = self.sort.next();
                self.scroll = 0;
            }
            Action::TogglePause => self.paused = !self.paused,
            Action::Reset => {
                self.baseline = self.latest.clone();
                self.since_reset = Window::empty(&self.latest);
                self.scroll = 0;
                self.set_status("counters reset", false);
            }
            Action::Flamegraph => return Effect::WriteFlamegraph,
            Action::NextView | Action::PreviousView => {
                self.view = self
                    .view
                    .step(if action == Action::NextView { 1 } else { -1 });
                self.scroll = 0;
            }
            Action::ToggleWindow => {
                self.window_mode = match self.window_mode {
                    WindowMode::Interval => WindowMode::SinceReset,
                    WindowMode::SinceReset => WindowMode::Interval,
                };
            }
            Action::ToggleVmapOnly => {
                self.vmap_only = !self.vmap_only;
                self.scroll = 0;
            }
            Action::ScrollUp => self.scroll = self.scroll.saturating_sub(1),
            Action::ScrollDown => self.scroll = self.scroll.saturating_add(1),
            Action::PageUp => self.scroll = self.scroll.saturating_sub(self.page_rows.max(1)),
            Action::PageDown => self.scroll = self.scroll.saturating_add(self.page_rows.max(1)),
            Action::ScrollHome => self.scroll = 0,
            // Clamped to the last full page when drawn.
            Action::ScrollEnd => self.scroll = usize::MAX,
        }
        Effect::None
    }

    /// The window the tables show.
    pub fn shown(&self) -> &Window {
        match self.window_mode {
            WindowMode::Interval => &self.interval,
            WindowMode::SinceReset => &self.since_reset,
        }
    }

    pub fn interval(&self) -> &Window {
        &self.interval
    }

    pub fn since_reset(&self) -> &Window {
        &self.since_reset
    }

    /// True until the first `r`: "since reset" is then everything since start.
    pub fn never_reset(&self) -> bool {
        self.baseline.meta.duration_ns == 0
    }

    /// `since start 45.0 s` or `since reset 2m13s`: what `since_reset` covers.
    pub fn since_reset_label(&self) -> String {
        let what = if self.never_reset() {
            "since start"
        } else {
            "since reset"
        };
        format!("{what} {}", super::format::span(self.since_reset.secs()))
    }

    /// The newest cumulative snapshot (session totals, metadata).
    pub fn latest(&self) -> &Profile {
        &self.latest
    }

    /// True until two snapshots have been ingested: no interval rate exists yet.
    pub fn warming_up(&self) -> bool {
        self.samples == 0
    }

    /// `f` writes everything since the last reset: a one-interval flamegraph is mostly empty,
    /// and `r`, wait, `f` is how a user frames the period they care about.
    pub fn flamegraph_window(&self) -> &Window {
        &self.since_reset
    }

    /// The reference model's latest verdict (computed off the UI thread by the caller, on
    /// `since_reset`).
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    pub fn set_verdict(&mut self, verdict: Verdict) {
        self.verdict = verdict;
    }

    pub fn set_status(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(Status {
            text: text.into(),
            error,
            until: Instant::now() + STATUS_TTL,
        });
    }

    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// Drop an expired status message; true when the screen changed.
    pub fn expire_status(&mut self, now: Instant) -> bool {
        if self.status.as_ref().is_some_and(|s| now >= s.until) {
            self.status = None;
            return true;
        }
        false
    }
}
