//! The command line as its users meet it: the `safecache` binary, shell
//! completions and man pages, help text, wording, and docs/CLI.md agreeing
//! with `--help`. Every test runs the built binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{Out, Sandbox};

/// The `safecache` binary this build made.
const SAFECACHE: &str = env!("CARGO_BIN_EXE_safecache");

/// The subcommands, as the top-level help lists them (without `help`).
fn subcommands(sb: &Sandbox) -> Vec<String> {
    let help = sb.run(["--help"]);
    help.assert_code(0);
    let mut subs = Vec::new();
    let mut in_commands = false;
    for line in help.stdout.lines() {
        if line == "Commands:" {
            in_commands = true;
        } else if in_commands && line.starts_with("  ") && !line.starts_with("   ") {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name != "help" {
                subs.push(name.to_owned());
            }
        } else if in_commands && !line.starts_with(' ') {
            break;
        }
    }
    assert!(subs.len() >= 8, "found the subcommands in --help: {subs:?}\n{help}");
    subs
}

/// `sb.cmd(args)`, but running the `safecache` binary.
fn safecache_cmd<I, S>(sb: &Sandbox, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let template = sb.cmd(args);
    let mut cmd = Command::new(SAFECACHE);
    cmd.args(template.get_args()).stdin(Stdio::null());
    for (name, value) in template.get_envs() {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    cmd
}

fn safecache<I, S>(sb: &Sandbox, args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Out::of(&mut safecache_cmd(sb, args))
}

/// `safecache` is the same program as `cargo-safecache`: same results on
/// one cache, and it calls itself `safecache` in usage, help and hints.
#[test]
fn safecache_binary_is_the_same_program() {
    let sb = Sandbox::new();
    let entry = sb.fill("git/serde", "v");
    for args in [vec!["path", "git/serde"], vec!["--message-format", "json", "ls"], vec!["path", "absent"]] {
        let (a, b) = (sb.run(&args), safecache(&sb, &args));
        assert_eq!((a.code, &a.stdout), (b.code, &b.stdout), "{args:?}: cargo-safecache\n{a}\nsafecache\n{b}");
    }
    assert_eq!(safecache(&sb, ["path", "git/serde"]).stdout.trim(), entry.display().to_string());
    // The human listing: same key and size (the age may tick between runs).
    let columns = |out: &Out| out.stdout.split_whitespace().take(3).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(columns(&sb.run(["ls"])), columns(&safecache(&sb, ["ls"])));

    // A fill through `safecache` is found by `cargo-safecache`, and back.
    let out = safecache(&sb, ["run", "--key", "k2", "--", "sh", "-c", "echo x > \"$SAFECACHE_OUT/f\""]);
    out.assert_code(0);
    assert_eq!(sb.run(["path", "k2"]).stdout.trim(), out.last_stdout_line());

    let help = safecache(&sb, ["--help"]);
    help.assert_code(0);
    assert!(help.stdout.contains("Usage: safecache [OPTIONS] <COMMAND>"), "{help}");
    let help = safecache(&sb, ["rm", "--help"]);
    assert!(help.stdout.contains("Usage: safecache rm") && help.stdout.contains("  safecache rm git/serde"), "{help}");
    let version = safecache(&sb, ["--version"]);
    assert!(version.stdout.starts_with("safecache "), "{version}");
    let out = safecache(&sb, ["bogus"]);
    out.assert_one_line_error(2, "run `safecache help` for usage");
    // `safecache safecache ...` is not the cargo form: that is for cargo.
    safecache(&sb, ["safecache", "ls"]).assert_code(2);
}

/// Completions for every shell mention every subcommand; bash accepts the
/// script and it completes subcommands and options.
#[test]
fn completions_for_every_shell() {
    let sb = Sandbox::new();
    let subs = subcommands(&sb);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = safecache(&sb, ["completions", shell]);
        out.assert_code(0);
        assert!(out.stderr.is_empty(), "{out}");
        for sub in &subs {
            assert!(out.stdout.contains(sub.as_str()), "{shell} completions mention `{sub}`");
        }
        assert!(out.stdout.contains("lock-timeout"), "{shell} completions mention options");
        // The cargo form prints the same script, for `safecache`.
        let cargo_form = sb.run(["safecache", "completions", shell]);
        assert_eq!(cargo_form.stdout, out.stdout, "{shell}: the cargo form completes `safecache` too");
    }
    // No cache dir (nor HOME) is needed to print them.
    let out = Out::of(
        safecache_cmd(&sb, ["completions", "bash"])
            .env_remove("SAFECACHE_DIR")
            .env_remove("HOME")
            .env("XDG_CACHE_HOME", ""),
    );
    out.assert_code(0);
    assert!(!sb.cache.exists(), "completions do not create the cache");

    let script = sb.path("safecache.bash");
    std::fs::write(&script, safecache(&sb, ["completions", "bash"]).stdout).expect("write");
    let check = Command::new("bash").arg("-n").arg(&script).output().expect("run bash -n");
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            r#"source "$0"; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE="{line}"; COMP_POINT={point};
               _safecache safecache "{cur}" "{prev}"; printf '%s\n' "${{COMPREPLY[@]}}""#,
            words = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            cword = words.len() - 1,
            point = line.len(),
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Command::new("bash").arg("-c").arg(program).arg(&script).output().expect("run bash");
        assert!(out.status.success(), "completing {line:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect::<BTreeSet<_>>()
    };
    let words = complete("safecache ");
    for sub in &subs {
        assert!(words.contains(sub), "`safecache <TAB>` offers `{sub}`: {words:?}");
    }
    let words = complete("safecache run --");
    assert!(words.contains("--key") && words.contains("--fill") && words.contains("--cache-dir"), "{words:?}");
}

