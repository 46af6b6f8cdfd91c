//! Tidy checks: project rules enforced as tests, so `cargo test` (and so
//! `cargo xtask ci`) fails when one is broken.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Every `.rs` file of the workspace's own crates, skipping build output.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if name == "target" || name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for krate in ["core", "cargo-safecache", "wasm-tests", "xtask"] {
        walk(&root().join(krate), &mut out);
    }
    out
}

/// Tests that cannot fail, or are skipped, are defects; so is unfinished
/// code. (The patterns are split so this file does not match itself.)
#[test]
fn no_skipped_tests_or_unfinished_code() {
    let banned =
        [concat!("#[", "ignore"), concat!("should", "_panic"), concat!("todo", "!("), concat!("unimplemented", "!(")];
    let mut hits = Vec::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(b) = banned.iter().find(|b| line.contains(*b)) {
                hits.push(format!("{}:{}: {b}", file.display(), n + 1));
            }
        }
    }
    assert!(hits.is_empty(), "remove these:\n{}", hits.join("\n"));
}

/// Each core module says what it defines and which invariant it keeps.
#[test]
fn core_modules_open_with_a_module_doc() {
    let missing: Vec<_> = rust_files()
        .into_iter()
        .filter(|f| f.starts_with(root().join("core/src")))
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "add a `//!` line saying what each defines: {missing:?}");
}

/// Versions live in `[workspace.dependencies]` and lints in
/// `[workspace.lints]`; each crate has one integration-test binary at most.
#[test]
fn crates_inherit_versions_and_lints() {
    for krate in ["core", "cargo-safecache", "wasm-tests", "xtask"] {
        let manifest = root().join(krate).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(text.contains("[lints]\nworkspace = true"), "{}: add `[lints] workspace = true`", manifest.display());
        let mut section = String::new();
        for line in text.lines() {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            let is_dep_section = section.contains("dependencies");
            if is_dep_section && line.contains('=') && !line.trim_start().starts_with('#') {
                assert!(
                    line.contains("workspace = true") || line.contains("path ="),
                    "{}: `{line}` must take its version from [workspace.dependencies]",
                    manifest.display()
                );
            }
        }
        let tests_dir = root().join(krate).join("tests");
        if tests_dir.is_dir() {
            let top_level_files = std::fs::read_dir(&tests_dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "rs"))
                .count();
            let declared = text.matches("[[test]]").count();
            // A `[[test]]` usually names one of the top-level files.
            assert!(top_level_files.max(declared) <= 1, "{krate}: keep one integration-test binary");
        }
    }
}
