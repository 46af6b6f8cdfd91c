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
    for krate in ["core", "cargo-safecache", "remote", "wasm-tests", "xtask"] {
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
    for krate in ["core", "cargo-safecache", "remote", "wasm-tests", "xtask"] {
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

/// The modules of a crate's `src/` and the crate-local modules each one
/// names (`crate::x`), leaving out `#[cfg(test)]` blocks at the end of a
/// file. A file `a/b.rs` belongs to module `a`.
fn module_graph(src: &Path) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut graph = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for file in rust_files().into_iter().filter(|f| f.starts_with(src)) {
        let rel = file.strip_prefix(src).unwrap();
        let module = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        if matches!(module.as_str(), "main" | "lib" | "bin") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        let deps = graph.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let names: Vec<&str> = if let Some(list) = rest.strip_prefix('{') {
                list.split('}').next().unwrap_or_default().split(',').collect()
            } else {
                vec![rest]
            };
            for name in names {
                let name: String = name.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    let modules: std::collections::BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// The first import cycle found, as `a -> b -> a`.
fn find_cycle(graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>) -> Option<String> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node);
            return Some(cycle.join(" -> "));
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// Modules form a tree of layers, not a web: a module never reaches back,
/// through any chain of imports, to one that imports it.
#[test]
fn no_import_cycles() {
    for krate in ["core", "cargo-safecache", "remote"] {
        let graph = module_graph(&root().join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: found no modules");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: import cycle {cycle}; move what both need into a module below them");
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut graph = std::collections::BTreeMap::new();
    graph.insert("a".to_owned(), ["b".to_owned()].into());
    graph.insert("b".to_owned(), ["c".to_owned()].into());
    graph.insert("c".to_owned(), ["a".to_owned()].into());
    assert_eq!(find_cycle(&graph).as_deref(), Some("a -> b -> c -> a"));
    graph.insert("c".to_owned(), std::collections::BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
}

/// Every `Type::item` the docs name in backticks, and every source file they
/// name, still exists: a documented public item that is gone fails here.
/// The inline code spans of markdown `text`, as CommonMark reads them:
/// outside fenced blocks, a run of N backquotes opens a span that the next
/// run of exactly N closes, within one paragraph. A run that nothing closes
/// is a literal backquote and pairs with nothing, so a stray one cannot
/// shift every later span by one (splitting the whole file on backquotes did,
/// turning the text between spans into "spans" for the rest of the file).
fn code_spans(text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut fenced = false;
    let mut paragraph_start = 0;
    let mut paragraphs = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            if !fenced {
                paragraphs.push(&text[paragraph_start..offset]);
            }
            fenced = !fenced;
            paragraph_start = offset + line.len();
        } else if !fenced && line.trim().is_empty() {
            paragraphs.push(&text[paragraph_start..offset]);
            paragraph_start = offset + line.len();
        }
        offset += line.len();
    }
    if !fenced {
        paragraphs.push(&text[paragraph_start..]);
    }
    for paragraph in paragraphs {
        let bytes = paragraph.as_bytes();
        let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'`' {
                i += 1;
                continue;
            }
            let n = run_at(i);
            let start = i + n;
            let mut j = start;
            let mut close = None;
            while j < bytes.len() {
                if bytes[j] == b'`' {
                    let m = run_at(j);
                    if m == n {
                        close = Some(j);
                        break;
                    }
                    j += m;
                } else {
                    j += 1;
                }
            }
            match close {
                Some(end) => {
                    spans.push(paragraph[start..end].trim());
                    i = end + n;
                }
                None => i = start,
            }
        }
    }
    spans
}

#[test]
fn code_spans_pair_like_markdown() {
    let text = "a `x` b ``y ` z`` c\n\nstray ` here\n\n`w`\n```sh\n`not` a span\n```\n`v`";
    assert_eq!(code_spans(text), ["x", "y ` z", "w", "v"]);
}

#[test]
fn documented_items_exist() {
    // (`code_spans` is what keeps one stray backquote from switching the
    // check off for the rest of a file.)
    let mut sources = String::new();
    for file in rust_files() {
        sources.push_str(&std::fs::read_to_string(&file).unwrap());
    }
    // Types the docs may name that live outside this workspace.
    let external = ["File", "Dir", "Duration", "Instant", "SystemTime", "OpenOptions", "Command", "OnceMap", "PutMode"];
    let mut missing = Vec::new();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs")).unwrap().map(|e| e.unwrap().path()).collect();
    docs.push(root().join("README.md"));
    for doc in docs.iter().filter(|d| d.extension().is_some_and(|x| x == "md")) {
        let text = std::fs::read_to_string(doc).unwrap();
        for quoted in code_spans(&text) {
            let is_path = quoted.ends_with(".rs") && !quoted.contains(' ') && quoted.contains('/');
            // Code maps name files relative to their crate or its `src/`.
            let bases = [
                "",
                "core",
                "core/src",
                "cargo-safecache",
                "cargo-safecache/src",
                "remote",
                "remote/src",
                "wasm-tests",
                "xtask",
            ];
            if is_path && !bases.iter().any(|b| root().join(b).join(quoted).exists()) {
                missing.push(format!("{}: file `{quoted}`", doc.display()));
            }
            let Some((ty, item)) = quoted.split_once("::") else { continue };
            let simple = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !simple(ty) || !simple(item) || !ty.starts_with(char::is_uppercase) || external.contains(&ty) {
                continue;
            }
            let type_defined = ["struct", "enum", "trait", "type"]
                .iter()
                .any(|k| [" ", "<", "(", ";", "\n"].iter().any(|end| sources.contains(&format!("{k} {ty}{end}"))));
            let item_defined = sources.contains(&format!("fn {item}("))
                || sources.contains(&format!("pub {item}:"))
                || sources.contains(&format!("fn {item}<"))
                || sources.contains(&format!("const {item}:"))
                || [" {", "(", ",", " =", "\n"].iter().any(|end| sources.contains(&format!("    {item}{end}")));
            if !type_defined || !item_defined {
                missing.push(format!("{}: `{quoted}`", doc.display()));
            }
        }
    }
    assert!(missing.is_empty(), "the docs name items that do not exist:\n{}", missing.join("\n"));
}

/// The rows of the Markdown table under the header line `header`, each as
/// its cells.
fn table_after(doc: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = doc.lines().skip_while(|l| *l != header);
    assert!(lines.next().is_some(), "docs/CLI.md has a table headed `{header}`");
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_owned()).collect())
        .collect()
}

