//! The option table has one source, the clap definitions in `config.rs`
//! (which also make `--help`): the README's tables and
//! `deploy/env.example` are checked against it here, so a copy cannot
//! drift. Issue #17, "One source for the option table".

use std::collections::BTreeMap;

use discord_bot_backend::config::{OptionDoc, options};

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// `| `--flag` | `ENV` | default | meaning |` rows of the README, by flag.
fn readme_rows() -> BTreeMap<String, (String, String)> {
    let mut rows = BTreeMap::new();
    for line in read("README.md").lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`--") {
            continue;
        }
        let flag = cells[1].trim_matches('`').to_string();
        let env = cells[2].trim_matches('`').to_string();
        let previous = rows.insert(flag.clone(), (env, cells[3].to_string()));
        assert!(previous.is_none(), "{flag} is in the README twice");
    }
    rows
}

#[test]
fn the_readme_documents_every_option_with_its_env_and_default() {
    let rows = readme_rows();
    for OptionDoc { flag, env, default } in options() {
        let (readme_env, readme_default) = rows
            .get(&flag)
            .unwrap_or_else(|| panic!("{flag} is missing from the README's option tables"));
        assert_eq!(
            Some(readme_env),
            env.as_ref(),
            "{flag}: environment variable"
        );
        match default.filter(|d| !d.is_empty()) {
            Some(default) => assert_eq!(
                readme_default,
                &format!("`{default}`"),
                "{flag}: the README's default"
            ),
            None => assert!(
                readme_default.starts_with("none"),
                "{flag} has no default, the README says {readme_default}"
            ),
        }
    }
}

#[test]
fn the_readme_documents_no_option_that_does_not_exist() {
    let known: Vec<String> = options().into_iter().map(|o| o.flag).collect();
    for flag in readme_rows().keys() {
        assert!(
            known.contains(flag),
            "the README documents {flag}, which does not exist"
        );
    }
}

#[test]
fn env_example_names_every_option_with_its_default() {
    let example = read("deploy/env.example");
    for OptionDoc { flag, env, default } in options() {
        let env = env.unwrap();
        assert!(
            example.contains(&format!("# {flag}")),
            "deploy/env.example does not explain {flag}"
        );
        let line = example
            .lines()
            .find(|l| l.trim_start_matches('#').starts_with(&format!("{env}=")))
            .unwrap_or_else(|| panic!("deploy/env.example has no {env}= line"));
        if let Some(default) = default.filter(|d| !d.is_empty()) {
            // A commented-out line shows the default; a set one is a choice.
            if line.starts_with('#') {
                assert_eq!(line, format!("#{env}={default}"), "{flag}");
            }
        }
    }
}
