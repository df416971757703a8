//! Project chores. `cargo xtask serve` builds the wasm and serves the demo page; `cargo xtask test`
//! installs what the tests need on a fresh machine and runs them all; `cargo xtask build-web`
//! builds the wasm package into `pkg/`.

mod package;
mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Must equal the `wasm-bindgen = "=..."` pin in Cargo.toml: the CLI and the crate must match.
const WASM_BINDGEN_VERSION: &str = "0.2.130";
/// Debian packages: lavapipe (Vulkan on the CPU) for native wgpu, Chromium for the browser tests.
const DEBIAN_PACKAGES: [&str; 2] = ["mesa-vulkan-drivers", "chromium"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("setup") => setup(),
        Some("build-web") => setup_wasm().and_then(|()| build_web()),
        Some("package") => {
            setup_wasm().and_then(|()| build_web()).and_then(|()| package::package(&root(), &target()?).map(drop))
        }
        // A folder (e.g. a model in the authors' layout) is served as it is, like a hub would.
        Some("serve") if args.len() > 1 => serve::serve(Path::new(&args[1])),
        Some("serve") => setup_wasm().and_then(|()| build_web()).and_then(|()| serve::serve(&root())),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n  serve      build the wasm and serve the demo on 127.0.0.1:$PORT (default 8080)\n  serve DIR  serve a folder (e.g. a model) with Range, ETag and CORS, like a hub\n  setup      install toolchain targets, wasm-bindgen, wasm-opt, Debian and npm packages\n  build-web  build the wasm package into pkg/ (wasm-bindgen, then wasm-opt)\n  package    build the npm package tokenformer-web into target/npm/ (and its .tgz)\n  test       setup, lint, and run every test (native, wasm in Chromium)"
            );
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

/// The project's root. `cargo xtask` (`cargo run`) names the tree it runs in through
/// CARGO_MANIFEST_DIR; the value compiled in can name another checkout whose build shares this
/// target directory (cargo's fingerprints ignore where a workspace lies).
fn root() -> PathBuf {
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    dir.join("..")
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    run_in(&root(), program, args)
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What building the wasm package needs: the target, the matching wasm-bindgen CLI, and wasm-opt.
fn setup_wasm() -> Result<(), String> {
    run("rustup", &["target", "add", "wasm32-unknown-unknown"])?;
    let installed = output("wasm-bindgen", &["--version"]).unwrap_or_default();
    if !installed.contains(WASM_BINDGEN_VERSION) {
        // Not --locked: a locked dependency of this version is missing from the registry (PLATFORM.md).
        run("cargo", &["install", "wasm-bindgen-cli", "--version", WASM_BINDGEN_VERSION])?;
    }
    // Binaryen from the npm registry, at the version tools/wasm-opt pins (package.json and its lockfile):
    // `npm ci` when it is missing or another version, so a build does not reinstall it every time.
    let dir = root().join(WASM_OPT_DIR);
    let read = |path: &str| std::fs::read_to_string(dir.join(path)).unwrap_or_default();
    let (manifest, installed) = (read("package.json"), read("node_modules/binaryen/package.json"));
    let pinned = json_string(&manifest, "binaryen").ok_or("tools/wasm-opt/package.json pins no binaryen")?;
    if json_string(&installed, "version") != Some(pinned) {
        run_in(&dir, "npm", &["ci", "--no-audit", "--no-fund"])?;
    }
    Ok(())
}

/// The string value of the first `"key": "value"` in a JSON text (the xtask has no JSON parser).
fn json_string<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    json.split(&format!("\"{key}\":")).nth(1)?.trim_start().strip_prefix('"')?.split('"').next()
}

/// Everything the tests need that a fresh machine lacks. Idempotent and quick when already done.
fn setup() -> Result<(), String> {
    setup_wasm()?;
    run("rustup", &["component", "add", "rustfmt", "clippy"])?;

    let missing: Vec<&str> = DEBIAN_PACKAGES
        .into_iter()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p]).is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        run("apt-get", &["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        run("apt-get", &args)?;
    }

    run_in(&root().join("tests/browser"), "npm", &["ci", "--no-audit", "--no-fund"])?;
    // Vite and TypeScript, which the npm package tests build consumers with.
    run_in(&root().join("tests/npm"), "npm", &["ci", "--no-audit", "--no-fund"])
}

/// Cargo arguments that select the browser build: the library for wasm32 with the WebGPU backend.
const WASM_LIB: [&str; 6] =
    ["--lib", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "gpu"];

/// Binaryen's wasm-opt (the npm package `binaryen`, run with Node) is installed in this folder.
const WASM_OPT_DIR: &str = "tools/wasm-opt";
/// wasm-opt's passes and the features the module may use: Rust's wasm32 defaults plus SIMD
/// (`.cargo/config.toml`), so the optimiser keeps to what the compiler emitted.
const WASM_OPT_ARGS: [&str; 10] = [
    "-O2",
    "--enable-simd",
    "--enable-bulk-memory",
    "--enable-bulk-memory-opt",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
    "--enable-call-indirect-overlong",
];

fn build_web() -> Result<(), String> {
    run("cargo", &[&["build", "--release"][..], &WASM_LIB].concat())?;
    let wasm = target()?.join("wasm32-unknown-unknown/release/tokenformer.wasm");
    run("wasm-bindgen", &["--target", "web", "--out-dir", "pkg", &wasm.to_string_lossy()])?;
    // Smaller and no slower: wasm-opt rewrites the bound module in place (it drops the names section).
    let wasm_opt = format!("{WASM_OPT_DIR}/node_modules/binaryen/bin/wasm-opt");
    let out = "pkg/tokenformer_bg.wasm";
    run("node", &[&[wasm_opt.as_str()][..], &WASM_OPT_ARGS, &[out, "-o", out]].concat())
}

/// Where cargo builds, as `cargo metadata` reports it: CARGO_TARGET_DIR or a cargo config may move it.
fn target() -> Result<PathBuf, String> {
    let manifest = root().join("Cargo.toml");
    let args = ["metadata", "--format-version", "1", "--no-deps", "--manifest-path", &manifest.to_string_lossy()];
    let metadata = output("cargo", &args).ok_or("`cargo metadata` failed")?;
    json_string(&metadata, "target_directory")
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata names no target directory".into())
}

fn test() -> Result<(), String> {
    setup()?;
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    // The browser build (wasm API, webgpu backend) is linted too: it is cfg'd out natively.
    run("cargo", &[&["clippy"][..], &WASM_LIB, &["--", "-D", "warnings"]].concat())?;
    run("cargo", &["test", "--workspace"])?;
    build_web()?;
    package::package(&root(), &target()?)?;
    run("node", &["--test", "tests/browser/", "tests/npm/"])
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn json_strings_are_read_with_or_without_a_space_after_the_colon() {
        // package.json writes `"key": "value"`, cargo metadata `"key":"value"`.
        let text = r#"{"version": "1.2.3", "target_directory":"/tmp/t", "n": 4}"#;
        assert_eq!(json_string(text, "version"), Some("1.2.3"));
        assert_eq!(json_string(text, "target_directory"), Some("/tmp/t"));
        assert_eq!(json_string(text, "n"), None);
        assert_eq!(json_string(text, "missing"), None);
    }
}
