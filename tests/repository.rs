//! The repository stands alone: no tracked file refers to a path outside it (a user's clone has
//! nothing beside it), so every test, tool and doc works from a fresh `git clone`.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Tracked files, relative to the root.
fn tracked_files() -> Vec<PathBuf> {
    let out = Command::new("git").args(["ls-files", "-z"]).current_dir(ROOT).output().expect("git runs");
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).as_ref()))
        .collect()
}

/// The runs of path characters in `text` that step up a folder (`..` as a component).
fn upward_paths(text: &str) -> Vec<&str> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    text.split(|c: char| !is_path_char(c)).filter(|token| token.split('/').any(|component| component == "..")).collect()
}

/// `reference` resolved from the folder `base` (relative to the root), or None when it climbs
/// above the root. A leading `/` is taken as relative too (`concat!(env!("CARGO_MANIFEST_DIR"), "/../x")`).
fn resolve(base: &Path, reference: &str) -> Option<PathBuf> {
    let mut parts: Vec<_> = base.components().map(|c| c.as_os_str().to_owned()).collect();
    for component in Path::new(reference.trim_start_matches('/')).components() {
        match component {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(name) => parts.push(name.to_owned()),
            _ => {}
        }
    }
    Some(parts.iter().collect())
}

/// A path the checkout has, or one git ignores (a build output such as `pkg/`).
fn in_repository(path: &Path) -> bool {
    Path::new(ROOT).join(path).exists()
        || Command::new("git")
            .args(["check-ignore", "-q", "--no-index"])
            .arg(path)
            .current_dir(ROOT)
            .status()
            .is_ok_and(|s| s.success())
}

#[test]
fn no_tracked_file_refers_to_a_path_outside_the_repository() {
    let mut outside = Vec::new();
    let files = tracked_files();
    assert!(files.len() > 50, "git ls-files listed {} files", files.len());
    for file in &files {
        // Malformed inputs may hold path traversals on purpose, a tokenizer's vocabulary has
        // tokens such as "../../", and this file's own examples leave the repository on purpose.
        let data = file.starts_with("tests/malformed") || file.starts_with("fuzz/corpus");
        if data || file.ends_with("tokenizer.json") || file == Path::new(file!()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(Path::new(ROOT).join(file)) else { continue };
        let base = file.parent().unwrap_or(Path::new(""));
        for (line_no, line) in text.lines().enumerate() {
            for reference in upward_paths(line) {
                if !resolve(base, reference).is_some_and(|p| in_repository(&p)) {
                    outside.push(format!("{}:{}: {reference}", file.display(), line_no + 1));
                }
            }
        }
    }
    assert!(outside.is_empty(), "references to paths outside the repository:\n{}", outside.join("\n"));
}

#[test]
fn the_check_sees_references_that_leave_the_repository() {
    let base = Path::new("tests");
    for escaping in ["../../sibling/tokenizer.json", "/../../x", "../elsewhere/SPEC.md"] {
        let line = format!("read('{escaping}')");
        assert_eq!(upward_paths(&line), [escaping]);
        assert!(!resolve(base, escaping).is_some_and(|p| in_repository(&p)), "{escaping}");
    }
    assert!(resolve(Path::new("src/gpu"), "../../shaders/matvec.wgsl").is_some_and(|p| in_repository(&p)));
    assert!(
        resolve(Path::new("www"), "../pkg/tokenformer.js").is_some_and(|p| in_repository(&p)),
        "pkg/ is a build output"
    );
    assert!(upward_paths("see .../ and a..b").is_empty());
}
