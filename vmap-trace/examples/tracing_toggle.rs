//! The measuring half of `cargo xtask bench toggle`: runs a stress workload in this process
//! and switches vmap-trace's kernel programs on and off every window, printing each window's
//! operations as a JSON line. xtask compares every traced window with the untraced windows
//! on either side, which cancels the machine's drift: separate runs seconds apart differ by
//! more than the 1% being measured on a 2-vCPU machine.
//!
//! The windows repeat `off, <variant 1>, off, <variant 2>, ..., off, sham`, the traced ones in
//! a new (seeded) order every cycle. Each variant is loaded once at the start (its maps live
//! for the whole run); only its links are made and removed. A sham window switches nothing:
//! compared with its neighbours, it is the A/A control. Variants:
//! - `default`: what `record` and `daemon` attach;
//! - `sampled`: the same with `--sample-unlocated`, what kernels whose vmap locks can be
//!   located get by default;
//! - `empty`: programs that return at once on the same hooks, the dispatch floor;
//! - `kprobe`: `default` with `--prefer-kprobe`;
//! - `sampled-contention`, `sampled-vmalloc`: `sampled` on one family of tracepoints only;
//! - `vmap-only`: `sampled` with other locks' contentions never timed (counted nowhere): the
//!   cheapest configuration that still gives every metric issue 7 names (operation counts,
//!   the lazy backlog, the vmap locks' waits);
//! - `sampled-stacks10`: `sampled` with 10 stack captures per CPU and second instead of the
//!   default 100: what stack capture costs.
//!
//! A window's line has its operations in all (`ops`) and per workload kind (`kind_ops`: `mix`
//! runs four kinds side by side).
//!
//! Each window's first `settle-ms` are not measured: the switch itself (patching the
//! tracepoints' call sites, RCU callbacks) is a cost a user pays once, not while tracing.
//! Each window's line also says what the programs counted while it ran (`allocs`: the
//! `vmalloc:alloc_vmap_area` hits, `fn_calls`: the vmap function calls timed), read between
//! detaching one variant and attaching the next, so 0 in untraced windows; vm-test checks that
//! on Debian's kernels, where fentry and kprobe links are made too.
//!
//! Needs root. Usage: tracing_toggle <workload> <length> <window-ms> <settle-ms> <variant>...
//! where `<length>` is seconds, or `<N>cycles` to stop after N whole cycles however long the
//! switches take (under QEMU without KVM, detaching fentry links takes seconds to minutes).

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::maps::PerCpuArray;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use vmap_trace::kernel::{btf::KernelBtf, kallsyms, vmap_locks};
use vmap_trace::probe::{self, ProbeOptions, Probes};
use vmap_trace::session::detect_design;
use vmap_trace::stress::{self, StressConfig, WorkloadKind};
use vmap_trace_common::{OpCounter, WaitStats, FUNC_SLOTS};

const VARIANTS: &str =
    "default, sampled, empty, kprobe, sampled-contention, sampled-vmalloc, vmap-only, sampled-stacks10";

/// What a window has attached.
#[derive(Clone, Copy)]
enum Slot {
    Off,
    /// Index into the loaded variants.
    Variant(usize),
    /// Nothing, like `Off`, but reported apart: the A/A control.
    Sham,
}

