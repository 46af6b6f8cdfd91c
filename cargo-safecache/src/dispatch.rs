//! This defines [`main_impl`]: parse the command line, set up output and
//! tracing, resolve the cache directory and the wait, run the subcommand,
//! and turn its outcome into an exit code.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::cli::{self, App, Command, RemoteCommand};
use crate::commands;
use crate::ctx::Ctx;
use crate::exit;
use crate::settings::{Output, Settings};
use crate::ui::Ui;

/// Runs the CLI and returns the process's exit code.
pub(crate) fn main_impl(binary: cli::Binary) -> u8 {
    let args: Vec<_> = std::env::args_os().collect();
    let invoked = cli::invoked_as(binary, &args);
    // The variables are those of the bare command: the help's examples,
    // reference tables and hidden copies of the global options that
    // `cli::command` adds name no other, and cost most of a start-up.
    crate::reference::unset_empty(&<App as clap::CommandFactory>::command());
    crate::hint::set_invoked_as(invoked);
    let app = match cli::parse(invoked, args) {
        Ok(app) => app,
        Err(e) => return clap_error(&e, invoked),
    };
    let output = Output::resolve(&app.global);
    let ui = Arc::new(Ui::new(output.json, output.quiet, output.color));
    init_tracing(output.verbose, output.color);
    match dispatch(app, &ui, invoked) {
        Ok(code) => code,
        Err(e) => {
            let code = exit::code_of(&e);
            ui.done_waiting();
            ui.error(&exit::one_line(&e), code);
            code
        }
    }
}

/// Prints a clap error: help and version as clap renders them, usage errors
/// as one line (exit 2).
fn clap_error(e: &clap::Error, invoked: &str) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            e.exit_code().clamp(0, 255) as u8
        }
        _ => {
            // Fold clap's report into one line: everything before the usage.
            let rendered = e.render().to_string();
            let mut msg = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(rest) = msg.strip_prefix("error: ") {
                msg = rest.to_owned();
            }
            msg.push_str(&format!("; run `{invoked} help` for usage"));
            crate::ui::write_stderr(&format!("error: {msg}"));
            exit::USAGE
        }
    }
}

fn init_tracing(verbose: u8, color: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("SAFECACHE_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(match verbose {
            0 => "off",
            1 => "safecache=info,cargo_safecache=info",
            _ => "debug",
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false)
        .try_init();
}

fn dispatch(app: App, ui: &Arc<Ui>, invoked: &'static str) -> Result<u8> {
    // These describe the program, not a cache: they must work without one
    // (and without HOME).
    match app.command {
        Command::Completions { shell: Some(shell) } => return print_stdout(&cli::completions(invoked, shell)),
        Command::Completions { shell: None } => return print_stdout(cli::shells().as_bytes()),
        Command::Man { dir: None } => {
            return print_stdout(&cli::man_page(invoked).context("cannot render the man page")?);
        }
        Command::Man { dir: Some(dir) } => {
            let pages = cli::man_pages(invoked, &dir)
                .with_context(|| format!("cannot write the man pages into `{}`", dir.display()))?;
            for page in pages {
                ui.out_path(&page, false).context("cannot write to stdout")?;
            }
            return Ok(exit::OK);
        }
        _ => {}
    }
    let settings = Settings::resolve(&app.global)?;
    if let Command::Dir = app.command {
        // Only the path: nothing is created or opened.
        ui.report(crate::report::Dir::new(&settings.cache_dir))?;
        return Ok(exit::OK);
    }
    tracing::debug!(?settings, "resolved");
    let ctx = Ctx { ui: Arc::clone(ui), settings, opened: std::sync::OnceLock::new() };
    // The automatic gc follows the commands that use entries, once their
    // real work is done, whatever its outcome.
    let auto_gc = matches!(app.command, Command::Run(_) | Command::Use(_) | Command::Path { .. });
    let result = match app.command {
        Command::Run(args) => commands::run::run(&ctx, args),
        Command::Use(args) => commands::r#use::run(&ctx, args),
        Command::Path { key, key_files } => {
            crate::key_files::derive(key, &key_files).and_then(|key| commands::path(&ctx, &key))
        }
        Command::Ls { prefix, remote: false } => commands::ls(&ctx, prefix.as_deref()),
        Command::Ls { prefix, remote: true } => commands::remote::ls(&ctx, prefix.as_deref()),
        Command::Remote(RemoteCommand::Keygen { name }) => commands::remote::keygen(&ctx, &name),
        Command::Remote(RemoteCommand::Check) => commands::remote::check(&ctx),
        Command::Status => commands::status(&ctx),
        Command::Stats { reset } => commands::stats(&ctx, reset),
        Command::Rm { keys, prefix, wait } => commands::rm(&ctx, &keys, prefix.as_deref(), wait),
        Command::Clean { wait } => commands::clean(&ctx, wait),
        Command::Gc(args) => commands::gc(&ctx, &args),
        Command::Verify { keys, repair } => commands::verify::verify(&ctx, &keys, repair),
        Command::Init { dir } => commands::init(&ctx, dir),
        Command::Config { name, value, unset } => {
            commands::config(&ctx, name.as_deref(), value.as_deref(), unset.as_deref())
        }
        Command::Completions { .. } | Command::Man { .. } | Command::Dir => Ok(exit::OK),
    };
    crate::stats::command_done(&ctx);
    if auto_gc {
        commands::auto_gc(&ctx);
    }
    result
}

/// Writes generated text to stdout; failing to is an error, since the text
/// is the command's whole result.
fn print_stdout(bytes: &[u8]) -> Result<u8> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) wanted no more.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        written => written.context("cannot write to stdout").map(|()| exit::OK),
    }
}
