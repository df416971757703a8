//! The documentation holds together: every relative link in README.md and docs/*.md names a file or
//! folder of the repository, and every `#anchor` a heading of the page it points at (GitHub's
//! anchors); and the README stays the product's page: dated measurements live in its At-a-glance
//! tables and in docs/performance.md, nowhere else in it.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// README.md and every docs/*.md, relative to the root.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let docs = std::fs::read_dir(Path::new(ROOT).join("docs")).expect("docs/ exists");
    let mut found: Vec<PathBuf> = docs
        .map(|entry| PathBuf::from("docs").join(entry.expect("a docs/ entry").file_name()))
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    found.sort();
    pages.extend(found);
    pages
}

fn read(page: &Path) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(page)).unwrap_or_else(|e| panic!("{}: {e}", page.display()))
}

/// The page's lines outside fenced code blocks, with inline code spans removed (a link written in
/// code is not a link, and a heading's code keeps only its text).
fn prose(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push(line.to_string());
        }
    }
    lines
}

/// Text without code spans' backticks but with their content (for headings), or without their
/// content (for links).
fn without_code(line: &str, keep_content: bool) -> String {
    line.split('`').enumerate().filter(|(i, _)| keep_content || i % 2 == 0).map(|(_, part)| part).collect()
}

/// The targets of `[text](target)` and `![alt](target)` links on the page.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let line = without_code(&line, false);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find([')', ' ']).unwrap_or(after.len());
            targets.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    targets
}

/// GitHub's anchor for a heading's text: markup dropped (code marks, emphasis, links' targets),
/// lower case, every character but letters, digits, `_`, `-` and spaces removed, spaces made `-`.
fn slug(heading: &str) -> String {
    let mut text = without_code(heading, true).replace('*', "");
    // [text](target) keeps its text.
    while let (Some(open), Some(mid)) = (text.find('['), text.find("](")) {
        let Some(close) = text[mid..].find(')') else { break };
        text = format!("{}{}{}", &text[..open], &text[open + 1..mid], &text[mid + close + 1..]);
    }
    text.to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a page's headings give, repeats numbered as GitHub numbers them (`x`, `x-1`, …).
fn anchors(text: &str) -> HashSet<String> {
    let mut anchors = HashSet::new();
    for line in prose(text) {
        let level = line.chars().take_while(|&c| c == '#').count();
        if level == 0 || level > 6 || !line[level..].starts_with(' ') {
            continue;
        }
        let base = slug(line[level..].trim());
        let mut anchor = base.clone();
        let mut n = 0;
        while !anchors.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    anchors
}

/// `target` resolved from the folder of `page` (both relative to the root); None when it leaves
/// the repository.
fn resolve(page: &Path, target: &str) -> Option<PathBuf> {
    let mut parts: Vec<_> = page.parent().unwrap_or(Path::new("")).components().collect();
    for component in Path::new(target).components() {
        match component {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(_) => parts.push(component),
            _ => {}
        }
    }
    Some(parts.iter().collect())
}

/// What is wrong with the links of `page` (relative to the root), whose text is `text`: one line each.
fn broken_links(page: &Path, text: &str) -> Vec<String> {
    let mut broken = Vec::new();
    for target in links(text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
        let (path, page_text) = if file.is_empty() {
            (page.to_path_buf(), Some(text.to_string()))
        } else {
            match resolve(page, file) {
                Some(path) if Path::new(ROOT).join(&path).exists() => {
                    let markdown = path.extension().is_some_and(|e| e == "md");
                    (path.clone(), markdown.then(|| read(&path)))
                }
                _ => {
                    broken.push(format!("{}: {target}: no such file in the repository", page.display()));
                    continue;
                }
            }
        };
        if let Some(anchor) = anchor {
            match page_text {
                Some(linked) if anchors(&linked).contains(anchor) => {}
                Some(_) => {
                    broken.push(format!("{}: {target}: {} has no heading #{anchor}", page.display(), path.display()))
                }
                None => {
                    broken.push(format!("{}: {target}: an anchor into a file that is not markdown", page.display()))
                }
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_docs_resolves() {
    let pages = pages();
    assert!(pages.len() >= 7, "README.md and the docs: {pages:?}");
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(page);
        checked += links(&text).len();
        broken.extend(broken_links(page, &text));
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_missing_file_or_heading_is_reported() {
    let page = Path::new("docs/example.md");
    // A link that leaves the repository, built here so that no tracked file names one
    // (tests/repository.rs).
    let outside = "UP/UP/outside.md".replace("UP", "..");
    let text = "# Example page\n\n## A `code` heading: with *marks*\n\n\
        [ok](#a-code-heading-with-marks) [ok](../README.md#quick-start) [ok](testing.md) ![ok](../www/screenshot.png)\n\
        [ok](../tests/browser/) [web](https://example.com/#x) `[code](nowhere.md)`\n\
        [bad](#no-such-heading) [bad](missing.md) [bad](testing.md#nowhere) [bad](OUTSIDE)\n\
        ```\n[in a fence](nowhere-either.md)\n```\n"
        .replace("OUTSIDE", &outside);
    let broken = broken_links(page, &text);
    assert_eq!(broken.len(), 4, "{broken:#?}");
    for wrong in ["#no-such-heading", "missing.md", "testing.md#nowhere", outside.as_str()] {
        assert!(broken.iter().any(|b| b.contains(wrong)), "{wrong} not reported: {broken:#?}");
    }
}

#[test]
fn anchors_follow_githubs_rules() {
    let text =
        "# What is computed\n## `cargo xtask test`: the suites\n## 2026-12-04: the first real GPU (NVIDIA H200)\n\
        ## The CPU adapter's products\n## Repeat\n## Repeat\n#not a heading\n";
    let got = anchors(text);
    for want in [
        "what-is-computed",
        "cargo-xtask-test-the-suites",
        "2026-12-04-the-first-real-gpu-nvidia-h200",
        "the-cpu-adapters-products",
        "repeat",
        "repeat-1",
    ] {
        assert!(got.contains(want), "{want} missing from {got:?}");
    }
    assert_eq!(got.len(), 6, "{got:?}");
}

/// Whether a line holds a date written as YYYY-MM-DD.
fn dated(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.windows(10).any(|w| {
        let digits = |r: std::ops::Range<usize>| w[r].iter().all(u8::is_ascii_digit);
        digits(0..4) && w[4] == b'-' && digits(5..7) && w[7] == b'-' && digits(8..10)
    })
}

/// The README's lines with a date that are not rows of a table in its "At a glance" section.
fn dated_narrative(readme: &str) -> Vec<String> {
    let mut section = String::new();
    let mut found = Vec::new();
    for line in prose(readme) {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.trim().to_string();
        }
        let table_row = line.trim_start().starts_with('|');
        if dated(&line) && !(section == "At a glance" && table_row) {
            found.push(line);
        }
    }
    found
}

#[test]
fn the_readme_dates_measurements_only_in_its_at_a_glance_tables() {
    let found = dated_narrative(&read(Path::new("README.md")));
    assert!(found.is_empty(), "dated lines outside the At-a-glance tables:\n{}", found.join("\n"));
    let planted =
        "## At a glance\n| 150M | 2026-12-05 |\nOn 2026-12-05 it ran.\n## Documentation\n| x | 2026-12-05 |\n";
    assert_eq!(dated_narrative(planted), ["On 2026-12-05 it ran.", "| x | 2026-12-05 |"]);
}
