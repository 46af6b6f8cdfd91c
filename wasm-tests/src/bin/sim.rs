//! `sim`: larger simulation sweeps and the throughput benchmark, behind
//! `cargo xtask sim` and `cargo xtask bench`.
//!
//! ```text
//! sim [--scenario NAME|all] [--variant NAME|all] [--seeds A..B]
//!     [--kill P@S[+restart] | --no-kills | --kill-every-step P[+restart]] [--trace] [--keep-going]
//! sim bench [--seconds N] [--threads N]
//! ```
//!
//! Without a kill option, each seed gets the crash `kill_for_seed` derives
//! from it (none for most seeds), as in the `cargo test` sweep.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wasm_tests::{Host, KillPlan, Scenario, Variant, kill_every_step, kill_for_seed, run};

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
    seconds: u64,
    threads: u64,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args {
        scenarios: vec!["all".to_owned()],
        variants: vec![Variant::Correct],
        seeds: 0..1000,
        kill: None,
        random_kills: true,
        every_step: None,
        trace: false,
        keep_going: false,
        seconds: 5,
        threads: 1,
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
            "--seconds" => out.seconds = value()?.parse()?,
            "--threads" => out.threads = value()?.parse::<u64>()?.max(1),
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
        bench(args.seconds, args.threads);
        return Ok(true);
    }
    let args = parse(&argv)?;
    let host = Host::new()?;
    let mut ok = true;
    for variant in &args.variants {
        for name in &args.scenarios {
            let scenario = Scenario::new(name, *variant)?;
            let start = Instant::now();
            let mut runs = 0u64;
            let mut failure = None;
            if let Some((proc, restart)) = args.every_step {
                for seed in args.seeds.clone() {
                    let (n, f) = kill_every_step(&host, &scenario, seed, proc, restart)?;
                    runs += n;
                    if f.is_some() {
                        failure = f;
                        break;
                    }
                }
            } else {
                let mut failed = 0u64;
                for seed in args.seeds.clone() {
                    let kill = if args.random_kills { kill_for_seed(&scenario, seed) } else { args.kill };
                    let outcome = run(&host, &scenario, seed, kill)?;
                    runs += 1;
                    if args.trace {
                        println!("{}", outcome.report());
                    }
                    if !outcome.passed() {
                        failed += 1;
                        if failure.is_none() {
                            failure = Some(outcome);
                        }
                        if !args.keep_going {
                            break;
                        }
                    }
                }
                if args.keep_going && failed > 0 {
                    println!("{failed} of {runs} runs of {name} ({variant}) failed");
                }
            }
            let secs = start.elapsed().as_secs_f64();
            match failure {
                None => println!(
                    "ok      {name:<15} {variant:<15} {runs:>6} runs in {secs:>6.1}s ({:.0}/s)",
                    runs as f64 / secs
                ),
                Some(outcome) => {
                    ok &= *variant != Variant::Correct;
                    println!(
                        "FAILED  {name:<15} {variant:<15} after {runs} runs (seed {}): {}",
                        outcome.seed,
                        outcome.violations.first().map(String::as_str).unwrap_or("")
                    );
                    if *variant == Variant::Correct || args.trace {
                        println!("{}", outcome.report());
                    }
                }
            }
        }
    }
    Ok(ok)
}

/// Schedules per second for the 3-process scenario `fill3`, on `threads`
/// threads (each its own seeds, all sharing one engine).
fn bench(seconds: u64, threads: u64) {
    let start = Instant::now();
    let host = match Host::new() {
        Ok(host) => host,
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
