//! Progress on a terminal: under a pseudo-terminal a long close draws a bar with its
//! percentage on stderr, and so does an export; piped, a close prints only its summary.

use crate::common::{Backend, Sandbox, import_monthly};

const ACCOUNTS: usize = 3_000;

/// Small chunks, so the bar moves; customer mail held for review, so the close ends with its
/// finance batch rather than rendering thousands of PDFs.
fn env() -> Vec<(String, String)> {
    vec![
        ("BILLRUN_CHUNK_SIZE".into(), "50".into()),
        ("BILLRUN_REVIEW_HOURS".into(), "24".into()),
    ]
}

/// What `line` draws when run on a pseudo-terminal (script(1) copies it to its stdout).
fn on_a_terminal(sb: &Sandbox, line: &str) -> String {
    let mut script = std::process::Command::new("script");
    script
        .args(["-qfec", line, "/dev/null"])
        .current_dir(sb.dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BILLRUN_")) {
        script.env_remove(k);
    }
    let out = script.envs(env()).output().expect("script(1) runs");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{screen}");
    screen
}

on_each_backend!(bar:
    a_close_on_a_terminal_shows_its_progress_and_piped_only_its_summary_sqlite,
    a_close_on_a_terminal_shows_its_progress_and_piped_only_its_summary_postgres
);

async fn bar(backend: Backend) {
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    import_monthly(&sb, "p", ACCOUNTS);
    let line = format!(
        "{} --config {} close --as-of 2026-02-15",
        env!("CARGO_BIN_EXE_billrun"),
        sb.config().display()
    );
    let screen = on_a_terminal(&sb, &line);
    assert!(
        screen.contains(&format!("/{ACCOUNTS} (")) && screen.contains("%)"),
        "no progress with a percentage on the terminal: {screen}"
    );
    assert!(screen.contains("invoice"), "{screen}");

    // An export of what it issued likewise.
    let export = format!(
        "{} --config {} export --from 2026-01-01 --to 2026-03-01 --out {}",
        env!("CARGO_BIN_EXE_billrun"),
        sb.config().display(),
        sb.dir.path().join("export").display()
    );
    let screen = on_a_terminal(&sb, &export);
    assert!(
        screen.contains("documents [") && screen.contains("%)"),
        "no export progress on the terminal: {screen}"
    );
    assert!(screen.contains("Exported "), "{screen}");

    // Piped: the summary on stdout, nothing on stderr. (The same close again has nothing due.)
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    import_monthly(&sb, "q", ACCOUNTS);
    let out = sb.run_with_env(&["close", "--as-of", "2026-02-15"], &env());
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(&format!("/{ACCOUNTS} (")), "{stdout}");
}

on_each_backend!(send_bar:
    a_send_on_a_terminal_shows_its_progress_sqlite,
    a_send_on_a_terminal_shows_its_progress_postgres
);

/// A close whose customer mail waits for review, released; then `send` on a terminal draws
/// its bar over the messages it sends.
async fn send_bar(backend: Backend) {
    const FEW: usize = 200;
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    import_monthly(&sb, "m", FEW);
    assert!(
        sb.run_with_env(&["close", "--as-of", "2026-02-15"], &env())
            .status
            .success()
    );
    sb.ok(&["release", "1"]);
    let send = format!(
        "{} --config {} send",
        env!("CARGO_BIN_EXE_billrun"),
        sb.config().display()
    );
    let screen = on_a_terminal(&sb, &send);
    assert!(
        screen.contains("messages [") && screen.contains("%)"),
        "no send progress on the terminal: {screen}"
    );
    assert!(screen.contains("Sent "), "{screen}");
    // Every customer message left (plus the finance batch, sent by the close).
    assert_eq!(sb.emails().len(), 2 * FEW + 1, "{screen}");
}
