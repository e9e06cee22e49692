//! Secrets stay out of help pages: `--help` names the variables that carry credentials but
//! never prints their values.

use crate::helpers::{BINARIES, command, run, subcommands};

/// Every help page of `binary` (the top one and each subcommand's, one level deep).
fn help_pages(binary: &str, env: &[(&str, &str)]) -> Vec<String> {
    let page = |path: &[&str]| {
        let mut help = command(binary);
        help.args(path).arg("--help").envs(env.iter().copied());
        let output = run(help);
        assert!(output.status.success(), "{binary} {path:?} --help failed");
        String::from_utf8(output.stdout).expect("help is UTF-8")
    };
    let top = page(&[]);
    let mut pages = vec![top.clone()];
    for sub in subcommands(&top) {
        pages.push(page(&[sub.as_str()]));
    }
    pages
}

/// With credentials in `DATABASE_URL`, `REDIS_URL`, `LOCK_REDIS_URLS` and `API_TOKEN`, no help
/// page of any binary shows them.
#[test]
fn help_never_prints_secret_values() {
    let env = [
        ("DATABASE_URL", "postgres://u:pg-hunter2@db.internal/x"),
        ("REDIS_URL", "redis://:redis-hunter2@cache.internal:6379"),
        (
            "LOCK_REDIS_URLS",
            "redis://:lock-hunter2@l1:6379,redis://l2:6379",
        ),
        ("API_TOKEN", "token-hunter2"),
    ];
    for binary in BINARIES {
        for page in help_pages(binary, &env) {
            assert!(
                !page.contains("hunter2"),
                "{binary} --help shows a secret:\n{page}"
            );
        }
    }
}
