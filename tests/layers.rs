//! The rule of imports (docs/ARCHITECTURE.md), checked on the source so it cannot slide back:
//!
//! - nothing outside `http/` imports `http/` (the CLI may print its OpenAPI document);
//! - `domain/` imports only `domain/`; `db/` imports only `db/` and `domain/`;
//! - SQL (`sqlx::query…`, `QueryBuilder`, `raw_sql`) appears only in `db/`;
//! - no two files import each other, directly or around a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, by module path (`db::plans`, `http::usage::check`, `lib`).
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            (parts.join("::"), text)
        })
        .collect()
}

/// The code of a file without comments and its unit tests (`#[cfg(test)] mod tests`).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file refers to (`crate::a::b`, `super::x`, and the paths inside
/// `use crate::{a, b::c}`), resolved to the deepest module file that exists.
fn imports(module: &str, text: &str, all: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code = code(text);
    let mut paths: Vec<String> = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for (start, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if start > 0 && (is_ident(bytes[start - 1]) || bytes[start - 1] == b':') {
            continue;
        }
        let mut end = start;
        while end < bytes.len() && (is_ident(bytes[end]) || bytes[end] == b':') {
            end += 1;
        }
        let path = &code[start..end];
        // `use crate::{a, b::c}`: each name in the braces is a path of its own.
        if bytes.get(end) == Some(&b'{') {
            if let Some(close) = code[end..].find('}') {
                for item in code[end + 1..end + close].split(',') {
                    let item = item.trim().split(" as ").next().unwrap_or("").trim();
                    if !item.is_empty() && item != "self" {
                        paths.push(format!("{path}{item}"));
                    }
                }
            }
        }
        paths.push(path.trim_end_matches(':').to_string());
    }
    let mut out = BTreeSet::new();
    for path in paths {
        let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let base: Vec<String> = if segs.first() == Some(&"crate") {
            segs.remove(0);
            Vec::new()
        } else {
            // `super` from module `a::b` (b.rs or b/mod.rs) is `a`.
            let mut here: Vec<String> = module.split("::").map(String::from).collect();
            while segs.first() == Some(&"super") {
                segs.remove(0);
                here.pop();
            }
            here
        };
        let mut full: Vec<String> = base;
        full.extend(segs.iter().map(|s| s.to_string()));
        // The deepest prefix that is a module file.
        for n in (1..=full.len()).rev() {
            let candidate = full[..n].join("::");
            if all.contains_key(&candidate) {
                if candidate != module {
                    out.insert(candidate);
                }
                break;
            }
        }
    }
    out
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn imports_run_one_way() {
    let all = modules();
    assert!(
        all.contains_key("db::plans") && all.contains_key("http"),
        "{:?}",
        all.keys()
    );
    let mut broken = Vec::new();
    for (module, text) in &all {
        let deps = imports(module, text, &all);
        let layer = top(module);
        for dep in &deps {
            let to = top(dep);
            let ok = match layer {
                "domain" => to == "domain",
                "db" => to == "db" || to == "domain",
                "http" | "lib" | "main" | "cli" | "testing" => true,
                _ => to != "http",
            };
            // The CLI prints the OpenAPI document the HTTP layer generates.
            let ok = ok || (module == "cli" && dep == "http");
            if !ok {
                broken.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert_eq!(
        broken,
        Vec::<String>::new(),
        "imports that run back up a layer"
    );
}

#[test]
fn sql_lives_in_db() {
    let all = modules();
    let sql: Vec<&String> = all
        .iter()
        .filter(|(module, text)| {
            let code = code(text);
            top(module) != "db"
                && [
                    "sqlx::query",
                    "query_as!",
                    "query_scalar!",
                    "QueryBuilder",
                    "raw_sql",
                ]
                .iter()
                .any(|needle| code.contains(needle))
        })
        .map(|(module, _)| module)
        .collect();
    assert_eq!(sql, Vec::<&String>::new(), "SQL outside db/");
}

/// Every loop of imports, as "a -> b -> a", from each file that starts one.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    // `lib` (the crate root) declares every module and re-exports a few: not an import.
    let mut found = Vec::new();
    for start in graph.keys().filter(|m| m.as_str() != "lib") {
        // Depth-first from `start`: a path back to it is a loop.
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for dep in graph.get(&node).into_iter().flatten() {
                if dep == "lib" {
                    continue;
                }
                if dep == start {
                    let mut lp = path.clone();
                    lp.push(node.clone());
                    lp.push(dep.clone());
                    found.push(lp.join(" -> "));
                } else if seen.insert(dep.clone()) {
                    let mut p = path.clone();
                    p.push(node.clone());
                    stack.push((dep.clone(), p));
                }
            }
        }
    }
    found
}

#[test]
fn no_file_imports_itself_around_a_loop() {
    let all = modules();
    let graph: BTreeMap<String, BTreeSet<String>> = all
        .iter()
        .map(|(m, text)| (m.clone(), imports(m, text, &all)))
        .collect();
    assert_eq!(cycles(&graph), Vec::<String>::new(), "import cycles");
}

#[test]
fn the_checks_can_fail() {
    let mut all = modules();
    all.insert(
        "db::probe".into(),
        "use crate::billing::invoices;\nfn f() { sqlx::query!(\"SELECT 1\"); }".into(),
    );
    let deps = imports("db::probe", &all["db::probe"], &all);
    assert!(deps.contains("billing::invoices"), "{deps:?}");
    let deps = imports(
        "entitlements::check",
        "use super::{resolve::Resolved, Entitlements};\nuse crate::{db::usage, tenancy::{Caller}};",
        &all,
    );
    assert!(deps.contains("entitlements::resolve"), "{deps:?}");
    assert!(deps.contains("entitlements"), "{deps:?}");
    assert!(deps.contains("db::usage"), "{deps:?}");
    assert!(deps.contains("tenancy"), "{deps:?}");
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_string(), deps.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycles(&graph),
        ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
    );
}

#[test]
fn no_folder_imports_itself_around_a_loop() {
    // The same rule between the top-level modules (`billing`, `tenancy`, …): a service may
    // use another, but two may not use each other, even through different files.
    let all = modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &all {
        let from = top(m).to_string();
        let deps = graph.entry(from.clone()).or_default();
        for dep in imports(m, text, &all) {
            let to = top(&dep).to_string();
            if to != from {
                deps.insert(to);
            }
        }
    }
    assert_eq!(cycles(&graph), Vec::<String>::new(), "folder import cycles");
}
