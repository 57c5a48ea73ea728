//! The house rules that the compiler does not check, over every crate of
//! the workspace:
//! - **no import circles** between the modules of a crate: module A uses
//!   B (a `use crate::…`, `super::…` or inline path naming B or an item in
//!   it) and B uses A, directly or through others. Crate roots and `mod.rs`
//!   files only declare and re-export, so they are not nodes; test modules
//!   (`#[cfg(test)] mod …`) are not read. A new circle fails with the
//!   modules that form it;
//! - **the repository stands alone**: no file refers to the `shared`
//!   directory beside the clone, which only this project's CI machines have.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every crate directory of the workspace (a `Cargo.toml` and a `src/`),
/// examples included.
fn crates(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            found.push(dir.clone());
        }
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() && !name.starts_with('.') && name != "target" && name != "src" {
                dirs.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Module path (`pipeline::builder`) → (file, whether it is a root:
/// `lib.rs`, `main.rs` or a `mod.rs`), for `src/` minus `src/bin`.
fn modules(src: &Path) -> BTreeMap<String, (PathBuf, bool)> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path != src.join("bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let root = matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            );
            if root {
                parts.pop();
            }
            out.insert(parts.join("::"), (path, root));
        }
    }
    out
}

/// The text without line comments, string contents and test modules.
fn code(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        // Blank string contents (a `use ` or a `//` inside one means nothing).
        let mut in_string = false;
        let mut escaped = false;
        let mut blanked = String::with_capacity(line.len());
        let mut previous = ' ';
        for ch in line.chars() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == '"' {
                    in_string = false;
                    blanked.push(ch);
                }
                continue;
            }
            if ch == '/' && previous == '/' {
                blanked.pop();
                break;
            }
            if ch == '"' {
                in_string = true;
            }
            blanked.push(ch);
            previous = ch;
        }
        kept.push_str(&blanked);
        kept.push('\n');
    }
    kept
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let mut depth = 0;
    let mut part = String::new();
    let mut parts = Vec::new();
    for ch in tree.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            parts.push(std::mem::take(&mut part));
        } else {
            part.push(ch);
        }
    }
    parts.push(part);
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        match part.find('{') {
            Some(open) => {
                let close = part.rfind('}').filter(|c| *c > open).unwrap_or(part.len());
                expand(
                    &format!("{prefix}{}", part[..open].trim()),
                    &part[open + 1..close],
                    out,
                );
            }
            None => {
                let path = part.split(" as ").next().unwrap_or("").trim();
                out.push(format!("{prefix}{path}"));
            }
        }
    }
}

/// Every path of the code that starts at `crate`, `super` or `self`.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let squeezed: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    for statement in squeezed.split(';') {
        // `use` as a keyword: at the start, or after a space, a brace or `pub(crate)`.
        let at = statement.match_indices("use ").find(|(i, _)| {
            let before = &statement[..*i];
            let boundary = before
                .chars()
                .last()
                .is_none_or(|c| matches!(c, ' ' | '{' | '}' | ')'));
            let word = before.trim_end();
            let after_identifier = word.ends_with(|c: char| c.is_alphanumeric() || c == '_');
            boundary && (!after_identifier || word.ends_with("pub"))
        });
        if let Some((i, _)) = at {
            expand("", &statement[i + 4..], &mut out);
        }
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            let preceded =
                at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            if preceded {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            out.push(code[at..end].trim_end_matches(':').to_owned());
        }
    }
    out
}

/// The module a path from module `from` names (the longest known prefix).
fn target(path: &str, from: &str, modules: &BTreeMap<String, (PathBuf, bool)>) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    match parts.first() {
        Some(&"crate") => {
            base.clear();
            parts.remove(0);
        }
        Some(&"super") => {
            base.pop();
            parts.remove(0);
            while parts.first() == Some(&"super") {
                base.pop();
                parts.remove(0);
            }
        }
        Some(&"self") => {
            parts.remove(0);
        }
        _ => return None,
    }
    let full: Vec<&str> = base.into_iter().chain(parts).collect();
    (1..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// The import circles of the crate in `dir`: each a sorted list of modules.
fn circles(dir: &Path) -> Vec<Vec<String>> {
    let modules = modules(&dir.join("src"));
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, (file, root)) in &modules {
        if *root {
            continue;
        }
        let text = fs::read_to_string(file).unwrap();
        for path in paths(&code(&text)) {
            if let Some(t) = target(&path, name, &modules) {
                if t != *name && !modules[&t].1 {
                    edges.entry(name.clone()).or_default().insert(t);
                }
            }
        }
    }
    strongly_connected(&edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect()
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a str, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                if !s.index.contains_key(w.as_str()) {
                    visit(w, s);
                    let low = s.low[v].min(s.low[w.as_str()]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w.as_str()) {
                    let low = s.low[v].min(s.index[w.as_str()]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(v, &mut s);
        }
    }
    s.out
}

#[test]
fn no_crate_of_the_workspace_has_an_import_circle() {
    let root = workspace();
    let crates = crates(&root);
    assert!(crates.len() >= 15, "{crates:?}");
    let mut found = Vec::new();
    for dir in &crates {
        for circle in circles(dir) {
            found.push(format!(
                "{}: {}",
                dir.strip_prefix(&root).unwrap().display(),
                circle.join(" -> ")
            ));
        }
    }
    assert!(
        found.is_empty(),
        "import circles (move what both sides need to a module they both import):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_circle_check_finds_circles_through_every_kind_of_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("room")).unwrap();
    fs::write(
        src.join("lib.rs"),
        "pub mod a;\npub mod b;\npub mod c;\npub mod room;\n",
    )
    .unwrap();
    fs::write(src.join("room/mod.rs"), "pub mod x;\npub mod y;\n").unwrap();
    // a -> b (grouped use), b -> c (inline path), c -> a (use with alias)
    fs::write(src.join("a.rs"), "use crate::{b::{One, Two}, room};\n").unwrap();
    fs::write(src.join("b.rs"), "fn f() { crate::c::g(); }\n").unwrap();
    fs::write(src.join("c.rs"), "pub use crate::a as alias;\n").unwrap();
    // x -> y through super, y -> x through self's parent; test modules ignored
    fs::write(src.join("room/x.rs"), "use super::y::Y;\n").unwrap();
    fs::write(
        src.join("room/y.rs"),
        "// use super::x; in a comment\npub struct Y;\nfn f() -> super::x::X { todo!() }\n#[cfg(test)]\nmod tests {\n    use crate::a::*;\n}\n",
    )
    .unwrap();
    assert_eq!(
        circles(dir.path()),
        [
            vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
            vec!["room::x".to_owned(), "room::y".to_owned()]
        ]
    );
    // One way only: no circle.
    fs::write(src.join("c.rs"), "pub struct C;\n").unwrap();
    fs::write(src.join("room/y.rs"), "pub struct Y;\n").unwrap();
    assert!(circles(dir.path()).is_empty());
}

#[test]
fn no_file_of_the_repository_refers_to_outside_it() {
    let root = workspace();
    let mut offenders = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name != ".ci" || name == "target" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            // Spelled in two halves so that this file does not match itself.
            let outside = format!("../{}", "shared");
            if text.contains(&outside) {
                offenders.push(path.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    offenders.sort();
    assert!(
        offenders.is_empty(),
        "files refer to a directory outside the repository: {offenders:?}"
    );
}
