//! The README's environment table is the binaries' own: every variable that a binary's `--help`
//! names is in the table with that binary, its flag and its default, and the table names no
//! variable the binaries do not read. Every binary takes `--log-format`.

use std::collections::{BTreeMap, BTreeSet};

use crate::helpers::{BINARIES, command, run, subcommands};

/// Variables the binaries read without a flag (so `--help` does not list them).
const WITHOUT_FLAG: [&str; 2] = ["RUST_LOG", "API_TOKEN"];

/// What `--help` says about one environment variable.
#[derive(Debug, Default)]
struct EnvVar {
    flag: String,
    default: Option<String>,
    binaries: BTreeSet<String>,
}

/// `binary args... --help`.
fn help(binary: &str, path: &[String]) -> String {
    let mut help = command(binary);
    help.args(path).arg("--help");
    let output = run(help);
    assert!(output.status.success(), "{binary} {path:?} --help failed");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// Every option block of a help page: the option's lines joined.
fn options(help: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') && line.starts_with("  ") {
            blocks.push(trimmed.to_owned());
        } else if let Some(block) = blocks.last_mut()
            && line.starts_with("  ")
        {
            block.push(' ');
            block.push_str(trimmed);
        }
    }
    blocks
}

/// The text between `[label: ` and the next `]` in `block`.
fn bracket<'a>(block: &'a str, label: &str) -> Option<&'a str> {
    let start = block.find(&format!("[{label}: "))? + label.len() + 3;
    let end = block[start..].find(']')? + start;
    Some(&block[start..end])
}

/// Walks every help page of `binary` and records its variables.
fn collect(binary: &str, path: Vec<String>, vars: &mut BTreeMap<String, EnvVar>) {
    let page = help(binary, &path);
    for block in options(&page) {
        let Some(env) = bracket(&block, "env") else {
            continue;
        };
        let name = env.split('=').next().unwrap_or(env).to_owned();
        let flag = block
            .split([' ', ','])
            .find(|token| token.starts_with("--"))
            .unwrap_or_default()
            .to_owned();
        let var = vars.entry(name.clone()).or_default();
        assert!(
            var.flag.is_empty() || var.flag == flag,
            "{name} is {flag} in {binary} {path:?} but {} elsewhere",
            var.flag
        );
        var.flag = flag;
        var.default = bracket(&block, "default").map(str::to_owned);
        var.binaries.insert(binary.to_owned());
    }
    for sub in subcommands(&page) {
        let mut next = path.clone();
        next.push(sub);
        collect(binary, next, vars);
    }
}

/// The README's environment table: variable -> the whole row.
fn readme_rows() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    readme
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let name = &rest[..rest.find('`')?];
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .then(|| (name.to_owned(), line.to_owned()))
        })
        .collect()
}

/// Every variable in any binary's `--help` has a README row naming its flag, its default and
/// each binary that reads it; every row is a variable a binary reads.
#[test]
fn the_readme_table_lists_every_environment_variable_with_its_flag_and_default() {
    let mut vars = BTreeMap::new();
    for binary in BINARIES {
        collect(binary, Vec::new(), &mut vars);
    }
    let rows = readme_rows();
    for (name, var) in &vars {
        let row = rows
            .get(name)
            .unwrap_or_else(|| panic!("README has no row for {name}: {var:?}"));
        assert!(
            row.contains(&format!("`{}`", var.flag)),
            "{name}: flag {} missing from {row}",
            var.flag
        );
        if let Some(default) = &var.default {
            assert!(
                row.contains(&format!("`{default}`")),
                "{name}: default {default} missing from {row}"
            );
        }
        for binary in &var.binaries {
            assert!(row.contains(binary), "{name}: {binary} missing from {row}");
        }
    }
    for name in rows.keys() {
        assert!(
            vars.contains_key(name) || WITHOUT_FLAG.contains(&name.as_str()),
            "README lists {name}, which no binary reads"
        );
    }
}

/// Every binary takes `--log-format` with `LOG_FORMAT` as its variable.
#[test]
fn every_binary_takes_log_format() {
    for binary in BINARIES {
        let page = help(binary, &[]);
        assert!(
            page.contains("--log-format") && page.contains("env: LOG_FORMAT"),
            "{binary}: {page}"
        );
    }
}
