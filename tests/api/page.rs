//! The live page end to end: headless Chromium loads `/`, runs its script against the real API,
//! and the rendered DOM shows data from Postgres and Redis. A screenshot is saved for people.
//!
//! Chromium comes from Debian's `chromium` package (`scripts/test` installs it when missing).
//! Set `LOCKSTOCK_SKIP_BROWSER=1` to skip this test on a machine without it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use lockstock_lock::LockOptions;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{Settings, TestApp, json_of};

/// The chromium executable, if installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|candidate| candidate.is_file())
            })
        })
}

/// Runs headless Chromium on `url` with `extra` flags and a fresh profile; returns stdout.
fn run_chromium(binary: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempdir("chromium-profile");
    let output = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "chromium failed ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The `data-points` of the chart `<svg id="{id}">` (points of its fullest series).
fn chart_points(dom: &str, id: &str) -> usize {
    let at = dom
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let start = dom[..at].rfind('<').unwrap();
    let tag = &dom[start..start + dom[start..].find('>').unwrap()];
    tag.split(r#"data-points=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("chart {id} has no data-points: {tag}"))
}

/// The value shown in a chart legend after the series name `name`.
fn legend_value(dom: &str, name: &str) -> String {
    let marker = format!(r#"{name} <span class="val">"#);
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no legend entry {name}"))
        + marker.len();
    dom[at..at + dom[at..].find('<').unwrap()].to_owned()
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lockstock-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Opening `/` in a real browser shows the products with their stock, recent orders with their
/// outcomes, the held lock and the queue depth, all fetched from the running API, and charts of
/// decided orders, lock wait/hold quantiles and queue depth sampled on its refreshes; an outcome
/// reason a newer build wrote is shown as stored.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn live_page_renders_real_data_in_headless_chromium(pool: PgPool) {
    let Some(binary) = chromium() else {
        if std::env::var_os("LOCKSTOCK_SKIP_BROWSER").is_some() {
            eprintln!("skipping: chromium not installed and LOCKSTOCK_SKIP_BROWSER is set");
            return;
        }
        panic!(
            "chromium is not on PATH: run scripts/test (it installs Debian's chromium), \
             `apt-get install chromium`, or set LOCKSTOCK_SKIP_BROWSER=1"
        );
    };

    // Arrange: a sale and an out-of-stock answer, two queued orders, a held lock.
    let app = TestApp::spawn_with(
        pool,
        Settings {
            work: Duration::ZERO,
            ..Settings::default()
        },
    )
    .await;
    app.reset_stock(2, 1).await;
    let sold = json_of(
        app.post("/purchase/with-lock/2", json!({})).await,
        StatusCode::OK,
    )
    .await;
    let refused = json_of(
        app.post("/purchase/with-lock/2", json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    for _ in 0..2 {
        app.post("/orders", json!({ "product_id": 3, "quantity": 1 }))
            .await;
    }
    // An outcome a newer build wrote, with a reason this build does not know.
    let newer = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO orders (id, product_id, quantity, status, reason, worker)
         VALUES ($1, 1, 1, 'rejected', 'fraud_suspected', 'worker-v2')",
    )
    .bind(newer)
    .execute(&app.pool)
    .await
    .unwrap();
    let holder = app.lock_client("page-demo-worker").await;
    let guard = holder
        .acquire(
            "product:1",
            &LockOptions::with_ttl(Duration::from_secs(60)),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    let url = app.url("/");

    // Act: the DOM after the page's script has fetched and rendered.
    let dom = {
        let binary = binary.clone();
        let url = url.clone();
        tokio::task::spawn_blocking(move || run_chromium(&binary, &url, &["--dump-dom".into()]))
            .await
            .unwrap()
    };

    // Assert
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the script never finished a refresh:\n{dom}"
    );
    for name in ["iPhone 15", "MacBook Pro", "AirPods Pro"] {
        assert!(dom.contains(name), "product {name} missing:\n{dom}");
    }
    assert!(
        dom.contains(r#"<td class="num" data-product-id="2">0</td>"#),
        "product 2's stock (0 after the sale) missing:\n{dom}"
    );
    let sold_id = &sold["order_id"].as_str().unwrap()[..8];
    let refused_id = &refused["order_id"].as_str().unwrap()[..8];
    assert!(
        dom.contains(sold_id) && dom.contains(refused_id),
        "orders missing:\n{dom}"
    );
    assert!(dom.contains("rejected (out_of_stock)"), "{dom}");
    assert!(
        dom.contains(&newer.to_string()[..8]) && dom.contains("rejected (fraud_suspected)"),
        "the order with a reason from a newer build missing:\n{dom}"
    );
    assert!(
        !dom.contains(r#"class="status err""#),
        "a refresh failed:\n{dom}"
    );
    assert!(
        dom.contains(r#"<td class="fulfilled">fulfilled</td>"#),
        "{dom}"
    );
    assert!(dom.contains("product:1"), "held lock missing:\n{dom}");
    assert!(
        dom.contains("page-demo-worker"),
        "lock owner missing:\n{dom}"
    );
    assert!(
        dom.contains(r#"<div class="v" id="q-pending">2</div>"#),
        "queue depth missing:\n{dom}"
    );
    // The charts: each sampled on several refreshes, drawn as SVG paths with points.
    for chart in ["chart-orders", "chart-locks", "chart-queue"] {
        let points = chart_points(&dom, chart);
        assert!(points >= 2, "{chart} has {points} points:\n{dom}");
    }
    for series in ["fulfilled", "rejected", "wait p99", "hold p99", "pending"] {
        let path = format!(r#"data-series="{series}""#);
        let at = dom
            .find(&path)
            .unwrap_or_else(|| panic!("no {series} path:\n{dom}"));
        let tag = &dom[dom[..at].rfind('<').unwrap()..at];
        assert!(
            tag.contains(r#"d="M"#),
            "{series}'s path has no points: {tag}"
        );
    }
    assert!(
        dom.contains("fulfilled <span class=\"val\">") && dom.contains("(1 total)"),
        "decided totals missing from the orders chart:\n{dom}"
    );
    let wait = legend_value(&dom, "wait p99");
    assert!(
        wait.ends_with(" ms") && wait != "– ms",
        "lock wait p99 {wait:?}"
    );

    // A screenshot for people (look at it: target/screenshots/live-page.png).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("live-page.png");
    let _ = std::fs::remove_file(&shot);
    let extra = vec![
        format!("--screenshot={}", shot.display()),
        "--window-size=1400,900".to_owned(),
    ];
    // Purchases keep landing while the screenshot's page samples, so its charts move.
    let load = {
        let client = app.client.clone();
        let purchase = app.url("/purchase/with-lock/3");
        tokio::spawn(async move {
            loop {
                let _ = client.post(&purchase).send().await;
            }
        })
    };
    tokio::task::spawn_blocking(move || run_chromium(&binary, &url, &extra))
        .await
        .unwrap();
    load.abort();
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    eprintln!("screenshot saved to {}", shot.display());
    guard.release().await.unwrap();
}
