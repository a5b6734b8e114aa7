//! The layering of the source tree is checked, not assumed.
//!
//! DESIGN §13 orders the top-level modules in layers: a module may use the ones below it and
//! never one above it, so the layers form a one-way graph. Inside a layer, files may use each
//! other but never in a circle. This test reads every file under `src/`, collects the modules
//! each one names (`use crate::…`, `crate::…::` in code, `super::…`, and a `mod.rs` naming its
//! own children), and fails on an import that points up and on any cycle between files, naming
//! the files and the path that closes the circle.
//!
//! What is not an edge: `mod`/`pub mod` declarations and `pub use` re-exports (a `mod.rs` that
//! only declares and re-exports, as the house style wants, depends on nothing), comments, and
//! test code (`#[cfg(test)]` onwards: tests may reach across layers).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers from the top down. Each entry is one top-level module of `src/` (`main` is the
/// binary, `lib` the crate root with its version string).
const LAYERS: &[&str] = &[
    "main",
    "cli",
    "deploy",
    "config",
    "server",
    "gateway",
    "client",
    "protocol",
    "sql",
    "txn",
    "cluster",
    "storage",
    "types",
    "failpoint",
    "error",
    "lib",
];

/// A source file and the module path it defines (`gateway::commit`, `server`, `main`).
struct File {
    path: PathBuf,
    module: Vec<String>,
    /// Whether it is a `mod.rs`, whose bare child names (`rpc::serve`) are its submodules.
    is_mod: bool,
}

fn files(dir: &Path, prefix: &[String], out: &mut Vec<File>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 file name")
            .to_string();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            files(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let (module, is_mod) = match name.as_str() {
                "mod" => (prefix.to_vec(), true),
                "lib" | "main" if prefix.is_empty() => (vec![name.clone()], name == "lib"),
                _ => {
                    let mut p = prefix.to_vec();
                    p.push(name);
                    (p, false)
                }
            };
            out.push(File {
                path,
                module,
                is_mod,
            });
        }
    }
}

/// The lines of `text` that are code a dependency can hide in: no comments, no test code, no
/// module declarations, no re-exports. The re-exports go to `reexports`: a `mod.rs` that uses
/// a name it re-exports depends on the child it comes from.
fn code_lines(text: &str, reexports: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        // A `pub use …;` may span lines: skip through its semicolon.
        if !pending.is_empty() || t.starts_with("pub use ") || t.starts_with("pub(crate) use ") {
            pending.push_str(t);
            if t.ends_with(';') {
                reexports.push(std::mem::take(&mut pending));
            }
            continue;
        }
        if t.starts_with("mod ") || t.starts_with("pub mod ") {
            continue;
        }
        let code = match t.find("//") {
            Some(i) if !t[..i].contains('"') => &t[..i],
            _ => t,
        };
        out.push(code.to_string());
    }
    out
}

