//! The folders of `src/` are layers (ARCHITECTURE.md, "Code map"): each may
//! import only from the layers below it. A `use` that runs upward fails here,
//! before it becomes an import circle nobody can untangle.

use std::fs;
use std::path::Path;

/// Each folder and the folders it must never import from.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("observe", &["api", "http", "store", "discord", "config"]),
    ("discord", &["api", "http", "store", "config"]),
    ("store", &["api", "http", "config"]),
    ("events", &["api", "http", "store", "config"]),
    ("http", &["api", "store", "discord", "config"]),
    ("api", &["config"]),
    (
        "webhooks",
        &["api", "http", "store", "events", "discord", "config"],
    ),
];

/// Every `crate::<module>` path in the `.rs` files under `dir`, with where.
fn crate_paths(dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            crate_paths(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let module: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push((module, format!("{}:{}", path.display(), n + 1)));
            }
        }
    }
}

#[test]
fn no_folder_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = Vec::new();
    for (folder, forbidden) in FORBIDDEN {
        let mut found = Vec::new();
        crate_paths(&src.join(folder), &mut found);
        assert!(
            !found.is_empty() || *folder == "observe",
            "{folder} has no imports at all?"
        );
        for (module, place) in found {
            if forbidden.contains(&module.as_str()) {
                upward.push(format!("{place}: {folder} uses crate::{module}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run upward:\n{}",
        upward.join("\n")
    );
}

#[test]
fn every_folder_of_src_has_a_place_in_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                FORBIDDEN.iter().any(|(folder, _)| *folder == name),
                "src/{name} is not in FORBIDDEN: say which layers it may not import"
            );
        }
    }
}
