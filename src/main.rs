use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc for Rust and, through its `override` feature, for SQLite's allocations too: the
/// journal writer allocates on every row, and glibc's allocator showed up in its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A failure is one line on stderr (the error and its causes, `: `-separated) and a non-zero
/// exit: an operator reads what went wrong, never a backtrace or a page of usage.
fn main() -> ExitCode {
    quiet_on_closed_stdout();
    // Test builds only (see Cargo.toml): crash tests stop the binary at a named point through
    // `FAILPOINTS`; a release build neither reads the variable nor has the points.
    let _failpoints = fail::has_failpoints().then(fail::FailScenario::setup);
    let cli = match wharf::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(), // --help, --version
        Err(error) => {
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            eprintln!(
                "wharf: {} (wharf --help shows the commands and their examples)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    wharf::telemetry::init(cli.log_format());
    match wharf::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wharf: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, each cause once: many errors already quote
/// their source in their own message.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

/// `wharf config check | head` closes stdout early; Rust ignores SIGPIPE, so `println!` would
/// panic with a backtrace. Exit as a SIGPIPE'd program does instead (128 + 13), silently; any
/// other panic is a bug and keeps the default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
