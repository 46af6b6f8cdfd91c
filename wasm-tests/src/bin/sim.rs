//! `sim`: larger simulation sweeps and the throughput benchmark, behind
//! `cargo xtask sim` and `cargo xtask bench`.
//!
//! ```text
//! sim [--scenario NAME|all] [--variant NAME|all] [--seeds A..B] [--threads N]
//!     [--kill P@S[+restart] | --no-kills | --kill-every-step P[+restart]] [--trace] [--keep-going]
//!     [--fingerprints] [--fs mem|host]
//! sim bench [--seconds N] [--threads N] [--fs mem|host]
//! ```
//!
//! Without `--seeds`, each scenario runs seeds 0..20000. Without a kill
//! option, each seed gets the crash `kill_for_seed` derives from it (none
//! for about 70% of seeds), as in the `cargo test` sweep. Seeds are spread
//! over `--threads` worker threads (every core by default; one with
//! `--trace`). Each scenario prints its runs, failures and schedules per
//! second, and every failure its replay command. `--fingerprints` also
//! prints, for every run, `fingerprint SCENARIO VARIANT SEED HASH`: the
//! blake3 of the run's trace, schedule and violations (in the order runs
//! end; sort them to compare two builds). `--fs host` runs the processes
//! over a real directory through wasmtime-wasi instead of the in-memory
//! filesystem (docs/SIMULATION.md, "Two filesystems").

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wasm_tests::{FsMode, Host, KillPlan, Outcome, Scenario, Variant, kill_every_step, kill_for_seed, run};

/// Seeds per scenario when `--seeds` is not given.
const DEFAULT_SEEDS: u64 = 20_000;

