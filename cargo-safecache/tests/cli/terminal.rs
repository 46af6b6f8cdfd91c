//! The command line on a real terminal: a pseudo-terminal that python3's
//! `pty` module opens, with a real process holding the lock waited for.

use std::process::Command;

use serde_json::Value;

use crate::support::{Sandbox, bin};

/// What both drivers share: start ARGS on a new pseudo-terminal and read
/// what it writes, with a deadline.
const PTY: &str = r#"
import json, os, pty, select, signal, sys, time
def start(binary, args):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(binary, [binary] + args)
    return pid, fd
out = b""
deadline = time.time() + 120
def read_more(fd):
    global out
    ready, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
    if not ready:
        raise SystemExit("timed out; the terminal shows %r" % out)
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        chunk = b""
    out += chunk
    return bool(chunk)
def read_until(fd, marker):
    while marker not in out:
        if not read_more(fd):
            raise SystemExit("ended before it showed %r: %r" % (marker, out))
def finish(pid, fd):
    while read_more(fd):
        pass
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status), "out": out.decode("latin-1")}))
"#;

/// Runs `cargo-safecache ARGS` on a new pseudo-terminal, waits until its
/// spinner is drawn, then interrupts it with `how` (`ctrl-c`: the byte
/// 0x03 typed on the terminal; `term`: SIGTERM to its pid) and reads the
/// terminal to the end. Returns the exit code as Python reports it
/// (negative: killed by that signal) and everything written to the terminal.
const DRIVER: &str = r#"
binary, how, args = sys.argv[1], sys.argv[2], sys.argv[3:]
pid, fd = start(binary, args)
# The spinner draws its message with the time waited in parentheses.
read_until(fd, b"lock on the cache lease (")
if how == "ctrl-c":
    os.write(fd, b"\x03")
else:
    os.kill(pid, signal.SIGTERM)
finish(pid, fd)
"#;

/// Ctrl-C (and SIGTERM) while `clean` or `run --exclusive` waits for a
/// `run` to finish clears
/// the spinner's line before the process ends, and it still ends as the
/// signal ends it.
#[test]
fn a_signal_during_a_wait_clears_the_spinner() {
    let sb = Sandbox::new();
    let mut holder = sb.spawn(["run", "--", "sh", "-c", "echo ready; read line"]);
    holder.expect_stdout("ready");
    let cases = [
        ("ctrl-c", 2, vec!["clean"]),
        ("term", 15, vec!["clean"]),
        ("ctrl-c", 2, vec!["run", "--exclusive", "--", "true"]),
    ];
    for (how, signal, args) in cases {
        let template = sb.cmd(&args);
        let mut driver = Command::new("python3");
        driver.arg("-c").arg(format!("{PTY}{DRIVER}")).arg(bin()).arg(how).args(&args);
        for (key, value) in template.get_envs() {
            match value {
                Some(value) => driver.env(key, value),
                None => driver.env_remove(key),
            };
        }
        let run = driver.output().expect("run python3");
        let report = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "the driver: {report}{}", String::from_utf8_lossy(&run.stderr));
        let v: Value = serde_json::from_str(report.trim()).expect("one JSON line");
        let out = v["out"].as_str().expect("the terminal's output");
        assert_eq!(v["code"].as_i64(), Some(-signal), "{how} {args:?}: ends by the signal\n{out:?}");
        let drawn = out.rfind("lock on the cache lease (").expect("the spinner was drawn");
        let cleared = out.rfind("\x1b[2K").filter(|&c| c > drawn);
        let Some(cleared) = cleared else { panic!("{how}: the spinner's line is left on the terminal:\n{out:?}") };
        let after = out[cleared + "\x1b[2K".len()..].replace("^C", "");
        assert!(after.trim().is_empty(), "{how}: nothing is drawn after the line is cleared: {after:?}");
    }
    holder.send("done");
    let (status, _) = holder.finish();
    assert!(status.success());
}

/// Runs `cargo-safecache ARGS` on a new pseudo-terminal until it shows
/// `marker`, then writes a line into the fifo `gate` and reads the terminal
/// to the end. Prints the exit code and everything written.
const TAIL_DRIVER: &str = r#"
binary, marker, gate, args = sys.argv[1], sys.argv[2].encode(), sys.argv[3], sys.argv[4:]
pid, fd = start(binary, args)
read_until(fd, marker)
with open(gate, "w") as g:
    g.write("go\n")
finish(pid, fd)
"#;