/// The JSON schema has one home: every `reason` the CLI can print is a row
/// of docs/CLI.md's "JSON messages" table, and every row is one it prints.
/// The reasons are those of the typed reports (`report::Report`) and any
/// still written as a `json!` literal (`"reason": "..."`) in the source.
#[test]
fn every_json_reason_is_documented() {
    use std::collections::BTreeSet;
    let doc = std::fs::read_to_string(root().join("docs/CLI.md")).unwrap();
    let documented: BTreeSet<String> = table_after(&doc, "| reason | printed by | fields |")
        .iter()
        .map(|r| r[0].trim_matches('`').to_owned())
        .collect();
    let mut emitted: BTreeSet<String> =
        cargo_safecache::contract::REPORT_REASONS.iter().map(|r| (*r).to_owned()).collect();
    let src = root().join("cargo-safecache/src");
    for file in rust_files().into_iter().filter(|f| f.starts_with(&src)) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("\"reason\": \"") {
            let rest = &text[at + "\"reason\": \"".len()..];
            emitted.insert(rest.split('"').next().unwrap_or_default().to_owned());
        }
    }
    assert!(emitted.len() > 10, "found too few reasons: {emitted:?}");
    let undocumented: Vec<_> = emitted.difference(&documented).collect();
    let unprinted: Vec<_> = documented.difference(&emitted).collect();
    assert!(
        undocumented.is_empty() && unprinted.is_empty(),
        "docs/CLI.md's JSON messages and the code differ: printed but not documented {undocumented:?}; \
         documented but never printed {unprinted:?}"
    );
}

