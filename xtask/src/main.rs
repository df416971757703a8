//! Project chores: `cargo xtask test` installs what the tests need on a fresh machine and runs them all.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("setup") => setup(),
        _ => {
            eprintln!("usage: cargo xtask <test|setup>\n  setup  install toolchain targets and system packages\n  test   setup, then lint and run every test");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program).args(args).status().map_err(|e| format!("cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

/// Everything the tests need that a fresh machine lacks. Idempotent and quick when already done.
fn setup() -> Result<(), String> {
    run("rustup", &["target", "add", "wasm32-unknown-unknown"])?;
    run("rustup", &["component", "add", "rustfmt", "clippy"])
}

fn test() -> Result<(), String> {
    setup()?;
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    // The core must build for the browser: no threads, no native-only dependencies.
    run("cargo", &["build", "--lib", "--target", "wasm32-unknown-unknown", "--no-default-features"])?;
    run("cargo", &["test", "--workspace"])
}
