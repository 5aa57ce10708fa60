//! The running view: attach, then sample, draw and react to keys until asked to stop.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossterm::event::{self, Event};

use super::app::{Action, App, Effect, TopOptions};
use super::export::{self, FlamegraphWriter};
use super::keys;
use super::render;
use super::terminal::{self, TerminalGuard, TerminalInput};
use super::verdict::VerdictWorker;
use crate::session::TraceSession;

/// Longest wait for input between checks of the signal flag, resizes and status expiry.
const POLL_SLICE: Duration = Duration::from_millis(100);

pub fn run(options: TopOptions) -> Result<()> {
    // Everything that can refuse to start does so before any probe is attached and before the
    // screen is taken over, so the error is printed on a normal terminal.
    terminal::require_terminal()?;
    crate::kernel::privileges::require_bpf()?;
    let stop = terminal::stop_on_signals()?;

    eprintln!("vmap-trace: attaching probes...");
    let probes = crate::probe::ProbeOptions {
        lock_timing: options.lock_timing,
        spin_waits: options.spin_waits,
        ..Default::default()
    };
    let mut session = TraceSession::start_with(probes)?;
    if session.hooks().iter().all(|h| h.mechanism.is_none()) {
        bail!("no hook could be attached; run `vmap-trace doctor` to see why");
    }
    let first = session
        .snapshot()
        .context("cannot read the first snapshot")?;
    let mut app = App::new(options, first);

    let mut model = VerdictWorker::spawn().context("cannot start the model's thread")?;
    let input = TerminalInput::open()?;
    let mut screen = TerminalGuard::enter()?;
    let mut flamegraphs = FlamegraphWriter::default();
    let result = event_loop(
        &mut screen,
        &input,
        &mut session,
        &mut app,
        &mut model,
        &mut flamegraphs,
        &stop,
    );
    // Give the terminal back before detaching (which takes a moment) and before main prints
    // any error.
    drop(screen);
    drop(session);
    result
}

fn event_loop(
    screen: &mut TerminalGuard,
    input: &TerminalInput,
    session: &mut TraceSession,
    app: &mut App,
    model: &mut VerdictWorker,
    flamegraphs: &mut FlamegraphWriter,
    stop: &AtomicBool,
) -> Result<()> {
    let interval = app.options.interval;
    let mut next_sample = Instant::now() + interval;
    let mut dirty = true;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        redraw(screen, app, &mut dirty)?;
        // Input is handled on every turn, before any refresh: when refreshing takes longer than
        // the interval (a loaded machine), keys must still get through.
        input.wait(
            next_sample
                .saturating_duration_since(Instant::now())
                .min(POLL_SLICE),
        )?;
        // Everything crossterm has: keys typed together arrive in one read, and a resize comes
        // through its SIGWINCH handler, not through the terminal's input.
        while event::poll(Duration::ZERO).context("cannot read the terminal")? {
            match event::read().context("cannot read the terminal")? {
                Event::Key(key) => {
                    let Some(action) = keys::action_for(key) else {
                        continue;
                    };
                    let was_paused = app.paused;
                    match app.apply(action) {
                        Effect::Quit => return Ok(()),
                        Effect::WriteFlamegraph => start_flamegraph(app, flamegraphs),
                        Effect::None => {}
                    }
                    if action == Action::Reset {
                        model.reset();
                    }
                    // Resuming refreshes at once rather than an interval later.
                    if action == Action::TogglePause && was_paused && !app.paused {
                        next_sample = Instant::now();
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        // Paused, the screen stays as it was: a verdict arriving meanwhile waits in the channel.
        if !app.paused {
            if let Some(v) = model.poll() {
                app.set_verdict(v);
                dirty = true;
            }
        }
        if let Some(outcome) = flamegraphs.poll() {
            match outcome {
                Ok(done) => {
                    let empty = matches!(done, export::Exported::Empty(_));
                    app.set_status(done.message(), empty);
                }
                Err(e) => app.set_status(format!("flamegraph not written: {e}"), true),
            }
            dirty = true;
        }
        if app.expire_status(Instant::now()) {
            dirty = true;
        }
        // Show what the keys did before a refresh, which can take a while, is started.
        redraw(screen, app, &mut dirty)?;
        let now = Instant::now();
        if now >= next_sample {
            if !app.paused {
                app.ingest(session.snapshot().context("cannot read the BPF maps")?);
                if let Some(v) = model.request(&app.since_reset().profile, now) {
                    app.set_verdict(v);
                }
                dirty = true;
            }
            // Keep a steady cadence, but after a stall (a slow snapshot) do not try to catch up.
            next_sample += interval;
            let after = Instant::now();
            if next_sample <= after {
                next_sample = after + interval;
            }
        }
    }
}

/// Draw if anything changed since the last frame.
fn redraw(screen: &mut TerminalGuard, app: &mut App, dirty: &mut bool) -> Result<()> {
    if std::mem::take(dirty) {
        screen
            .terminal
            .draw(|frame| render::draw(frame, app))
            .context("cannot draw")?;
    }
    Ok(())
}

fn start_flamegraph(app: &mut App, writer: &mut FlamegraphWriter) {
    let span = app.since_reset_label();
    // Relative, so the status line shows a short path the user can paste.
    let window = app.flamegraph_window().clone();
    if writer.start(
        window,
        app.vmap_only,
        ".".into(),
        export::timestamp_now(),
        span.clone(),
    ) {
        app.set_status(
            format!("drawing a flamegraph of the stacks {span}..."),
            false,
        );
    } else {
        app.set_status("still drawing the previous flamegraph", true);
    }
}