/// Every path that follows `root::` in `text`, expanding `use root::{a, b::{c, d}}` groups.
fn paths_after(text: &str, root: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let needle = format!("{root}::");
    let mut from = 0;
    while let Some(i) = text[from..].find(&needle) {
        let start = from + i;
        from = start + needle.len();
        let before = start.checked_sub(1).map(|j| bytes[j]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        expand(&text[from..], Vec::new(), &mut out);
    }
    out
}

/// Reads one path (or a `{…}` group of them) at the start of `rest`, after `prefix`.
fn expand(rest: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut item = String::new();
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&item, prefix.clone(), out);
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        expand(&item, prefix, out);
        return;
    }
    let mut path = prefix;
    let mut s = rest;
    loop {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if end == 0 {
            break;
        }
        path.push(s[..end].to_string());
        s = &s[end..];
        match s.strip_prefix("::") {
            Some(next) if next.starts_with('{') => return expand(next, path, out),
            Some(next) => s = next,
            None => break,
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// The longest module that a path (from the crate root) names.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

fn layer(module: &[String]) -> usize {
    let top = module.first().map(String::as_str).unwrap_or("lib");
    LAYERS
        .iter()
        .position(|l| *l == top)
        .unwrap_or_else(|| panic!("module {top} is in no layer of tests/layering.rs"))
}

/// A module path: `["gateway", "commit"]`.
type Module = Vec<String>;

/// Module → the modules it uses.
type Edges = BTreeMap<Module, BTreeSet<Module>>;

/// The graph of files: module → the modules it uses, with one file per module.
fn graph() -> (Edges, BTreeMap<Module, PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &[], &mut all);
    let mut modules: BTreeSet<Vec<String>> = all.iter().map(|f| f.module.clone()).collect();
    modules.insert(vec!["lib".into()]);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut paths = BTreeMap::new();
    for f in &all {
        let text = fs::read_to_string(&f.path).expect("read source file");
        let mut reexports = Vec::new();
        let code = code_lines(&text, &mut reexports).join("\n");
        let mut used = BTreeSet::new();
        let crate_root =
            |p: Vec<String>| resolve(&p, &modules).unwrap_or_else(|| vec!["lib".into()]);
        let root_of_main = f.module == ["main"];
        for p in paths_after(&code, if root_of_main { "ddb" } else { "crate" }) {
            used.insert(crate_root(p));
        }
        // `super` is the parent of a file's module, or of a mod.rs's own module.
        let parent: Vec<String> = f.module[..f.module.len().saturating_sub(1)].to_vec();
        for p in paths_after(&code, "super") {
            let mut full = parent.clone();
            full.extend(p);
            used.insert(resolve(&full, &modules).unwrap_or_else(|| parent.clone()));
        }
        if f.is_mod {
            for child in modules
                .iter()
                .filter(|m| m.len() == f.module.len() + 1 && m.starts_with(&f.module))
            {
                let name = child.last().expect("child name");
                if !paths_after(&code, name).is_empty() {
                    used.insert(child.clone());
                }
                // `pub use child::{A, B}` and then `A` in the code of this mod.rs.
                for line in &reexports {
                    let names = paths_after(line, &format!("use {name}"));
                    let names = names.iter().filter_map(|p| p.last());
                    if names.into_iter().any(|n| mentions(&code, n)) {
                        used.insert(child.clone());
                    }
                }
            }
        }
        used.remove(&f.module);
        if root_of_main {
            used.remove(&vec!["lib".to_string()]);
        }
        paths.insert(f.module.clone(), f.path.clone());
        edges.entry(f.module.clone()).or_default().extend(used);
    }
    (edges, paths)
}

/// Whether `code` mentions the identifier `ident` as a whole word.
fn mentions(code: &str, ident: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(ident).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + ident.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

fn name(m: &[String]) -> String {
    m.join("::")
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let (edges, paths) = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if layer(to) < layer(from) {
                wrong.push(format!(
                    "{} ({}) uses {} ({}), a layer above it",
                    name(from),
                    paths[from].display(),
                    name(to),
                    LAYERS[layer(to)]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let (edges, paths) = graph();
    // Depth-first search with colours; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour: BTreeMap<&Vec<String>, Colour> =
        edges.keys().map(|k| (k, Colour::White)).collect();
    let mut cycles = Vec::new();
    fn visit<'a>(
        node: &'a Vec<String>,
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        colour: &mut BTreeMap<&'a Vec<String>, Colour>,
        stack: &mut Vec<&'a Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        colour.insert(node, Colour::Grey);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match colour.get(next).copied().unwrap_or(Colour::Black) {
                Colour::White => visit(next, edges, colour, stack, cycles),
                Colour::Grey => {
                    let at = stack.iter().position(|m| *m == next).unwrap_or(0);
                    let mut names: Vec<String> = stack[at..].iter().map(|m| name(m)).collect();
                    names.push(name(next));
                    cycles.push(names.join(" -> "));
                }
                Colour::Black => {}
            }
        }
        stack.pop();
        colour.insert(node, Colour::Black);
    }
    for node in edges.keys() {
        if colour[node] == Colour::White {
            visit(node, &edges, &mut colour, &mut Vec::new(), &mut cycles);
        }
    }
    let files: Vec<String> = paths.values().map(|p| p.display().to_string()).collect();
    assert!(files.len() > 40, "read only {} files", files.len());
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_reader_finds_groups_and_nested_paths() {
    let found = paths_after(
        "use crate::{a::b, c::{d, e::F}};\nlet x = crate::g::h(1); notcrate::x;",
        "crate",
    );
    let found: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["a::b", "c::d", "c::e::F", "g::h"]);
}