/// The man page is roff that a formatter accepts, covering every
/// subcommand; `man --dir` writes one page per subcommand.
#[test]
fn man_pages_render() {
    let sb = Sandbox::new();
    let subs = subcommands(&sb);
    let out = safecache(&sb, ["man"]);
    out.assert_code(0);
    let first_macro = out.stdout.lines().find(|l| l.starts_with(".TH") || l.starts_with(".SH"));
    assert!(first_macro.is_some_and(|l| l.starts_with(".TH safecache 1")), "the page opens with .TH\n{out}");
    let page = sb.path("safecache.1");
    std::fs::write(&page, &out.stdout).expect("write");
    match render_man(&page) {
        Some(text) => {
            for needle in ["NAME", "SYNOPSIS", "--lock-timeout", "Exit codes:"] {
                assert!(text.contains(needle), "the rendered page shows {needle}:\n{text}");
            }
            for sub in &subs {
                assert!(text.contains(&format!("safecache-{sub}(1)")), "the page lists `{sub}`:\n{text}");
            }
        }
        None => println!("skipped rendering the man page: neither groff nor man is installed"),
    }

    let dir = sb.path("man1");
    std::fs::create_dir(&dir).expect("mkdir");
    let out = safecache(&sb, ["man", "--dir", dir.to_str().expect("utf-8")]);
    out.assert_code(0);
    let written: BTreeSet<String> = out.stdout.lines().map(str::to_owned).collect();
    let expected: BTreeSet<String> = std::iter::once("safecache.1".to_owned())
        .chain(subs.iter().map(|s| format!("safecache-{s}.1")))
        .map(|f| dir.join(f).display().to_string())
        .collect();
    assert_eq!(written, expected, "{out}");
    for file in &written {
        let text = std::fs::read_to_string(file).expect("read page");
        assert!(text.contains(".TH "), "{file} is a man page");
    }
    assert!(!sb.cache.exists(), "man does not create the cache");
}

/// The page as text, through `groff -man` (warnings on) or `man -l`; `None`
/// if neither is installed.
fn render_man(page: &Path) -> Option<String> {
    let tries: [(&str, &[&str]); 2] = [("groff", &["-man", "-Tutf8", "-ww"]), ("man", &["-l"])];
    for (tool, args) in tries {
        let out = match Command::new(tool).args(args).arg(page).env("MANPAGER", "cat").env("PAGER", "cat").output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("run {tool}: {e}"),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{tool} rejects the page: {stderr}");
        // Bold and underline come out as overstrikes: keep the letters.
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut plain = String::new();
        for c in text.chars() {
            if c == '\u{8}' {
                plain.pop();
            } else {
                plain.push(c);
            }
        }
        return Some(plain);
    }
    None
}

