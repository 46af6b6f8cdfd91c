//! This defines `cargo xtask s3` and the S3 server the other tasks hold
//! while tests or benchmarks that need one run: moto (from PyPI, in a
//! private venv under the target dir) serving S3 on 127.0.0.1 at a port the
//! kernel picks, with dummy credentials, named to the tests by
//! `SAFECACHE_TEST_S3_ENDPOINT` (docs/REMOTE.md, "Tests against S3").
//!
//! `cargo xtask s3 [-- CARGO TEST ARGS]` runs `cargo test ARGS` under one
//! server; without arguments, the remote tier's tests with S3 built in
//! (`-p safecache-remote --features aws --locked`). The gate (`ci.rs`) and
//! `cargo xtask bench` (`bench.rs`) hold a [`Server`] of their own around
//! their test and benchmark steps.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::shared::Workspace;
use crate::{cargo, step, workspace};

/// The variable the tests find the server in.
pub(crate) const ENDPOINT_VAR: &str = "SAFECACHE_TEST_S3_ENDPOINT";

/// What `cargo xtask s3` tests when given no arguments. `-p
/// safecache-remote` alone would build the crate without `aws` (features
/// are unified over the selected packages only), hence the feature.
const DEFAULT_TEST_ARGS: [&str; 5] = ["-p", "safecache-remote", "--features", "aws", "--locked"];

/// The moto the tests were written against.
const MOTO: &str = "moto[server]==5.2.*";

/// What the server prints, then its URL, once it listens.
const READY: &str = "safecache-s3-endpoint ";

/// Starts moto's threaded server, says where it listens, and serves until
/// its standard input closes (so it ends with xtask even if xtask is
/// killed before it can kill the server).
const SERVER: &str = "\
import logging, sys
logging.getLogger('werkzeug').setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address='127.0.0.1', port=0)
server.start()
host, port = server.get_host_and_port()
print(f'safecache-s3-endpoint http://{host}:{port}', flush=True)
sys.stdin.read()
server.stop()
";

pub(crate) fn run(args: &[String]) -> Result<()> {
    let test_args: Vec<&str> = match args.split_first() {
        None => DEFAULT_TEST_ARGS.to_vec(),
        Some((dashes, rest)) if dashes == "--" => rest.iter().map(String::as_str).collect(),
        Some((arg, _)) => {
            bail!(
                "`cargo xtask s3` takes cargo test's arguments after `--` (`cargo xtask s3 -- -p cargo-safecache`), got `{arg}`"
            )
        }
    };
    let ws = workspace()?;
    std::env::set_current_dir(&ws.root)?;
    let server = Server::start_with_moto(&ws)?;
    step("test against S3 (moto)", cargo().arg("test").args(&test_args).env(ENDPOINT_VAR, &server.endpoint))
}

/// Makes the venv and installs moto into it, unless it already imports.
fn ensure_moto(venv: &Path, python: &Path) -> Result<()> {
    let imports = || {
        Command::new(python)
            .args(["-c", "import moto.server, sys; sys.exit(0 if moto.__version__.startswith('5.2') else 1)"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if imports() {
        return Ok(());
    }
    step("make a venv for moto", Command::new("python3").arg("-m").arg("venv").arg("--clear").arg(venv))?;
    step("install moto", Command::new(python).args(["-m", "pip", "install", "--quiet", MOTO]))?;
    if !imports() {
        bail!("moto does not import from {} after installing it", venv.display());
    }
    Ok(())
}

/// A running moto: hold it for as long as the steps that use it run, and
/// pass them `endpoint` in [`ENDPOINT_VAR`]. Dropping it, on the error
/// paths too, closes the server's input and kills it by its own pid, and
/// reaps it; no task calls `std::process::exit` while one is held.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
}

impl Server {
    /// Makes moto's venv under the target dir if it is not there (about
    /// 45 s, once), then starts the server.
    pub(crate) fn start_with_moto(ws: &Workspace) -> Result<Server> {
        let venv = ws.target_dir.join("moto-venv");
        let python = venv.join("bin/python");
        ensure_moto(&venv, &python)?;
        let server = Server::start(&python)?;
        eprintln!("\n==> moto serves S3 at {} (pid {})", server.endpoint, server.child.id());
        Ok(server)
    }

    fn start(python: &Path) -> Result<Server> {
        let mut child = Command::new(python)
            .args(["-c", SERVER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting moto")?;
        let stdout = child.stdout.take().context("moto's output")?;
        // From here on, an early return drops the server, which kills it.
        let mut server = Server { child, endpoint: String::new() };
        // moto prints a line of its own first; the endpoint follows.
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.context("reading moto's output")?;
            match line.strip_prefix(READY) {
                Some(endpoint) => {
                    server.endpoint = endpoint.to_owned();
                    break;
                }
                None => eprintln!("moto: {line}"),
            }
        }
        if server.endpoint.is_empty() {
            bail!("moto exited before it listened");
        }
        // Whatever it prints later goes to stderr: a pipe nobody reads
        // would fill and stall it, and a closed one would fail its prints.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| eprintln!("moto: {line}")));
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
