//! The `billrun` binary, a thin shell over `billrun::cli`: it owns the process — the
//! allocator's settings, parsing the arguments (clap exits 2 on unusable ones), logging to
//! stderr, the runtime — and turns `cli::run`'s outcome into the exit code (`cli::Exit`;
//! every error is 1, printed as one redacted line).

use billrun::cli::Exit;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = billrun::cli::Cli::parse();
    // The daemon reports what it does; one-shot commands keep stderr for errors.
    let default_level = match cli.command {
        billrun::cli::Command::Run => "info,tokio_cron_scheduler=warn,sqlx::query=error",
        // sqlx warns of every statement over a second; a big close has some by design.
        _ => "warn,sqlx::query=error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BILLRUN_LOG")
        .unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(billrun::RedactingStderr)
        // Colour only for a person at a terminal, not in files, journals or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("BILLRUN_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::Error.into();
        }
    };
    let outcome = runtime.block_on(billrun::cli::run(cli));
    // The database pool's background tasks may still log (a dropped connection's check on
    // release): end them before the verdict, so that an error is the last line printed.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {}", billrun::redact(&format!("{e:#}")));
            Exit::Error.into()
        }
    }
}

/// glibc gives each thread that allocates its own arena, up to eight per core, and memory
/// freed in one arena stays resident there. A period close allocates on the runtime's
/// threads and on one thread per SQLite connection: capping the arenas at two took a
/// million-subscription close on SQLite from 55–65 MiB to about 51 MiB, for about a second
/// of its 26 (BENCHMARKS.md). A fixed mmap threshold keeps a chunk's large buffers (its
/// JSON rows, a few MiB) out of the arenas: glibc otherwise raises the threshold to the
/// size of the last such buffer freed, and later ones stay behind in the heap — the peak
/// then drifted up by a few MiB over a long close. Called first, before any thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other
    // thread is started, so nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
