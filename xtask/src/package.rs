//! `cargo xtask package`: assembles the npm package `tokenformer-web` in `target/npm/tokenformer-web/`
//! from `npm/` (entry points, declarations, package.json), the page's engine modules (`www/`), the
//! wasm build (`pkg/`) and the built-in model, keeping the repository's relative layout so the
//! `www/` modules' `new URL(…, import.meta.url)` references to `pkg/` hold; then `npm pack`s it.

use std::path::{Path, PathBuf};

/// (source folder under the repository, files) copied to the same folder in the package.
const FILES: [(&str, &[&str]); 4] = [
    ("npm", &["package.json", "index.js", "index.d.ts", "node.js", "node.d.ts", "inspector.d.ts", "README.md"]),
    ("www", &["client.js", "engine.js", "cache.js", "worker.js", "inspector.js", "inspector.css"]),
    ("pkg", &["tokenformer.js", "tokenformer.d.ts", "tokenformer_bg.wasm"]),
    ("models/tokenformer-moby", &["config.json", "tokenizer.json", "model.safetensors", "README.md"]),
];

/// Builds the package folder and its tarball; returns the tarball's path.
pub fn package(root: &Path, target: &Path) -> Result<PathBuf, String> {
    let out = target.join("npm");
    let dir = out.join("tokenformer-web");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    for (from, files) in FILES {
        // The npm folder's files go to the package root; the others keep their folder.
        let to = if from == "npm" { dir.clone() } else { dir.join(from) };
        std::fs::create_dir_all(&to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
        for file in files {
            let src = root.join(from).join(file);
            std::fs::copy(&src, to.join(file)).map_err(|e| format!("cannot copy {}: {e}", src.display()))?;
        }
    }
    crate::run_in(&dir, "npm", &["pack", "--pack-destination", "..", "--silent"])?;
    let manifest = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
    let version = crate::json_string(&manifest, "version").ok_or("npm/package.json has no version")?;
    let tarball = out.join(format!("tokenformer-web-{version}.tgz"));
    if !tarball.exists() {
        return Err(format!("npm pack did not write {}", tarball.display()));
    }
    eprintln!("packed {}", tarball.display());
    Ok(tarball)
}
