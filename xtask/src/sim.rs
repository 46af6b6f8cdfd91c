//! This defines `cargo xtask sim`: larger deterministic-simulation sweeps
//! than `cargo test` runs, through the `sim` binary of the `wasm-tests`
//! crate (built in release mode).
//!
//! ```text
//! cargo xtask sim                                        every scenario, seeds 0..20000 each, all cores
//! cargo xtask sim --seeds 0..100000 --threads 2          every scenario, real protocol, random crashes
//! cargo xtask sim --scenario churn --seeds 0..5000
//! cargo xtask sim --variant all --seeds 0..100           also every buggy variant (expected to fail)
//! cargo xtask sim --scenario fill3 --seeds 42..43 --kill 0@17+restart --trace   replay one run
//! cargo xtask sim --scenario kill-small --seeds 0..50 --kill-every-step 0+restart
//! cargo xtask sim --fs host --seeds 0..200               over a real directory (tmpfs) instead of memory
//! ```
//!
//! The processes share the in-memory filesystem by default (`--fs mem`);
//! `--fs host` runs them over a real directory through wasmtime-wasi,
//! which checks the in-memory model against the kernel.
//!
//! docs/SIMULATION.md describes the scenarios, the traces and replay.

use anyhow::Result;

pub(crate) fn run(args: &[String]) -> Result<()> {
    let ws = crate::workspace()?;
    crate::step(
        "sim",
        crate::cargo()
            .current_dir(&ws.root)
            .args(["run", "--release", "--quiet", "--package", "wasm-tests", "--bin", "sim", "--"])
            .args(args),
    )
}