/// docs/CLI.md's tables of exit codes, of environment variables and of
/// what `run` exports list what the top-level `--help` shows, which is
/// generated from one definition of each (`cargo_safecache::contract`):
/// the same codes in the same order, each meaning starting with the help's;
/// the same variables; the same exports in the same order.
#[test]
fn docs_tables_match_the_help_reference() {
    use cargo_safecache::contract as reference;
    use std::collections::BTreeSet;
    let doc = std::fs::read_to_string(root().join("docs/CLI.md")).unwrap();
    let plain = |s: &str| s.replace('`', "");
    let mut problems = Vec::new();

    let rows = table_after(&doc, "| code | meaning |");
    let doc_codes: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let codes = reference::exit_codes();
    let help_codes: Vec<&str> = codes.iter().map(|(c, _)| *c).collect();
    if doc_codes != help_codes {
        problems.push(format!("exit codes: docs/CLI.md lists {doc_codes:?}, --help (exit::CODES) {help_codes:?}"));
    }
    for (code, meaning) in &codes {
        if let Some(row) = rows.iter().find(|r| r[0] == *code)
            && !plain(&row[1]).starts_with(&plain(meaning))
        {
            problems.push(format!("exit code {code}: docs/CLI.md's meaning does not start with --help's `{meaning}`"));
        }
    }

    let rows = table_after(&doc, "| variable | read by | meaning |");
    let mut documented = BTreeSet::new();
    for row in &rows {
        for name in row[0].split(',') {
            documented.insert(plain(name.trim()));
        }
    }
    let read = reference::environment();
    let mut defined: BTreeSet<String> = read.iter().map(|(n, _)| n.clone()).collect();
    defined.extend(reference::EXPORTED.iter().map(|(n, _)| (*n).to_owned()));
    for name in defined.difference(&documented) {
        problems.push(format!("--help lists the variable {name}, which docs/CLI.md's environment table omits"));
    }
    for name in documented.difference(&defined) {
        problems.push(format!("docs/CLI.md's environment table lists {name}, which --help omits"));
    }
    for (name, meaning) in &read {
        let Some(flag) = meaning.strip_prefix("like ") else { continue };
        let flag = plain(flag.split(':').next().unwrap_or_default());
        let row = rows.iter().find(|r| r[0].split(',').any(|n| plain(n.trim()) == *name));
        if row.is_some_and(|r| !plain(&r[2]).contains(&flag)) {
            problems.push(format!("docs/CLI.md says {name} is not like {flag}, as --help does"));
        }
    }

    let rows = table_after(&doc, "| variable | value |");
    let doc_exports: Vec<String> = rows.iter().map(|r| plain(&r[0])).collect();
    let exports: Vec<&str> = reference::EXPORTED.iter().map(|(n, _)| *n).collect();
    if doc_exports != exports {
        problems.push(format!("`run` exports: docs/CLI.md lists {doc_exports:?}, --help {exports:?}"));
    }
    for (name, value) in reference::EXPORTED {
        if let Some(row) = rows.iter().find(|r| plain(&r[0]) == *name)
            && !plain(&row[1]).starts_with(&plain(value))
        {
            problems.push(format!("`run` exports {name}: docs/CLI.md's value does not start with --help's `{value}`"));
        }
    }
    assert!(problems.is_empty(), "docs/CLI.md and --help differ:\n{}", problems.join("\n"));
}

/// The CLI names its own commands in one place (`hint.rs`), in the form
/// the user invoked: no other message spells `` `cargo safecache ...` ``.
#[test]
fn hints_name_commands_in_one_place() {
    let src = root().join("cargo-safecache/src");
    let needle = concat!("`cargo", " safecache ");
    let mut hits = Vec::new();
    for file in rust_files().into_iter().filter(|f| f.starts_with(&src) && !f.ends_with("hint.rs")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains(needle) && !line.trim_start().starts_with("//") {
                hits.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(hits.is_empty(), "name commands through `hint::command`:\n{}", hits.join("\n"));
}