/// `-h` is short, `--help` long with examples; the exit codes and
/// environment are in the top-level `--help` only, and no help points to
/// files an installed user does not have.
#[test]
fn help_is_short_then_long_without_a_repeated_footer() {
    let sb = Sandbox::new();
    let top = sb.run(["--help"]);
    top.assert_code(0);
    for needle in ["Exit codes:", "75", "77", "101", "Environment", "SAFECACHE_LOG", "Examples:"] {
        assert!(top.stdout.contains(needle), "the top-level --help shows {needle}\n{top}");
    }
    let short = sb.run(["-h"]);
    short.assert_code(0);
    assert!(!short.stdout.contains("Exit codes:") && short.stdout.contains("--help"), "{short}");
    assert!(short.stdout.lines().count() < top.stdout.lines().count() / 2, "-h is short\n{short}");
    for sub in subcommands(&sb) {
        let long = sb.run([sub.as_str(), "--help"]);
        long.assert_code(0);
        let short = sb.run([sub.as_str(), "-h"]);
        short.assert_code(0);
        assert!(!long.stdout.contains("Exit codes:") && !short.stdout.contains("Exit codes:"), "{sub}: {long}");
        assert!(long.stdout.contains("Examples:\n  "), "{sub} --help has examples\n{long}");
        assert!(
            long.stdout.contains(&format!("  cargo-safecache {sub}")),
            "{sub} --help shows an example of itself\n{long}"
        );
        assert!(!short.stdout.contains("Examples:"), "{sub} -h stays short\n{short}");
        assert!(short.stdout.lines().count() < long.stdout.lines().count(), "{sub}: -h is shorter than --help");
        let cargo_form = sb.run(["safecache", sub.as_str(), "--help"]);
        assert!(cargo_form.stdout.contains(&format!("  cargo safecache {sub}")), "{cargo_form}");
        for out in [&long, &short, &cargo_form] {
            assert!(!out.stdout.contains("docs/"), "{sub}: help points to a file users lack\n{out}");
        }
    }
    assert!(!top.stdout.contains("docs/"), "{top}");
}

/// The global options are listed once, under their own heading in the
/// top-level help and man page; a subcommand's `-h`, `--help` and man page
/// only say where they are, and still accept them.
#[test]
fn global_options_are_listed_once() {
    let sb = Sandbox::new();
    let top = sb.run(["-h"]);
    top.assert_code(0);
    let heading = top.stdout.split("\nGlobal options:\n").nth(1).unwrap_or_else(|| panic!("a heading\n{top}"));
    let globals = defined_options(heading);
    for flag in ["--cache-dir", "--lock-timeout", "--quiet", "--message-format", "--max-size", "--verify-on-read"] {
        assert!(globals.contains(flag), "{flag} is under `Global options:`\n{top}");
    }
    assert!(!globals.contains("--help"), "-h stays with the program's own options\n{top}");
    let dir = sb.path("man1");
    std::fs::create_dir(&dir).expect("mkdir");
    sb.run(["man", "--dir", dir.to_str().expect("utf-8")]).assert_code(0);
    let page = std::fs::read_to_string(dir.join("cargo-safecache.1")).expect("the main page");
    assert!(page.contains(".SH \"GLOBAL OPTIONS\"") && page.contains("\\fB\\-\\-cache\\-dir\\fR"), "{page}");
    for sub in subcommands(&sb) {
        for help in ["-h", "--help"] {
            let out = sb.run([sub.as_str(), help]);
            out.assert_code(0);
            let repeated: Vec<_> = defined_options(&out.stdout).intersection(&globals).cloned().collect();
            assert!(repeated.is_empty(), "`{sub} {help}` repeats the global options {repeated:?}\n{out}");
            assert!(
                out.stdout
                    .contains("Global options (--cache-dir, --lock-timeout, -q, ...): see `cargo-safecache --help`"),
                "{out}"
            );
        }
        let page =
            std::fs::read_to_string(dir.join(format!("cargo-safecache-{sub}.1"))).expect("a page per subcommand");
        assert!(!page.contains("\\fB\\-\\-cache\\-dir\\fR"), "safecache-{sub}.1 repeats the global options\n{page}");
    }
    // Still accepted after the subcommand.
    sb.fill("k", "v");
    let out = sb.run(["path", "k", "--quiet", "--lock-timeout", "0", "--message-format", "json"]);
    out.assert_code(0);
    assert!(out.stdout.contains("\"reason\":\"entry\""), "{out}");
}

