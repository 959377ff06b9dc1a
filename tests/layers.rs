//! Imports go one way: the layer order is the ```layers block of
//! ARCHITECTURE.md (top line = top layer), and every `crate::` reference in
//! `src/` must point at a module on a lower line. Inside a folder module the
//! files must not import each other in a circle. The test server (a separate
//! module tree) may use only `protocol`. Tests at the end of a file
//! (`#[cfg(test)] mod tests`) are exempt: they may start a test server.
//!
//! Run by `cargo test` (and so by `make test`); a new module must be given
//! its place in ARCHITECTURE.md before this passes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The order stated in ARCHITECTURE.md, top first.
fn layer_order(architecture: &str) -> Vec<String> {
    let start = architecture
        .find("```layers\n")
        .expect("ARCHITECTURE.md has a ```layers block")
        + "```layers\n".len();
    let end = start + architecture[start..].find("```").expect("closed ```layers block");
    architecture[start..end]
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// The code of a file without comment lines and without its trailing
/// `#[cfg(test)] mod tests` block.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| match l.find(" // ") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level names a piece of code reaches through `crate::`: a module
/// (`crate::lease::Lease`, `use crate::{lease, held::Shared}`) or a root
/// re-export (`crate::Error` is the `error` module's).
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `$crate::` in macros and `dflockd::crate::` do not occur; skip
        // identifiers that merely end in "crate".
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(head(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            out.insert(head(rest));
        }
    }
    out.remove("");
    out
}

/// The module a path starts with (`Error`, `ErrorKind`, `Result` → `error`).
fn head(path: &str) -> String {
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    match name.as_str() {
        "Error" | "ErrorKind" | "Result" => "error".into(),
        "self" => String::new(),
        _ => name,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every import against the order (and every module the order lacks), as
/// messages; empty when the code keeps the order.
fn violations(order: &[String], files: &[(String, String)]) -> Vec<String> {
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut bad = Vec::new();
    // Folder-internal edges: module -> (file -> files it uses).
    let mut inner: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (path, text) in files {
        let rel = path.trim_start_matches("src/");
        let module = rel.split(['/', '.']).next().unwrap_or("").to_owned();
        if module == "lib" || module == "bin" {
            continue; // the root declares modules; programs use the public API
        }
        let code = code(text);
        let Some(mine) = rank(&module) else {
            bad.push(format!(
                "{path}: module `{module}` has no place in ARCHITECTURE.md's layers"
            ));
            continue;
        };
        for used in crate_refs(&code) {
            if used == module {
                continue;
            }
            if module == "testserver" {
                if used != "protocol" {
                    bad.push(format!(
                        "{path}: the test server may use only `protocol`, not `{used}`"
                    ));
                }
                continue;
            }
            match rank(&used) {
                Some(theirs) if theirs > mine => {}
                Some(_) => bad.push(format!(
                    "{path}: `{module}` uses `{used}`, which is not below it in ARCHITECTURE.md's layers"
                )),
                None => bad.push(format!("{path}: uses `{used}`, which has no place in the layers")),
            }
        }
        if rel.contains('/') {
            let file = rel.rsplit('/').next().unwrap().trim_end_matches(".rs").to_owned();
            let mut uses = BTreeSet::new();
            for marker in ["super::", &format!("crate::{module}::")] {
                let mut rest = code.as_str();
                while let Some(i) = rest.find(marker) {
                    rest = &rest[i + marker.len()..];
                    let name = head(rest);
                    if !name.is_empty() && name != file {
                        uses.insert(name);
                    }
                }
            }
            inner.entry(module).or_default().insert(file, uses);
        }
    }
    for (module, graph) in &inner {
        if let Some(circle) = find_circle(graph) {
            bad.push(format!(
                "src/{module}/: files import each other in a circle: {}",
                circle.join(" -> ")
            ));
        }
    }
    bad
}

/// A circle in `graph` (file -> files it uses), if any.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut circle = path[i..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if graph.contains_key(next) {
                if let Some(c) = visit(next, graph, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn imports_follow_the_layer_order_of_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = layer_order(&fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md"));
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, fs::read_to_string(p).expect("read"))
        })
        .collect();
    let bad = violations(&order, &files);
    assert!(
        bad.is_empty(),
        "imports against the layer order:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import_a_stranger_and_a_circle() {
    let order: Vec<String> = ["lease", "held", "protocol", "testserver"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let file = |p: &str, t: &str| (p.to_owned(), t.to_owned());
    assert!(
        violations(
            &order,
            &[file("src/lease.rs", "use crate::{held::Shared, Error};\n")]
        )
        .iter()
        .any(|m| m.contains("`error`"))
    );
    let up = violations(&order, &[file("src/held.rs", "use crate::lease::Lease;\n")]);
    assert_eq!(up.len(), 1, "{up:?}");
    assert!(up[0].contains("not below it"), "{up:?}");
    let ok = violations(
        &order,
        &[file(
            "src/lease.rs",
            "use crate::{held, protocol::Kind};\n// crate::lease\n",
        )],
    );
    assert!(ok.is_empty(), "{ok:?}");
    let tests_exempt = "use crate::held::X;\n#[cfg(test)]\nmod tests {\n use crate::lease::Lease;\n}\n";
    assert!(
        violations(
            &order,
            &[file(
                "src/held.rs",
                &tests_exempt.replace("held::X", "protocol::X")
            )]
        )
        .is_empty()
    );
    let stranger = violations(&order, &[file("src/engine/mod.rs", "")]);
    assert!(stranger[0].contains("no place"), "{stranger:?}");
    let ts = violations(
        &order,
        &[file("src/testserver/conn.rs", "use crate::held::Shared;\n")],
    );
    assert!(ts[0].contains("only `protocol`"), "{ts:?}");
    let circle = violations(
        &order,
        &[
            file("src/held/a.rs", "use super::b::X;\n"),
            file("src/held/b.rs", "use crate::held::a::Y;\n"),
        ],
    );
    assert!(circle.iter().any(|m| m.contains("circle")), "{circle:?}");
}