/// Progress granularity: windows and settling times are whole ticks.
const TICK: Duration = Duration::from_millis(10);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workload, length, window_ms, settle_ms, variants @ ..] = args.as_slice() else {
        bail!(
            "usage: tracing_toggle <workload> <seconds|Ncycles> <window-ms> <settle-ms> <variant>... \
             ({VARIANTS})"
        );
    };
    let kind = match workload.as_str() {
        "pty" => WorkloadKind::Pty,
        "mix" => WorkloadKind::Mix,
        "fork" => WorkloadKind::Fork,
        "threads" => WorkloadKind::Threads,
        "bpfmap" => WorkloadKind::Bpfmap,
        other => bail!("unknown workload {other}"),
    };
    // Seconds, or whole cycles with no time limit (an hour at most).
    let (seconds, cycles): (f64, Option<usize>) = match length.strip_suffix("cycles") {
        Some(n) => (3600.0, Some(n.parse().context("<N>cycles")?)),
        None => (length.parse().context("seconds")?, None),
    };
    let window = Duration::from_millis(window_ms.parse().context("window-ms")?);
    let settle = Duration::from_millis(settle_ms.parse().context("settle-ms")?);
    if variants.is_empty() {
        bail!("name at least one variant ({VARIANTS})");
    }

    let (_, symbols) = kallsyms::load()?;
    let btf = KernelBtf::load().ok();
    let locks = vmap_locks::discover(detect_design(btf.as_ref()), &symbols, btf.as_ref());
    let mut loaded: Vec<(String, Probes)> = Vec::new();
    for name in variants {
        let sampled = ProbeOptions {
            sample_unlocated: true,
            ..ProbeOptions::default()
        };
        // Which programs the variant keeps attached (by name).
        let all = |_: &str| true;
        let (options, keep): (ProbeOptions, &dyn Fn(&str) -> bool) = match name.as_str() {
            "default" => (ProbeOptions::default(), &all),
            "sampled" => (sampled, &all),
            "empty" => (
                ProbeOptions {
                    empty_programs: true,
                    ..ProbeOptions::default()
                },
                &all,
            ),
            "kprobe" => (
                ProbeOptions {
                    prefer_kprobe: true,
                    ..ProbeOptions::default()
                },
                &all,
            ),
            "sampled-contention" => (sampled, &|p: &str| p.contains("contention")),
            "sampled-vmalloc" => (sampled, &|p: &str| p.contains("vmap_area")),
            // One wait in 2^32 per CPU: in practice none.
            "vmap-only" => (
                ProbeOptions {
                    other_lock_period: Some(u32::MAX),
                    ..sampled
                },
                &all,
            ),
            // The stack budget a tenth of the default: what stack capture costs.
            "sampled-stacks10" => (
                ProbeOptions {
                    stack_samples: Some(10),
                    ..sampled
                },
                &all,
            ),
            other => bail!("unknown variant {other} ({VARIANTS})"),
        };
        let mut probes = probe::attach_all(options, &symbols, btf.as_ref(), &locks)?;
        probes.links.retain(&mut probes.ebpf, keep)?;
        if probes.links.is_empty() {
            bail!("variant {name}: nothing could be attached");
        }
        probes.detach_all()?;
        eprintln!(
            "variant {name}: {} links ({}), other locks timed 1 in {}",
            probes.links.len(),
            probes.links.summary(),
            probes.other_locks.period
        );
        loaded.push((name.clone(), probes));
    }
    // off, variant, off, variant, ..., off, sham; the traced slots in a new order every
    // cycle, so that a workload with a rhythm of its own (mix's fork batches) cannot beat with
    // the cycle and favour one state (a fixed order once made the sham windows of a mix run
    // 1% slower than their neighbours). Seeded: the same run gives the same order.
    let mut traced: Vec<Slot> = (0..loaded.len()).map(Slot::Variant).collect();
    traced.push(Slot::Sham);
    let cycle_len = 2 * traced.len();
    let mut order = rand_chacha::ChaCha8Rng::seed_from_u64(0x7066_6c69);
    let mut schedule: Vec<Slot> = Vec::new();
    let mut slot_at = |i: usize| {
        while schedule.len() <= i {
            traced.shuffle(&mut order);
            for &t in &traced {
                schedule.extend([Slot::Off, t]);
            }
        }
        schedule[i]
    };
    let label = |slot: Slot, loaded: &[(String, Probes)]| match slot {
        Slot::Off => "off".to_string(),
        Slot::Sham => "sham".to_string(),
        Slot::Variant(v) => loaded[v].0.clone(),
    };

    // The runner reports progress every tick; a window is `window / TICK` ticks, of which the
    // first `settle / TICK` (the switch and what it sets off: code patching, RCU callbacks,
    // cold maps) are not measured. A user attaches once; the steady state is what counts.
    let ticks = (window.as_millis() / TICK.as_millis()).max(1) as usize;
    let settle_ticks = (settle.as_millis() / TICK.as_millis()) as usize;
    if settle_ticks >= ticks {
        bail!("the settling time must be shorter than the window");
    }
    let config = StressConfig {
        duration: Duration::from_secs_f64(seconds),
        progress_interval: TICK,
        ..StressConfig::new(Duration::from_secs_f64(seconds))
    };
    let stop = AtomicBool::new(false);
    let (mut index, mut tick) = (0usize, 0usize);
    // Each workload kind's operations (mix runs four) when the window's measured part began,
    // and when: a kind's own rate varies less than their sum, whose composition shifts from
    // window to window. Empty: from the start.
    let mut measured_from: (Vec<u64>, Instant) = (Vec::new(), Instant::now());
    let mut failure: Option<anyhow::Error> = None;
    let mut last_counted = counts(&loaded)?;
    let result = stress::run_workload_with_progress(kind, &config, &stop, |sample| {
        if failure.is_some() {
            return;
        }
        let now = Instant::now();
        let kind_totals: Vec<u64> = sample.per_kind.iter().map(|k| k.ops).collect();
        tick += 1;
        if tick == settle_ticks {
            measured_from = (kind_totals.clone(), now);
        }
        if tick < ticks {
            return;
        }
        let (state, next) = (slot_at(index), slot_at(index + 1));
        let switch_start = Instant::now();
        // Counted while this window ran: read with nothing attached, between the two halves
        // of the switch.
        let mut counted = (0, 0);
        let switched = (|| -> Result<()> {
            if let Slot::Variant(v) = state {
                loaded[v].1.detach_all()?;
            }
            let now_counted = counts(&loaded)?;
            counted = (
                now_counted.0 - last_counted.0,
                now_counted.1 - last_counted.1,
            );
            last_counted = now_counted;
            if let Slot::Variant(v) = next {
                loaded[v].1.attach_again()?;
            }
            Ok(())
        })();
        let switch_secs = switch_start.elapsed().as_secs_f64();
        let kind_ops: Vec<u64> = kind_totals
            .iter()
            .enumerate()
            .map(|(k, &n)| n - measured_from.0.get(k).copied().unwrap_or(0))
            .collect();
        let ops: u64 = kind_ops.iter().sum();
        let kind_ops: Vec<String> = sample
            .per_kind
            .iter()
            .zip(&kind_ops)
            .map(|(k, n)| format!("\"{}\":{n}", k.kind.name()))
            .collect();
        println!(
            "{{\"window\":{index},\"state\":\"{}\",\"ops\":{},\"kind_ops\":{{{}}},\"secs\":{:.6},\"switch_secs\":{switch_secs:.6},\"allocs\":{},\"fn_calls\":{}}}",
            label(state, &loaded),
            ops,
            kind_ops.join(","),
            (now - measured_from.1).as_secs_f64(),
            counted.0,
            counted.1
        );
        if let Err(e) = switched {
            failure = Some(e);
        }
        index += 1;
        tick = 0;
        if cycles.is_some_and(|n| index >= n * cycle_len) {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        // Measured from here when there is no settling time.
        measured_from = (kind_totals, Instant::now());
    });
    for (_, probes) in &mut loaded {
        probes.detach_all()?;
    }
    if let Some(e) = failure {
        return Err(e.context("switching the programs"));
    }
    let result = result?;
    eprintln!("{} windows, {} ops", index, result.ops);
    Ok(())
}

/// `vmalloc:alloc_vmap_area` hits and timed vmap function calls, over every variant's maps.
fn counts(loaded: &[(String, Probes)]) -> Result<(u64, u64)> {
    let (mut allocs, mut calls) = (0, 0);
    for (_, probes) in loaded {
        let ops: PerCpuArray<_, u64> =
            PerCpuArray::try_from(probes.ebpf.map("OP_COUNTS").context("OP_COUNTS map")?)?;
        allocs += ops.get(&(OpCounter::Allocs as u32), 0)?.iter().sum::<u64>();
        let latency: PerCpuArray<_, WaitStats> = PerCpuArray::try_from(
            probes
                .ebpf
                .map("FUNC_LATENCY")
                .context("FUNC_LATENCY map")?,
        )?;
        for slot in 0..FUNC_SLOTS {
            calls += latency.get(&slot, 0)?.iter().map(|s| s.count).sum::<u64>();
        }
    }
    Ok((allocs, calls))
}
