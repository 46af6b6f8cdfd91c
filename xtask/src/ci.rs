//! This defines `cargo xtask ci`, the gate every change passes.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::s3::ENDPOINT_VAR;
use crate::{cargo, step, workspace};

pub(crate) const WASM_TARGET: &str = "wasm32-wasip1";

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`cargo xtask ci` takes no arguments, got `{arg}`");
    }
    let ws = workspace()?;
    std::env::set_current_dir(&ws.root)?;
    ensure_rustup_parts()?;
    ensure_system_tools()?;
    step("fmt", cargo().args(["fmt", "--all", "--check"]))?;
    // This covers the remote tier's S3 code and tests as well: the CLI's
    // default feature `aws` turns on `safecache-remote/aws`, and cargo unifies
    // features over the workspace (`cargo tree --workspace -e features -i
    // safecache-remote` shows `aws` enabled by `cargo-safecache`).
    clippy("clippy", &["--workspace", "--all-targets"])?;
    // The guest is a stub natively: only its wasm build has code to lint.
    clippy(
        "clippy (wasm32-wasip1 core and guest)",
        &["-p", "safecache", "-p", "wasm-tests-guest", "--target", WASM_TARGET],
    )?;
    step(
        "check (wasm32-wasip1 core)",
        cargo().args(["check", "-p", "safecache", "--target", WASM_TARGET, "--locked"]),
    )?;
    {
        // The workspace builds the remote tier with `aws` (see clippy above),
        // so its S3 tests run in the test step, and the CLI's tests and
        // benchmarks of remote hits too: all against this one moto, named by
        // `SAFECACHE_TEST_S3_ENDPOINT` (without it the remote crate's S3
        // tests fail). It is killed at the end of this block, or when a step
        // fails and `?` returns.
        let s3 = crate::s3::Server::start_with_moto(&ws)?;
        // Among the tests, the simulation's sweep (wasm-tests/tests/sim.rs) runs
        // over the in-memory filesystem, and a small sweep of every scenario
        // over a real directory (`--fs host`, docs/SIMULATION.md).
        step("test", cargo().args(["test", "--workspace", "--locked"]).env(ENDPOINT_VAR, &s3.endpoint))?;
        // Every benchmark once, as a smoke run (divan runs each row once under
        // `cargo test`), with the removal rows at 1,000 files instead of 100,000.
        // `--bench '*'` selects the bench targets alone (`--benches` would run
        // the libraries' unit tests again).
        step(
            "bench smoke",
            cargo()
                .args(["test", "--workspace", "--bench", "*", "--locked"])
                .env("SAFECACHE_BENCH_FILES", "1000")
                .env(ENDPOINT_VAR, &s3.endpoint),
        )?;
    }
    // A short stress run: real processes, real kills, through the CLI, with
    // fills that leave writers behind. Its 20 seconds are most of what it
    // adds to the gate; docs/STRESS.md.
    if cfg!(target_os = "linux") {
        let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
        step("stress", Command::new(xtask).args(["stress", "--procs", "8", "--secs", "20", "--grandchildren"]))?;
    }
    step("doc", cargo().args(["doc", "--workspace", "--no-deps", "--locked"]).env("RUSTDOCFLAGS", "-D warnings"))?;
    eprintln!("\nxtask ci: all steps passed (target dir {})", ws.target_dir.display());
    Ok(())
}

/// `cargo clippy ARGS --locked -- -D warnings`, run as the step `name`.
fn clippy(name: &str, args: &[&str]) -> Result<()> {
    step(name, cargo().arg("clippy").args(args).args(["--locked", "--", "-D", "warnings"]))
}

/// The real tools the tests start, each with a command that succeeds only
/// when the tool works, and the Debian package that provides it. The
/// filesystem tests (cargo-safecache/tests/cli/filesystems.rs and
/// case_insensitive.rs) make ext4, xfs and btrfs images and mount a
/// case-insensitive FUSE passthrough written with Debian's fusepy, run by
/// /usr/bin/python3 (not whatever python3 comes first on PATH).
const SYSTEM_TOOLS: [(&str, &[&str], &str); 15] = [
    ("git", &["git", "--version"], "git"),
    ("tar", &["tar", "--version"], "tar"),
    ("make", &["make", "--version"], "make"),
    ("python3 -m venv", &["python3", "-c", "import venv, ensurepip"], "python3-venv"),
    ("mount", &["mount", "--version"], "mount"),
    ("setsid", &["setsid", "--version"], "util-linux"),
    ("mkfs.ext4", &["mkfs.ext4", "-V"], "e2fsprogs"),
    ("mkfs.xfs", &["mkfs.xfs", "-V"], "xfsprogs"),
    ("mkfs.btrfs", &["mkfs.btrfs", "--version"], "btrfs-progs"),
    ("fusermount (libfuse2)", &["fusermount", "-V"], "fuse"),
    ("rsync", &["rsync", "--version"], "rsync"),
    // The remote rows' baselines: the archive fetched and unpacked by hand.
    ("curl", &["curl", "--version"], "curl"),
    ("zstd", &["zstd", "--version"], "zstd"),
    ("fusepy", &["/usr/bin/python3", "-c", "import fusepy"], "python3-fusepy"),
    ("GNU time (a command's own peak memory)", &["/usr/bin/time", "-f", "%M", "true"], "time"),
];

/// Installs the Debian packages of the real tools the tests run (git, tar,
/// rsync, curl, zstd, make, a Python with venv and ensurepip, mount, setsid, mkfs for ext4,
/// xfs and btrfs, libfuse2, fusepy and GNU time) when any is missing and apt-get can;
/// otherwise fails naming the packages.
fn ensure_system_tools() -> Result<()> {
    let works = |argv: &[&str]| Command::new(argv[0]).args(&argv[1..]).output().is_ok_and(|o| o.status.success());
    let missing: Vec<(&str, &str)> =
        SYSTEM_TOOLS.iter().filter(|(_, argv, _)| !works(argv)).map(|(name, _, package)| (*name, *package)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
    if !works(&["apt-get", "--version"]) {
        bail!("the tests need {}: install the packages {} (Debian names)", names.join(", "), packages.join(" "));
    }
    step("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
    step(
        &format!("install {}", packages.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if let Some((name, _)) = SYSTEM_TOOLS.iter().find(|(_, argv, _)| !works(argv)).map(|(n, _, p)| (n, p)) {
        bail!("`{name}` still does not work after installing {}", packages.join(" "));
    }
    Ok(())
}

/// Installs the rustup components and the wasm target the gate needs, if
/// they are missing.
pub(crate) fn ensure_rustup_parts() -> Result<()> {
    let installed = |what: &str| -> Result<String> {
        let out = Command::new("rustup")
            .args([what, "list", "--installed"])
            .output()
            .with_context(|| format!("running `rustup {what} list`; is rustup installed?"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let components = installed("component")?;
    for component in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            step(&format!("install {component}"), Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    if !installed("target")?.lines().any(|l| l.trim() == WASM_TARGET) {
        step("install wasm32-wasip1", Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    Ok(())
}
