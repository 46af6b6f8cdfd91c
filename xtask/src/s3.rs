//! This defines `cargo xtask s3`, the remote tier's tests against a real S3
//! server: moto (from PyPI, in a private venv under the target dir) serving
//! S3 on 127.0.0.1 at a port the kernel picks, with dummy credentials, for
//! the length of one `cargo test -p safecache-remote --features aws`,
//! which finds it in `SAFECACHE_TEST_S3_ENDPOINT` (docs/REMOTE.md, "Tests
//! against S3"). The gate runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{cargo, step, workspace};

/// The moto the tests were written against.
const MOTO: &str = "moto[server]==5.2.*";

/// What the server prints, then its URL, once it listens.
const READY: &str = "safecache-s3-endpoint ";

/// Starts moto's threaded server, says where it listens, and serves until
/// its standard input closes.
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
    if let Some(arg) = args.first() {
        bail!("`cargo xtask s3` takes no arguments, got `{arg}`");
    }
    let ws = workspace()?;
    std::env::set_current_dir(&ws.root)?;
    let venv = ws.target_dir.join("moto-venv");
    let python = venv.join("bin/python");
    ensure_moto(&venv, &python)?;
    let server = Server::start(&python)?;
    eprintln!("moto serves S3 at {}", server.endpoint);
    step(
        "remote tests against S3 (moto)",
        cargo()
            .args(["test", "-p", "safecache-remote", "--features", "aws", "--locked"])
            .env("SAFECACHE_TEST_S3_ENDPOINT", &server.endpoint),
    )
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

/// The running server; dropping it closes its input and kills it, by its
/// own pid, and reaps it.
struct Server {
    child: Child,
    endpoint: String,
}

impl Server {
    fn start(python: &Path) -> Result<Server> {
        let mut child = Command::new(python)
            .args(["-c", SERVER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting moto")?;
        let stdout = child.stdout.take().context("moto's output")?;
        let mut server = Server { child, endpoint: String::new() };
        // moto prints a line of its own first; the endpoint follows.
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading moto's output")?;
            if let Some(endpoint) = line.strip_prefix(READY) {
                server.endpoint = endpoint.to_owned();
                return Ok(server);
            }
        }
        bail!("moto exited before it listened")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
