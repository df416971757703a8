// Where cargo puts what it builds, asked of cargo itself (`cargo metadata`): the target directory
// follows CARGO_TARGET_DIR, `build.target-dir` in a cargo config and the workspace's default alike,
// so every test and measurement script finds the binaries cargo built, wherever that is.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MANIFEST = fileURLToPath(new URL('../../Cargo.toml', import.meta.url));
let target;

/** The workspace's target directory, as cargo reports it (asked once per process). */
export function targetDir() {
  target ??= JSON.parse(execFileSync(process.env.CARGO ?? 'cargo', ['metadata', '--format-version', '1', '--no-deps', '--manifest-path', MANIFEST],
    { encoding: 'utf8', maxBuffer: 1 << 26 })).target_directory;
  return target;
}

/** The path of binary `name` (e.g. 'tokenformer', 'xtask') of a `profile` ('debug' or 'release') build. */
export function binary(name, profile = 'debug') {
  return join(targetDir(), profile, name);
}
