//! The layering of the source tree is checked, not assumed.
//!
//! DESIGN §13 orders the top-level modules in layers: a module may use the ones below it and
//! never one above it, so the layers form a one-way graph. Inside a layer, files may use each
//! other but never in a circle. This test reads every file under `src/`, collects the modules
//! each one names (`use crate::…`, `crate::…::` in code, `super::…`, and a `mod.rs` naming its
//! own children), and fails on an import that points up and on any cycle between files, naming
//! the files and the path that closes the circle.
//!
//! A name used through a re-export (`crate::sql::Session`) counts as a use of the file that
//! defines it (`sql::session`). What is not an edge: `mod`/`pub mod` declarations and the
//! re-exports of a `mod.rs` (a `mod.rs` that only declares and re-exports, as the house style
//! wants, depends on nothing), comments, and items under `#[cfg(test)]` (tests may reach across
//! layers). What this reader cannot see: a method called on a type whose `impl` block lives in
//! another file (an inherent impl split across files); keep such impls in files that sit above
//! the type's own file, as `gateway/` does.

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
    "replication",
    "txn",
    "cluster",
    "storage",
    "types",
    "failpoint",
    "version",
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

/// The lines of `text` that are code a dependency can hide in: no comments, no test items
/// (an item under `#[cfg(test)]`: tests may reach across layers), no module declarations. The
/// `pub use` items go to `reexports` instead.
fn code_lines(text: &str, reexports: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    // Brace depth of a test item being skipped; `Some(0)` skips the next item.
    let mut skipping: Option<i64> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("//") || t.is_empty() {
            continue;
        }
        if t.starts_with("#[cfg(test)]") {
            skipping = Some(0);
            continue;
        }
        if let Some(depth) = skipping {
            if t.starts_with("#[") && depth == 0 {
                continue;
            }
            let depth = depth + t.matches('{').count() as i64 - t.matches('}').count() as i64;
            skipping = (depth > 0 || !(t.ends_with(';') || t.ends_with('}'))).then_some(depth);
            continue;
        }
        // A `pub use …;` may span lines: read through its semicolon.
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
    if s.starts_with('*') {
        out.push(path);
        return;
    }
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
            Some(next) if next.starts_with('*') => break,
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

/// One file's code and re-exports, read once.
struct Read {
    code: String,
    reexports: Vec<String>,
}

/// A path as written in `module`'s file, made absolute: `crate::a` → `a`, `super::super::b`
/// → two levels up, `self::c` and (in a mod.rs) a child's name → inside the module.
fn absolute(file: &File, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => {
            let mut m = file.module.clone();
            m.extend(path[1..].iter().cloned());
            Some(m)
        }
        "super" => {
            // `super` is the parent of a file's module, and of a mod.rs's own module.
            let mut m = file.module.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                m.pop();
                rest = &rest[1..];
            }
            m.extend(rest.iter().cloned());
            Some(m)
        }
        _ => {
            let mut child = file.module.clone();
            child.push(first.clone());
            modules.contains(&child).then(|| {
                child.extend(path[1..].iter().cloned());
                child
            })
        }
    }
}

/// The file an absolute path leads to: its longest module prefix, followed through that
/// module's re-exports (`crate::sql::Session` is in `sql::session`). Paths to no module (a
/// macro exported at the root) lead to `lib`.
fn target(path: &[String], modules: &BTreeSet<Module>, reexports: &Reexports) -> Module {
    let mut m = resolve(path, modules).unwrap_or_else(|| vec!["lib".into()]);
    for _ in 0..4 {
        match path
            .get(m.len())
            .and_then(|n| reexports.get(&(m.clone(), n.clone())))
        {
            Some(to) if *to != m => m = to.clone(),
            _ => break,
        }
    }
    m
}

/// (module, name) → the module that defines what the module re-exports under that name.
type Reexports = BTreeMap<(Module, String), Module>;

/// The graph of files: module → the modules it uses, with one file per module.
fn graph() -> (Edges, BTreeMap<Module, PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &[], &mut all);
    let mut modules: BTreeSet<Module> = all.iter().map(|f| f.module.clone()).collect();
    modules.insert(vec!["lib".into()]);
    let read: Vec<Read> = all
        .iter()
        .map(|f| {
            let text = fs::read_to_string(&f.path).expect("read source file");
            let mut reexports = Vec::new();
            let code = code_lines(&text, &mut reexports).join("\n");
            Read { code, reexports }
        })
        .collect();
    // Every `pub use`, by the name it gives.
    let mut reexports = Reexports::new();
    for (f, r) in all.iter().zip(&read) {
        for line in &r.reexports {
            let after_use = line.split_once("use ").map_or("", |(_, rest)| rest);
            let mut paths = Vec::new();
            expand(after_use, Vec::new(), &mut paths);
            for p in paths {
                if let (Some(name), Some(abs)) = (p.last(), absolute(f, &p, &modules)) {
                    if let Some(m) = resolve(&abs, &modules) {
                        reexports.insert((f.module.clone(), name.clone()), m);
                    }
                }
            }
        }
    }
    let mut edges = Edges::new();
    let mut paths = BTreeMap::new();
    for (f, r) in all.iter().zip(&read) {
        let mut used = BTreeSet::new();
        let root_of_main = f.module == ["main"];
        let root = if root_of_main { "ddb" } else { "crate" };
        for p in paths_after(&r.code, root) {
            used.insert(target(&p, &modules, &reexports));
        }
        for p in paths_after(&r.code, "super") {
            let mut full = vec!["super".to_string()];
            full.extend(p);
            if let Some(abs) = absolute(f, &full, &modules) {
                used.insert(target(&abs, &modules, &reexports));
            }
        }
        if f.is_mod {
            // A mod.rs names its children bare (`rpc::serve`), and uses what it re-exports.
            for child in modules
                .iter()
                .filter(|m| m.len() == f.module.len() + 1 && m.starts_with(&f.module))
            {
                let name = child.last().expect("child name");
                if !paths_after(&r.code, name).is_empty() {
                    used.insert(child.clone());
                }
            }
            for ((m, name), to) in &reexports {
                if *m == f.module && mentions(&r.code, name) {
                    used.insert(to.clone());
                }
            }
        } else {
            // A file that re-exports another module's item depends on it.
            for ((m, _), to) in &reexports {
                if *m == f.module {
                    used.insert(to.clone());
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