/// `completions` without a shell lists the shells it knows, one per line,
/// and each is one it accepts; it needs no cache.
#[test]
fn completions_without_a_shell_lists_them() {
    let sb = Sandbox::new();
    let out = sb.run(["completions"]);
    out.assert_code(0);
    let shells: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(shells, ["bash", "elvish", "fish", "powershell", "zsh"], "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    for shell in shells {
        sb.run(["completions", shell]).assert_code(0);
    }
    assert!(!sb.cache.exists(), "completions do not create the cache");
}

/// Each man page's synopsis shows every option with the value it takes,
/// as `-h` does (`[--cache-dir DIR]`, `[--key KEY]`).
#[test]
fn man_synopsis_shows_each_value() {
    let sb = Sandbox::new();
    let dir = sb.path("man1");
    std::fs::create_dir(&dir).expect("mkdir");
    sb.run(["man", "--dir", dir.to_str().expect("utf-8")]).assert_code(0);
    let mut pages = vec![(String::new(), "cargo-safecache.1".to_owned())];
    pages.extend(subcommands(&sb).into_iter().map(|sub| (sub.clone(), format!("cargo-safecache-{sub}.1"))));
    let mut checked = 0;
    for (sub, file) in pages {
        let page = std::fs::read_to_string(dir.join(&file)).expect("read the page");
        let synopsis = page.split(".SH SYNOPSIS\n").nth(1).and_then(|s| s.lines().next()).expect("a synopsis");
        let plain = synopsis.replace("\\fB", "").replace("\\fI", "").replace("\\fR", "").replace("\\-", "-");
        let help = if sub.is_empty() { sb.run(["-h"]) } else { sb.run([sub.as_str(), "-h"]) };
        for line in help.stdout.lines().filter(|l| l.starts_with("  -") || l.starts_with("      --")) {
            let spec = line.trim_start().split("  ").next().unwrap_or_default();
            let Some((flag, value)) = spec.rsplit(", ").next().and_then(|s| s.split_once(" <")) else { continue };
            let want = format!("{flag} {}", value.trim_end_matches("...").trim_end_matches('>'));
            assert!(plain.contains(&want), "{file}: the synopsis shows `{want}`\n{plain}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "checked {checked} options with values");
}

/// The top-level `--help` lists every exit code and every variable that
/// docs/CLI.md's tables list (the tidy test `docs_tables_match_the_help_reference`
/// checks the wording; this checks the built binary).
#[test]
fn help_lists_every_exit_code_and_variable() {
    let sb = Sandbox::new();
    let help = sb.run(["--help"]);
    help.assert_code(0);
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CLI.md")).expect("read docs");
    let section = |title: &str| -> String {
        let rest = help.stdout.split(&format!("\n{title}")).nth(1).unwrap_or_default();
        rest.split("\n\n").next().unwrap_or_default().to_owned()
    };
    let codes = section("Exit codes:");
    let rows = |header: &str| -> Vec<String> {
        doc.lines()
            .skip_while(|l| *l != header)
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.trim_start_matches("| ").split(" |").next().unwrap_or_default().to_owned())
            .collect()
    };
    let doc_codes = rows("| code | meaning |");
    assert!(doc_codes.len() >= 10, "{doc_codes:?}");
    for code in doc_codes {
        assert!(codes.lines().any(|l| l.starts_with(&format!("  {code} "))), "--help lists exit code {code}\n{codes}");
    }
    let env = section("Environment");
    for cell in rows("| variable | read by | meaning |") {
        for name in cell.split(',').map(|n| n.trim().trim_matches('`')) {
            assert!(env.lines().any(|l| l.starts_with(&format!("  {name} "))), "--help lists {name}\n{env}");
        }
    }
}

/// Every variable safecache reads or exports counts as unset when it is
/// empty, as docs/CLI.md promises: `SAFECACHE_MIN_FREE=` is no usage error.
/// The variables are taken from `--help`, so a new one is covered at once.
#[test]
fn every_empty_variable_counts_as_unset() {
    let sb = Sandbox::new();
    let help = sb.run(["--help"]);
    let env = help.stdout.split("\nEnvironment").nth(1).and_then(|s| s.split("\n\n").next()).unwrap_or_default();
    let listed: Vec<&str> = env
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split(' ').next())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    // With SAFECACHE_DIR empty, the cache is the default one, in here.
    let xdg = sb.path("xdg");
    for var in std::iter::once("SAFECACHE_MIN_FREE").chain(listed.iter().copied()) {
        let fill = r#"echo v > "$SAFECACHE_OUT/f""#;
        for args in [vec!["-q", "run", "--key", "k", "--", "sh", "-c", fill], vec!["path", "k"], vec!["ls"]] {
            let out = Out::of(sb.cmd(&args).env("XDG_CACHE_HOME", &xdg).env(var, ""));
            assert_eq!(out.code, Some(0), "{var}= {args:?}: {out}");
            assert!(out.stderr.is_empty(), "{var}= {args:?} says nothing on stderr\n{out}");
        }
    }
    assert!(listed.contains(&"SAFECACHE_MIN_FREE") && listed.len() >= 15, "{listed:?}\n{help}");
}

/// CMD sees exactly the `SAFECACHE_*` variables `--help` says `run`
/// exports (besides those it inherited).
#[test]
fn run_exports_what_help_lists() {
    let sb = Sandbox::new();
    let help = sb.run(["--help"]);
    let section = help.stdout.split("`run` and `use` export to CMD:\n").nth(1).and_then(|s| s.split("\n\n").next());
    let listed: BTreeSet<&str> = section
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split(' ').next())
        .filter(|n| n.starts_with("SAFECACHE_"))
        .collect();
    let inherited: BTreeSet<String> =
        std::env::vars().map(|(k, _)| k).filter(|k| k.starts_with("SAFECACHE_") && k != "SAFECACHE_DIR").collect();
    let seen = |out: &Out, file: &str| -> BTreeSet<String> {
        out.assert_code(0);
        let env = std::fs::read_to_string(sb.path(file)).expect("CMD wrote its environment");
        env.lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
            .filter(|k| k.starts_with("SAFECACHE_") && !inherited.contains(k))
            .collect()
    };
    let fill = seen(
        &sb.run(["run", "--key", "k", "--", "sh", "-c", r#"env > "$T/fill.env"; echo > "$SAFECACHE_OUT/f""#]),
        "fill.env",
    );
    let plain = seen(&sb.run(["run", "--", "sh", "-c", r#"env > "$T/run.env""#]), "run.env");
    for name in fill.iter().chain(&plain) {
        assert!(listed.contains(name.as_str()), "CMD sees {name}, which --help does not list\n{help}");
    }
    let all: BTreeSet<&str> = fill.iter().chain(&plain).map(String::as_str).collect();
    assert_eq!(all, listed, "--help lists what CMD sees");
}

/// An unset variable is shown as its name, not as `NAME=`; an empty one
/// counts as unset in both invocation forms and in `safecache`.
#[test]
fn env_papercuts() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    for args in [vec!["--help"], vec!["run", "--help"], vec!["-h"]] {
        let out = sb.run(&args);
        out.assert_code(0);
        assert!(!out.stdout.contains("=]"), "{args:?} shows an unset variable as empty\n{out}");
    }
    for args in [vec!["--help"], vec!["-h"]] {
        let out = sb.run(&args);
        assert!(out.stdout.contains("[env: SAFECACHE_LOCK_TIMEOUT]"), "{args:?}\n{out}");
    }
    let empty = ["CARGO_TERM_COLOR", "SAFECACHE_LOCK_TIMEOUT", "SAFECACHE_ALLOW_UNTRUSTED_CACHE"];
    let forms: [(&str, Command); 3] = [
        ("cargo form", sb.cmd(["safecache", "path", "k"])),
        ("direct", sb.cmd(["path", "k"])),
        ("safecache", safecache_cmd(&sb, ["path", "k"])),
    ];
    for (form, mut cmd) in forms {
        for var in empty {
            cmd.env(var, "");
        }
        let out = Out::of(&mut cmd);
        out.assert_code(0);
        assert!(out.stderr.is_empty(), "{form}: empty variables count as unset\n{out}");
    }
}

/// Counts agree with their nouns, and messages are sentences that say what
/// happened.
#[test]
fn wording() {
    let sb = Sandbox::new();
    let mut transcript = Vec::new();
    let mut record = |out: Out| {
        transcript.push(format!("{}{}", out.stdout, out.stderr));
        out
    };
    let out = record(sb.run(["ls"]));
    out.assert_code(0);
    assert!(out.stderr.contains("0 entries: the cache at") && out.stderr.contains("is empty"), "{out}");

    let dir = sb.path("adopted");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("legacy"), "data").expect("write");
    let dir_arg = dir.to_str().expect("utf-8");
    let out = record(sb.run(["init", dir_arg]));
    out.assert_code(0);
    assert!(out.stderr.contains("Initialized") && out.stderr.contains("(1 entry)"), "{out}");
    let out = record(sb.run(["init", dir_arg]));
    out.assert_code(0);
    assert!(!out.stderr.contains("Initialized") && out.stderr.contains("is already a cache (1 entry)"), "{out}");
    let json = record(sb.run(["--message-format", "json", "init", dir_arg]));
    let v: Value = serde_json::from_str(json.stdout.trim()).expect("one JSON line");
    assert_eq!(
        (v["reason"].as_str(), v["entries"].as_u64(), v["already"].as_bool()),
        (Some("initialized"), Some(1), Some(true))
    );

    // An error names the path once, not once per layer that saw it.
    let file = sb.path("a-file");
    std::fs::write(&file, "").expect("write");
    let out = record(sb.run(["init", file.to_str().expect("utf-8")]));
    out.assert_one_line_error(2, "is not a directory");
    assert_eq!(out.stderr.matches(file.to_str().expect("utf-8")).count(), 1, "{out}");

    sb.fill("one", "v");
    record(sb.run(["status"])).assert_code(0);
    record(sb.run(["gc"])).assert_code(0);
    record(sb.run(["rm", "one", "absent"])).assert_code(0);
    sb.fill("one", "v");
    let out = record(sb.run(["clean"]));
    assert!(out.stderr.contains("Cleaned 1 entry,"), "{out}");

    let text = transcript.join("\n");
    for bad in ["1 entries", "1 items", "1 processes", "(es)", "(s)", "Empty no"] {
        assert!(!text.contains(bad), "no message says {bad:?}:\n{text}");
    }
}

/// `ls` counts the bytes of regular files only: a symlink in an entry adds
/// nothing, however long its target's name or large its target.
#[test]
fn ls_counts_regular_files_only() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("big"), vec![b'x'; 100_000]).expect("write");
    let fill = r#"printf 0123456789 > "$SAFECACHE_OUT/f"; ln -s "$T/big" "$SAFECACHE_OUT/link"; mkdir "$SAFECACHE_OUT/d"; ln -s ../f "$SAFECACHE_OUT/d/up""#;
    sb.run(["run", "--key", "k", "--", "sh", "-c", fill]).assert_code(0);
    let out = sb.run(["--message-format", "json", "ls"]);
    out.assert_code(0);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON line");
    assert_eq!(v["bytes"].as_u64(), Some(10), "{out}");
    let out = sb.run(["ls"]);
    assert!(out.stdout.contains(" 10 B "), "{out}");
}

/// Every option docs/CLI.md names exists in the matching `--help`, and every
/// option `--help` defines is documented there; so is every subcommand.
#[test]
fn docs_and_help_agree_on_every_option() {
    let sb = Sandbox::new();
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CLI.md")).expect("read docs");
    let subs = subcommands(&sb);
    let sections = doc_sections(&doc, &subs);
    let top = defined_options(&sb.run(["-h"]).stdout);
    let documented_subs: BTreeSet<&String> = sections.keys().filter(|k| !k.is_empty()).collect();
    assert_eq!(documented_subs, subs.iter().collect(), "docs/CLI.md has a `### ` section for each subcommand");

    let mut problems = Vec::new();
    for (section, mentioned) in &sections {
        // A subcommand accepts the global options too, though its help
        // only points to them.
        let defined = if section.is_empty() {
            top.clone()
        } else {
            defined_options(&sb.run([section.as_str(), "-h"]).stdout).union(&top).cloned().collect()
        };
        for flag in mentioned.difference(&defined) {
            let place =
                if section.is_empty() { "the top-level --help".to_owned() } else { format!("`{section} --help`") };
            problems.push(format!("docs/CLI.md mentions {flag}, which {place} does not define"));
        }
        if section.is_empty() {
            continue;
        }
        for flag in defined.difference(&top) {
            if !mentioned.contains(flag) {
                problems.push(format!("`{section} --help` defines {flag}, which its section of docs/CLI.md omits"));
            }
        }
    }
    let global = global_table(&doc);
    for flag in top.difference(&global) {
        problems.push(format!("--help defines {flag}, which the global options table of docs/CLI.md omits"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `--flags` each part of docs/CLI.md mentions: under CMD for the
/// `### \`CMD ...\`` sections and for quoted commands such as `run --pin K`
/// anywhere, under "" for the rest after the first `## `. Quoted commands
/// of other programs (`pip-compile --rebuild`) are left out.
fn doc_sections(doc: &str, subs: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut fenced = false;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("### `") {
            current = Some(heading.split([' ', '`']).next().unwrap_or_default().to_owned());
        } else if line.starts_with("## ") || line.starts_with("### ") {
            current = Some(String::new());
        }
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(section) = current.clone() else { continue };
        // In a code block the whole line is a command; elsewhere, every
        // second piece between backticks is quoted.
        let pieces: Vec<(bool, &str)> = if fenced {
            vec![(true, line)]
        } else {
            line.split('`').enumerate().map(|(i, p)| (i % 2 == 1, p)).collect()
        };
        // A bare option belongs to the command quoted before it on its line
        // ("`run` without `--key`").
        let mut line_owner = section.clone();
        for (quoted, piece) in pieces {
            let owner = if quoted { owner_of(piece, subs, &line_owner) } else { Some(section.clone()) };
            if let Some(owner) = &owner
                && !piece.trim_start().starts_with('-')
                && quoted
            {
                line_owner.clone_from(owner);
            }
            if let Some(owner) = owner {
                sections.entry(owner).or_default().extend(flags_in(piece));
            }
        }
    }
    sections
}

/// Whose options a quoted command line shows: the subcommand it runs, the
/// current section's for a bare option (`--lock-timeout 0`), or nobody's
/// for another program.
fn owner_of(quoted: &str, subs: &[String], section: &str) -> Option<String> {
    let mut words = quoted.split_whitespace().peekable();
    if words.peek() == Some(&"cargo") {
        words.next();
    }
    if words.peek().is_some_and(|w| *w == "safecache" || w.ends_with("/safecache") || *w == "cargo-safecache") {
        words.next();
    }
    // Global options may come before the subcommand.
    let mut rest = words.skip_while(|w| w.starts_with('-')).peekable();
    match rest.peek() {
        Some(word) if subs.iter().any(|s| s == word) => Some((*word).to_owned()),
        None => Some(section.to_owned()),
        Some(_) if quoted.trim_start().starts_with('-') => Some(section.to_owned()),
        Some(_) => None,
    }
}

/// The first column of the "## Global options" table.
fn global_table(doc: &str) -> BTreeSet<String> {
    let section = doc.split("\n## ").find(|s| s.starts_with("Global options")).expect("a global options section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .flat_map(|l| flags_in(l.split(" |").next().unwrap_or_default()))
        .collect()
}

/// Every `--word` in `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut flags = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        let name_len = text[start + 2..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(text.len() - start - 2);
        let name = &text[start + 2..start + 2 + name_len];
        if !preceded && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            flags.insert(format!("--{}", name.trim_end_matches('-')));
        }
        i = start + 2 + name_len;
    }
    flags
}

/// The options a `-h` defines: the long flag that opens each option line
/// (`  -v, --verbose...` or `      --cache-dir <DIR>`; descriptions are
/// indented further).
fn defined_options(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter(|l| l.starts_with("  -") || l.starts_with("      --"))
        .filter_map(|l| flags_in(l.trim_start().split("  ").next().unwrap_or_default()).into_iter().next())
        .collect()
}

/// New caches, and directories adopted by `init`, carry a `CACHEDIR.TAG`,
/// so that backup tools skip them as they skip cargo's and uv's; it is not
/// an entry, and `clean` leaves it.
#[test]
fn caches_carry_a_cachedir_tag_that_tar_honours() {
    let sb = Sandbox::new();
    sb.fill("k", "content");
    let tag = sb.cache.join("CACHEDIR.TAG");
    let text = std::fs::read_to_string(&tag).expect("a new cache has CACHEDIR.TAG");
    assert!(text.starts_with("Signature: 8a477f597d28d172789f06886806bc55"), "{text}");
    let ls = sb.run(["ls"]);
    assert!(!ls.stdout.contains("CACHEDIR"), "{ls}");
    let archive = std::process::Command::new("tar")
        .args(["-cf", "-", "--exclude-caches-all", "-C"])
        .arg(sb.tmp.path())
        .arg("cache")
        .output()
        .expect("run tar");
    assert!(archive.status.success());
    let listed = std::process::Command::new("tar")
        .args(["-tf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut t| {
            use std::io::Write;
            t.stdin.take().expect("stdin").write_all(&archive.stdout)?;
            t.wait_with_output()
        })
        .expect("list the archive");
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(!names.contains("cache/k"), "tar --exclude-caches-all skips the cache: {names}");
    sb.run(["clean"]).assert_code(0);
    assert!(tag.is_file(), "clean keeps the tag");

    let adopted = sb.path("adopted");
    std::fs::create_dir(&adopted).expect("dir");
    std::fs::write(adopted.join("wheel.whl"), "w").expect("file");
    sb.run([std::ffi::OsStr::new("init"), adopted.as_os_str()]).assert_code(0);
    assert!(adopted.join("CACHEDIR.TAG").is_file(), "init adds the tag");
}

/// Hints name the command as the user invoked it: `safecache ...` for the
/// `safecache` binary, `cargo safecache ...` through cargo.
#[test]
fn hints_name_the_command_as_invoked() {
    let sb = Sandbox::new();
    let plain = safecache(&sb, ["path", "nope"]);
    plain.assert_error(1, "`safecache run --key nope -- BUILD`");
    assert!(!plain.stderr.contains("cargo safecache"), "{plain}");
    let through_cargo = sb.run(["safecache", "path", "nope"]);
    through_cargo.assert_error(1, "`cargo safecache run --key nope -- BUILD`");
    let direct = sb.run(["path", "nope"]);
    direct.assert_error(1, "`cargo-safecache run --key nope -- BUILD`");
    // The library's hints too: a directory that is not a cache.
    let dir = sb.path("not-a-cache");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("file"), "x").expect("write");
    let dir = dir.to_str().expect("utf-8");
    safecache(&sb, ["--cache-dir", dir, "ls"]).assert_error(2, "`safecache init ");
    sb.run(["--cache-dir", dir, "ls"]).assert_error(2, "`cargo-safecache init ");
    sb.run(["safecache", "--cache-dir", dir, "ls"]).assert_error(2, "`cargo safecache init ");
}
