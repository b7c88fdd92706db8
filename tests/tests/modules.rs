//! The CLI's modules depend on each other in one direction: no module reaches, through the
//! modules it uses, back to itself (regression: affix, blobs, modelcar, push, resolve and store
//! imported each other in a circle), and the layers `commands -> ops -> store -> net -> ui ->
//! error` are only ever crossed downward.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module of `cli/src` (`ops::resolve` for `ops/resolve.rs`, `store` for
/// `store/mod.rs`) and the modules it names (`crate::ops::resolve::fetch` names
/// `ops::resolve`; `crate::commands::{affix, Ctx}` names `commands`).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut texts = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("cli/src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.len() > 1 && parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            texts.insert(parts.join("::"), std::fs::read_to_string(&p).expect("read"));
        }
    }
    let mut g = BTreeMap::new();
    for (name, text) in &texts {
        let deps: &mut BTreeSet<String> = g.entry(name.clone()).or_default();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            // the longest path of identifiers that names a module
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let named = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|m| texts.contains_key(m));
            if let Some(m) = named.filter(|m| m != name) {
                deps.insert(m);
            }
        }
    }
    g
}

/// The layer a module is in: the first part of its name.
fn layer_of(m: &str) -> &str {
    m.split("::").next().unwrap_or(m)
}

fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        u: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(u.to_string(), 1);
        path.push(u.to_string());
        for v in g.get(u).into_iter().flatten() {
            if !g.contains_key(v) {
                continue;
            }
            match state.get(v) {
                Some(1) => {
                    let at = path.iter().position(|x| x == v).unwrap_or(0);
                    let mut c = path[at..].to_vec();
                    c.push(v.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(g, v, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(u.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for u in g.keys() {
        if !state.contains_key(u) {
            if let Some(c) = visit(g, u, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_cli_modules_have_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/src");
    let g = graph(&src);
    assert!(g.len() > 25, "read the CLI's modules: {:?}", g.keys());
    if let Some(c) = cycle(&g) {
        panic!(
            "the CLI's modules import each other in a circle: {}",
            c.join(" -> ")
        );
    }
}

/// The CLI's layers, top first: a module may name only modules of layers below its own.
const LAYERS: &[&str] = &["main", "commands", "ops", "store", "net", "ui", "error"];

/// The edges that go up or sideways between `LAYERS` (and modules in no layer).
fn upward(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == layer_of(m));
    let mut bad = Vec::new();
    for (m, deps) in g {
        let Some(r) = rank(m) else {
            bad.push(format!("{m} is in no layer (add it to LAYERS)"));
            continue;
        };
        for d in deps.iter().filter(|d| layer_of(d) != layer_of(m)) {
            match rank(d) {
                Some(rd) if rd > r => {}
                Some(_) => bad.push(format!("{m} -> {d}")),
                None => bad.push(format!("{m} -> {d} (in no layer)")),
            }
        }
    }
    bad
}

#[test]
fn the_cli_modules_are_layered() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/src");
    let g = graph(&src);
    let bad = upward(&g);
    assert!(
        bad.is_empty(),
        "modules name a module of a layer above their own ({}): {bad:?}",
        LAYERS.join(" -> ")
    );
}

#[test]
fn the_layer_check_finds_an_upward_edge() {
    let mut g = BTreeMap::new();
    for (a, b) in [("commands", "ops"), ("ops", "store"), ("store", "ui")] {
        g.entry(a.to_string())
            .or_insert_with(BTreeSet::new)
            .insert(b.to_string());
    }
    assert_eq!(upward(&g), Vec::<String>::new());
    g.entry("net".to_string())
        .or_insert_with(BTreeSet::new)
        .insert("ops".to_string());
    assert_eq!(upward(&g), vec!["net -> ops".to_string()]);
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.to_string())
            .or_insert_with(BTreeSet::new)
            .insert(b.to_string());
        g.entry(b.to_string()).or_insert_with(BTreeSet::new);
    }
    g.entry("d".to_string()).or_insert_with(BTreeSet::new);
    assert_eq!(cycle(&g).map(|c| c.join(">")).as_deref(), Some("a>b>c>a"));
    g.get_mut("c").map(|s| s.remove("a"));
    assert_eq!(cycle(&g), None);
}
