//! The workspace's structure: no import cycle between the modules of any
//! crate (`docs/design.md`, "Layers and packages": dependencies point one way).
//!
//! A module depends on another when its file names it by path
//! (`crate::a::b`, `super::c`, in a `use` or in an expression). A module's
//! use of its own ancestors (a child naming items of the module it is
//! declared in) is not counted: that is how Rust nests modules. Unit-test
//! modules (`mod tests`) are left out. Every cycle is reported with the
//! names that tie it, so it can be cut where it is weakest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate root (its `lib.rs` or `main.rs`), relative to the workspace.
const CRATES: &[&str] = &[
    "src/lib.rs",
    "crates/core/src/lib.rs",
    "crates/hq/src/lib.rs",
    "crates/hq/src/bin/sargsctl/main.rs",
    "fuzz/src/lib.rs",
];

/// One module of a crate: its path (`["capture", "rtsp"]`) and its file.
struct Module {
    path: Vec<String>,
    file: PathBuf,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The module's source, without comments and without a trailing
/// `#[cfg(test)] mod tests { … }` block.
fn source(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod tests {"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// `mod name;` declarations (file modules) in `text`, but `tests`.
fn declared(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("pub ").unwrap_or(l);
            let rest = rest.strip_prefix("pub(crate) ").unwrap_or(rest);
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?;
            (name != "tests").then(|| name.to_owned())
        })
        .collect()
}

/// Every module of the crate whose root file is `root`.
fn modules(root: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut todo = vec![(Vec::new(), root.to_owned())];
    while let Some((path, file)) = todo.pop() {
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => file.parent().map(Path::to_owned),
            _ => Some(file.with_extension("")),
        }
        .expect("a module file has a folder");
        for name in declared(&source(&file)) {
            let flat = dir.join(format!("{name}.rs"));
            let child = if flat.is_file() {
                flat
            } else {
                dir.join(&name).join("mod.rs")
            };
            assert!(
                child.is_file(),
                "{}: mod {name} has no file",
                file.display()
            );
            let mut p = path.clone();
            p.push(name);
            todo.push((p, child));
        }
        out.push(Module { path, file });
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths `text` (the source of module `at`, whose child modules
/// are `children`) names, each with the path as written:
/// `crate::a::b::Item`, `super::x`, `child::Item`, and the items of
/// `crate::a::{b, c::d}`.
fn named_paths(text: &str, at: &[String], children: &[String]) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut starts: Vec<(String, Vec<String>)> = vec![
        ("crate::".into(), Vec::new()),
        ("self::".into(), at.to_vec()),
        ("super::".into(), at[..at.len().saturating_sub(1)].to_vec()),
    ];
    for child in children {
        let mut p = at.to_vec();
        p.push(child.clone());
        starts.push((format!("{child}::"), p));
    }
    for (start, base0) in &starts {
        let mut from = 0;
        while let Some(i) = text[from..].find(start.as_str()).map(|i| i + from) {
            from = i + start.len();
            if i > 0 && (is_ident(bytes[i - 1] as char) || bytes[i - 1] == b':') {
                continue;
            }
            let mut base = base0.clone();
            let mut j = from;
            loop {
                let end = text[j..]
                    .find(|c: char| !is_ident(c))
                    .map_or(text.len(), |k| k + j);
                let word = &text[j..end];
                if word == "super" {
                    base.pop();
                } else if !word.is_empty() {
                    base.push(word.to_owned());
                }
                if text[end..].starts_with("::{") {
                    let close = text[end..].find('}').map_or(text.len(), |k| k + end);
                    for item in text[end + 3..close].split(',') {
                        let mut p = base.clone();
                        p.extend(
                            item.trim()
                                .split("::")
                                .map(|w| w.trim_matches(|c: char| !is_ident(c)).to_owned())
                                .filter(|w| !w.is_empty() && w != "self"),
                        );
                        out.push((p, text[i..close + 1].to_owned()));
                    }
                    break;
                }
                if text[end..].starts_with("::") && !word.is_empty() {
                    j = end + 2;
                    continue;
                }
                out.push((base, text[i..end].to_owned()));
                break;
            }
        }
    }
    out
}

/// The import cycles of the crate rooted at `root`, each as its edges
/// `a -> b: names`.
fn cycles(root: &Path) -> Vec<Vec<String>> {
    let mods = modules(root);
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, BTreeSet<String>>> = BTreeMap::new();
    for m in &mods {
        let text = source(&m.file);
        for (path, written) in named_paths(&text, &m.path, &declared(&text)) {
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| known.contains(p))
                .unwrap_or_default();
            let ancestor = m.path.starts_with(&target);
            if !ancestor {
                edges
                    .entry(m.path.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(written);
            }
        }
    }
    // Strongly connected components (Tarjan), iteratively small enough to
    // recurse: a crate has tens of modules.
    struct Scc<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeMap<Vec<String>, BTreeSet<String>>>,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        on: BTreeSet<Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit(s: &mut Scc<'_>, v: &Vec<String>) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        s.on.insert(v.clone());
        let next: Vec<Vec<String>> = s
            .edges
            .get(v)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for w in &next {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                s.found.push(comp);
            }
        }
    }
    let mut s = Scc {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        found: Vec::new(),
    };
    for m in &mods {
        if !s.index.contains_key(&m.path) {
            visit(&mut s, &m.path);
        }
    }
    let name = |p: &Vec<String>| format!("crate::{}", p.join("::"));
    s.found
        .iter()
        .map(|comp| {
            let members: BTreeSet<&Vec<String>> = comp.iter().collect();
            let mut lines = Vec::new();
            for a in comp {
                for (b, names) in edges.get(a).into_iter().flatten() {
                    if members.contains(b) {
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        lines.push(format!("{} -> {}: {}", name(a), name(b), names.join(", ")));
                    }
                }
            }
            lines
        })
        .collect()
}

#[test]
fn no_crate_of_the_workspace_has_an_import_cycle() {
    let mut report = Vec::new();
    for root in CRATES {
        let root = workspace().join(root);
        assert!(root.is_file(), "{} is missing", root.display());
        for (i, cycle) in cycles(&root).iter().enumerate() {
            report.push(format!(
                "{} cycle {}:\n  {}",
                root.display(),
                i + 1,
                cycle.join("\n  ")
            ));
        }
    }
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle_and_ignores_a_child_naming_its_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod p;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::b::Thing;\n").expect("write");
    std::fs::write(src.join("b.rs"), "pub fn f() { crate::a::g() }\n").expect("write");
    std::fs::create_dir(src.join("p")).expect("mkdir");
    std::fs::write(src.join("p/mod.rs"), "mod c;\nuse c::X;\npub struct Y;\n").expect("write");
    std::fs::write(src.join("p/c.rs"), "use super::Y;\n").expect("write");
    let found = cycles(&src.join("lib.rs"));
    assert_eq!(found.len(), 1, "{found:?}");
    let text = found[0].join("\n");
    assert!(
        text.contains("crate::a -> crate::b: crate::b::Thing"),
        "{text}"
    );
    assert!(text.contains("crate::b -> crate::a: crate::a::g"), "{text}");
}