fn main() -> ExitCode {
    match main_impl() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sim: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Args {
    scenarios: Vec<String>,
    variants: Vec<Variant>,
    seeds: std::ops::Range<u64>,
    kill: Option<KillPlan>,
    random_kills: bool,
    every_step: Option<(usize, bool)>,
    trace: bool,
    keep_going: bool,
    fingerprints: bool,
    seconds: u64,
    /// Worker threads; every core by default (1 for `bench`).
    threads: Option<u64>,
    /// The filesystem the processes share.
    fs: FsMode,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args {
        scenarios: vec!["all".to_owned()],
        variants: vec![Variant::Correct],
        seeds: 0..DEFAULT_SEEDS,
        kill: None,
        random_kills: true,
        every_step: None,
        trace: false,
        keep_going: false,
        fingerprints: false,
        seconds: 5,
        threads: None,
        fs: FsMode::default(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--scenario" => out.scenarios = vec![value()?.clone()],
            "--variant" => {
                let v = value()?;
                out.variants = if v == "all" { Variant::ALL.to_vec() } else { vec![v.parse()?] };
            }
            "--seeds" => {
                let v = value()?;
                let (a, b) = v.split_once("..").context("--seeds takes A..B")?;
                out.seeds = a.parse().context("--seeds start")?..b.parse().context("--seeds end")?;
            }
            "--kill" => {
                out.kill = Some(value()?.parse()?);
                out.random_kills = false;
            }
            "--no-kills" => out.random_kills = false,
            "--kill-every-step" => {
                let v = value()?;
                let (p, restart) = match v.strip_suffix("+restart") {
                    Some(p) => (p, true),
                    None => (v.as_str(), false),
                };
                out.every_step = Some((p.parse().context("--kill-every-step process")?, restart));
            }
            "--trace" => out.trace = true,
            "--keep-going" => out.keep_going = true,
            "--fingerprints" => out.fingerprints = true,
            "--seconds" => out.seconds = value()?.parse()?,
            "--fs" => out.fs = value()?.parse()?,
            "--threads" => out.threads = Some(value()?.parse::<u64>()?.max(1)),
            other => bail!("unknown argument `{other}`"),
        }
    }
    if out.scenarios == ["all"] {
        out.scenarios = Scenario::NAMES.iter().map(|s| (*s).to_owned()).collect();
    }
    Ok(out)
}

fn main_impl() -> Result<bool> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("bench") {
        let args = parse(&argv[1..])?;
        bench(args.seconds, args.threads.unwrap_or(1), args.fs);
        return Ok(true);
    }
    let args = parse(&argv)?;
    let host = Host::new()?.with_fs(args.fs);
    // A traced run prints every report as it ends, in seed order.
    let threads = if args.trace { 1 } else { args.threads.unwrap_or_else(default_threads) };
    println!(
        "sim: seeds {}..{} ({} per scenario), {threads} thread(s), filesystem {}, {}",
        args.seeds.start,
        args.seeds.end,
        args.seeds.end.saturating_sub(args.seeds.start),
        args.fs,
        match (args.every_step, args.kill, args.random_kills) {
            (Some((p, r)), _, _) =>
                format!("process {p} killed at every step{}", if r { " and restarted" } else { "" }),
            (None, Some(k), _) => format!("kill plan {k}"),
            (None, None, true) => "crashes derived from each seed (about 30%)".to_owned(),
            (None, None, false) => "no crashes".to_owned(),
        }
    );
    let started = Instant::now();
    let mut ok = true;
    let mut total = (0u64, 0u64);
    for variant in &args.variants {
        for name in &args.scenarios {
            let scenario = Scenario::new(name, *variant)?;
            let start = Instant::now();
            let summary = if let Some((proc, restart)) = args.every_step {
                every_step(&host, &scenario, &args, proc, restart)?
            } else {
                sweep_parallel(&host, &scenario, &args, threads)?
            };
            let secs = start.elapsed().as_secs_f64();
            total.0 += summary.runs;
            total.1 += summary.failed.len() as u64;
            let rate = summary.runs as f64 / secs.max(1e-9);
            let verdict = if summary.failed.is_empty() { "ok    " } else { "FAILED" };
            println!(
                "{verdict}  {name:<15} {variant:<22} {:>7} runs  {:>5} failed  {secs:>7.1}s  {rate:>6.0} schedules/s",
                summary.runs,
                summary.failed.len()
            );
            if summary.failed.is_empty() {
                continue;
            }
            ok &= *variant != Variant::Correct;
            // The buggy variants are expected to fail in most seeds: a few
            // replay commands are enough there.
            let shown = if *variant == Variant::Correct { summary.failed.len() } else { 5 };
            for failure in summary.failed.iter().take(shown) {
                println!("        seed {}: {}", failure.seed, failure.violation);
                println!("          replay: {}", failure.replay);
            }
            if summary.failed.len() > shown {
                println!("        ... and {} more", summary.failed.len() - shown);
            }
            if let Some(first) = summary.first
                && (*variant == Variant::Correct || args.trace)
            {
                println!("{}", first.report());
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sim: {} runs, {} failed, in {secs:.1}s ({:.0} schedules/s)",
        total.0,
        total.1,
        total.0 as f64 / secs.max(1e-9)
    );
    Ok(ok)
}

fn default_threads() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// One failing run, as the summary lists it.
struct Failed {
    seed: u64,
    violation: String,
    replay: String,
}

/// What a sweep of one scenario did.
struct Summary {
    runs: u64,
    /// Every failure, by seed.
    failed: Vec<Failed>,
    /// The full report of the failure with the lowest seed.
    first: Option<Outcome>,
}

impl Summary {
    fn note(&mut self, outcome: Outcome) {
        let replay = outcome.report().lines().find_map(|l| l.strip_prefix("   or: ")).unwrap_or_default().to_owned();
        let violation = outcome.violations.first().cloned().unwrap_or_default();
        self.failed.push(Failed { seed: outcome.seed, violation, replay });
        if self.first.as_ref().is_none_or(|f| outcome.seed < f.seed) {
            self.first = Some(outcome);
        }
    }
}

/// Runs every seed of `args.seeds` on `threads` worker threads, which share
/// the engine and the pre-instantiated guest and each make their own stores.
/// Without `--keep-going` the workers stop once any run has failed.
fn sweep_parallel(host: &Host, scenario: &Scenario, args: &Args, threads: u64) -> Result<Summary> {
    let next = AtomicU64::new(args.seeds.start);
    let stop = AtomicBool::new(false);
    let summary = Mutex::new(Summary { runs: 0, failed: Vec::new(), first: None });
    let worker = || -> Result<()> {
        while !stop.load(Ordering::Relaxed) {
            let seed = next.fetch_add(1, Ordering::Relaxed);
            if seed >= args.seeds.end {
                break;
            }
            let kill = if args.random_kills { kill_for_seed(scenario, seed) } else { args.kill };
            let outcome = run(host, scenario, seed, kill)?;
            if args.trace {
                println!("{}", outcome.report());
            }
            if args.fingerprints {
                let hash = blake3::hash(outcome.fingerprint().as_bytes());
                println!("fingerprint {} {} {seed} {}", scenario.name, scenario.variant, hash.to_hex());
            }
            let mut summary = summary.lock().unwrap_or_else(|p| p.into_inner());
            summary.runs += 1;
            if !outcome.passed() {
                summary.note(outcome);
                if !args.keep_going {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a sweep thread panicked"))?)
    })?;
    let mut summary = summary.into_inner().unwrap_or_else(|p| p.into_inner());
    summary.failed.sort_by_key(|f| f.seed);
    Ok(summary)
}

/// `--kill-every-step`: for each seed, the run without a crash and then one
/// run per step of the chosen process, killed there.
fn every_step(host: &Host, scenario: &Scenario, args: &Args, proc: usize, restart: bool) -> Result<Summary> {
    let mut summary = Summary { runs: 0, failed: Vec::new(), first: None };
    for seed in args.seeds.clone() {
        let (n, failure) = kill_every_step(host, scenario, seed, proc, restart)?;
        summary.runs += n;
        if let Some(outcome) = failure {
            summary.note(outcome);
            if !args.keep_going {
                break;
            }
        }
    }
    Ok(summary)
}

/// Schedules per second for the 3-process scenario `fill3`, on `threads`
/// threads (each its own seeds, all sharing one engine).
fn bench(seconds: u64, threads: u64, fs: FsMode) {
    let start = Instant::now();
    let host = match Host::new() {
        Ok(host) => host.with_fs(fs),
        Err(e) => {
            eprintln!("sim: {e:#}");
            return;
        }
    };
    let load = start.elapsed();
    let scenario = Scenario::new("fill3", Variant::Correct).expect("fill3 exists");
    let budget = Duration::from_secs(seconds);
    let start = Instant::now();
    let totals: Vec<(u64, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (host, scenario) = (&host, &scenario);
                scope.spawn(move || {
                    let (mut runs, mut steps, mut seed) = (0u64, 0usize, t);
                    while start.elapsed() < budget {
                        let outcome = run(host, scenario, seed, None).expect("the harness failed");
                        assert!(outcome.passed(), "{}", outcome.report());
                        steps += outcome.schedule.len();
                        runs += 1;
                        seed += threads;
                    }
                    (runs, steps)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a bench thread panicked")).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let runs: u64 = totals.iter().map(|t| t.0).sum();
    let steps: usize = totals.iter().map(|t| t.1).sum();
    println!("guest load (compile or cached): {:.2}s", load.as_secs_f64());
    println!(
        "fill3 (3 processes + final gc), {threads} thread(s): {runs} schedules in {secs:.2}s = {:.0} schedules/s, \
         {:.0} steps/schedule, {:.2} ms/schedule/thread",
        runs as f64 / secs,
        steps as f64 / runs.max(1) as f64,
        secs * 1000.0 * threads as f64 / runs.max(1) as f64
    );
}