/// A waiter on a terminal shows the filler's latest output line beside its
/// spinner (the fill's output is kept in a bounded log in the cache's
/// metadata while it runs), and the log is gone once the fill ends.
#[test]
fn a_waiter_shows_the_fills_latest_line() {
    let sb = Sandbox::new();
    let gate = sb.path("gate");
    crate::support::mkfifo(&gate);
    // The line is computed, so the fill's command line (which wait
    // messages quote) does not contain it.
    let fill = format!("echo \"progress $((40 + 2))%\"; read x < '{}'; echo v > \"$SAFECACHE_OUT/f\"", gate.display());
    let mut filler = sb.spawn(["run", "--key", "dep", "--", "sh", "-c", &fill]);
    filler.expect_stderr_line("progress 42%");
    let args = ["use", "--key", "dep", "--", "true"];
    let template = sb.cmd(args);
    let mut driver = Command::new("python3");
    driver.arg("-c").arg(format!("{PTY}{TAIL_DRIVER}")).arg(bin()).arg("| progress 42%").arg(&gate).args(args);
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => driver.env(key, value),
            None => driver.env_remove(key),
        };
    }
    let run = driver.output().expect("run python3");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "the driver: {report}{}", String::from_utf8_lossy(&run.stderr));
    let v: Value = serde_json::from_str(report.trim()).expect("one JSON line");
    assert_eq!(v["code"].as_i64(), Some(0), "the waiter used the entry: {v}");
    let (status, _) = filler.finish();
    assert!(status.success());
    let fills = sb.cache.join(".safecache/fills");
    let left: Vec<_> =
        std::fs::read_dir(&fills).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the fill's log is removed with it: {left:?}");
}

/// Runs `cargo-safecache ARGS` on a new pseudo-terminal and reads the
/// terminal to the end. Prints the exit code and everything written.
const PLAIN_DRIVER: &str = r#"
binary, args = sys.argv[1], sys.argv[2:]
pid, fd = start(binary, args)
finish(pid, fd)
"#;

/// A proxy on 127.0.0.1 in front of `upstream` that passes what the
/// server sends at about 1 MB/s: a slow network, so that a download takes
/// seconds. Returns its `http://` endpoint.
fn slow_proxy(upstream: &str) -> String {
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
            let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c_read, &mut s_write));
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = s_read.read(&mut buf) {
                    if n == 0 || c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    // The slowness of the network, not a synchronization.
                    std::thread::sleep(std::time::Duration::from_millis(16));
                }
                let _ = c_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    endpoint
}

/// A download from the remote tier that takes more than half a second
/// shows its bytes on a terminal, and clears the line when it ends; the
/// same restore off a terminal shows no counter.
#[test]
fn a_slow_download_shows_its_progress_on_a_terminal() {
    let endpoint = crate::remote::s3_endpoint();
    let bucket = crate::remote::s3_bucket(&endpoint);
    let url = format!("s3://{bucket}/t");
    let sb = Sandbox::new();
    let s3 = |cmd: &mut Command, endpoint: &str| {
        cmd.env("SAFECACHE_REMOTE", &url);
        crate::remote::s3_env(cmd, endpoint);
    };
    // 3 MiB that zstd cannot shrink: about 3 s through the proxy.
    let fill = "head -c 3145728 /dev/urandom > \"$SAFECACHE_OUT/blob\"";
    let mut writer =
        sb.cmd(["--cache-dir", sb.path("writer").to_str().unwrap(), "run", "--key", "big", "--", "sh", "-c", fill]);
    s3(&mut writer, &endpoint);
    let out = writer.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Uploaded"), "{}", String::from_utf8_lossy(&out.stderr));

    let slow = slow_proxy(&endpoint);
    let args = ["run", "--key", "big", "--", "false"];
    let template = sb.cmd(args);
    let mut driver = Command::new("python3");
    driver.arg("-c").arg(format!("{PTY}{PLAIN_DRIVER}")).arg(bin()).args(args);
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => driver.env(key, value),
            None => driver.env_remove(key),
        };
    }
    s3(&mut driver, &slow);
    let run = driver.output().expect("run python3");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "the driver: {report}{}", String::from_utf8_lossy(&run.stderr));
    let v: Value = serde_json::from_str(report.trim()).expect("one JSON line");
    let out = v["out"].as_str().expect("the terminal's output");
    assert_eq!(v["code"].as_i64(), Some(0), "restored, not filled:\n{out}");
    let drawn = out.rfind("Downloading").unwrap_or_else(|| panic!("no progress was drawn:\n{out:?}"));
    assert!(out[drawn..].contains("B/s"), "the counter shows a rate:\n{out:?}");
    let restored = out.find("Restored").expect("the restore is reported");
    assert!(out[drawn..restored].contains("\x1b[2K"), "the counter's line is cleared before the report:\n{out:?}");

    // Off a terminal: no counter, same restore.
    let mut plain = sb.cmd(["--cache-dir", sb.path("third").to_str().unwrap(), "run", "--key", "big", "--", "false"]);
    s3(&mut plain, &slow);
    let out = plain.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("Restored"), "{stderr}");
    assert!(!stderr.contains("Downloading"), "no counter off a terminal: {stderr}");
}
