//! What `/proc` says about the processes of this stress run.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) struct Proc {
    pub(super) pid: i32,
    pub(super) ppid: i32,
    pub(super) state: char,
    pub(super) cmdline: Vec<String>,
}

/// Every process now running, as far as /proc shows them (a process that
/// exits while we read is skipped).
pub(super) fn snapshot() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name in parentheses may hold spaces: fields start
        // after the last `)`.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Proc { pid, ppid, state, cmdline });
    }
    out
}

/// `pid`'s descendants in `procs`, parents before children.
pub(super) fn descendants(procs: &[Proc], pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for child in procs.iter().filter(|c| c.ppid == p) {
            out.push(child.pid);
            frontier.push(child.pid);
        }
    }
    out
}

pub(super) fn environ_has(pid: i32, var: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|c| *c == 0).any(|e| e == var.as_bytes()))
}
