//! Test environment: the real API on 127.0.0.1:0 over a throwaway `redis-server` and a fresh
//! migrated database, plus a real HTTP client and a Prometheus text checker.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use lockstock::{
    api::{ApiConfig, AppState, serve},
    queue::{JobQueue, QueueConfig},
    services::SharedRedis,
    store::OrderStore,
};
use lockstock_lock::{LockClient, LockConfig, LockOwner};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::redis_server::RedisServer;

/// How a test wants its API configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub work: Duration,
    pub token: Option<String>,
    pub lock_wait: Duration,
    pub body_limit: usize,
    pub request_timeout: Duration,
    /// `--enable-unsafe-demo`: on by default here, as the seed's scripts need it.
    pub unsafe_demo: bool,
    pub token_for_reads: bool,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub order_counts_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            work: Duration::from_millis(100),
            token: None,
            lock_wait: Duration::from_secs(10),
            body_limit: 4 * 1024,
            request_timeout: Duration::from_secs(30),
            unsafe_demo: true,
            token_for_reads: false,
            header_read_timeout: ApiConfig::default().header_read_timeout,
            max_connections: ApiConfig::default().max_connections,
            max_in_flight: ApiConfig::default().max_in_flight,
            order_counts_ttl: ApiConfig::default().order_counts_ttl,
        }
    }
}

/// One test's running API and everything behind it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub redis: RedisServer,
    pub prefix: String,
    pub store: OrderStore,
    pub pool: PgPool,
    pub settings: Settings,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Starts a Redis server and the API (default settings) over the test's database.
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, Settings::default()).await
    }

    /// Starts a Redis server and the API over the test's database.
    pub async fn spawn_with(pool: PgPool, settings: Settings) -> Self {
        let redis = RedisServer::start();
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let store = OrderStore::new(pool.clone());
        let state = build_state(&redis.url(), &prefix, store.clone(), &settings).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state, shutdown.clone()));
        Self {
            addr,
            client: reqwest::Client::new(),
            redis,
            prefix,
            store,
            pool,
            settings,
            shutdown,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The lock key prefix the API uses (workers of this test must use the same).
    pub fn lock_prefix(&self) -> String {
        format!("{}-locks", self.prefix)
    }

    /// A queue handle on the API's list for consumer `worker`.
    pub async fn queue(&self, worker: &str) -> JobQueue {
        JobQueue::connect(
            &self.redis.url(),
            QueueConfig::namespaced(&self.prefix).with_worker_id(worker),
        )
        .await
        .expect("connect the queue")
    }

    /// A lock client on the API's key space, owned by `owner`.
    pub async fn lock_client(&self, owner: &str) -> LockClient {
        let config = LockConfig::default()
            .with_prefix(self.lock_prefix())
            .expect("prefix")
            .with_owner(LockOwner::this_process(owner));
        LockClient::connect(&self.redis.url(), config)
            .await
            .expect("connect the lock client")
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET request")
    }

    /// POST `body` as JSON to `path`, with the configured token (if any).
    pub async fn post(&self, path: &str, body: Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(token) = &self.settings.token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("POST request")
    }

    /// GET `path` and decode the JSON answer, asserting the status.
    pub async fn get_json(&self, path: &str, status: StatusCode) -> Value {
        let response = self.get(path).await;
        json_of(response, status).await
    }

    /// The seed's reset step.
    pub async fn reset_stock(&self, product: i32, stock: i32) {
        let response = self
            .post(
                &format!("/stock/{product}/reset"),
                serde_json::json!({ "stock": stock }),
            )
            .await;
        let body = json_of(response, StatusCode::OK).await;
        assert_eq!(body["stock"], stock);
    }

    /// The stock as `GET /stock/{id}` reports it.
    pub async fn stock(&self, product: i32) -> i64 {
        let body = self
            .get_json(&format!("/stock/{product}"), StatusCode::OK)
            .await;
        body["stock"].as_i64().expect("stock is a number")
    }

    /// The database URL of this test's database (for child processes).
    pub fn database_url(&self) -> String {
        database_url(&self.pool)
    }

    /// Runs `lockctl <args>` on this test's Redis and keys (queue, dead letters, lock prefix);
    /// asserts it succeeded and returns its stdout.
    pub fn lockctl_on_keys(&self, args: &[&str]) -> String {
        let queue_key = format!("{}:orders:pending", self.prefix);
        let dead_key = format!("{}:orders:dead", self.prefix);
        let lock_prefix = self.lock_prefix();
        let redis_url = self.redis.url();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--redis-url", &redis_url, "--queue-key", &queue_key]);
        all.extend(["--dead-key", &dead_key, "--lock-prefix", &lock_prefix]);
        lockctl(&all)
    }

    /// Stops the server and waits for it to return.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("the server stops within 10 s")
                .expect("server task")
                .expect("server result");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs the real `lockctl <args>`; asserts it succeeded and returns its stdout.
pub fn lockctl(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args(args)
        .output()
        .expect("run lockctl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "lockctl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Builds the API state over `redis_url` with the test's key prefix.
pub async fn build_state(
    redis_url: &str,
    prefix: &str,
    store: OrderStore,
    settings: &Settings,
) -> AppState {
    let redis = SharedRedis::connect(redis_url)
        .await
        .expect("connect to the test redis");
    let config = ApiConfig {
        work: settings.work,
        lock_wait: settings.lock_wait,
        token: settings.token.clone(),
        body_limit: settings.body_limit,
        request_timeout: settings.request_timeout,
        enable_unsafe_demo: settings.unsafe_demo,
        token_for_reads: settings.token_for_reads,
        header_read_timeout: settings.header_read_timeout,
        max_connections: settings.max_connections,
        max_in_flight: settings.max_in_flight,
        order_counts_ttl: settings.order_counts_ttl,
        instance_id: "api-test".to_owned(),
        ..ApiConfig::default()
    };
    let queue = redis
        .queue(QueueConfig::namespaced(prefix).with_worker_id("api-test"))
        .expect("queue config");
    let locks = redis.lock_client(
        LockConfig::default()
            .with_prefix(format!("{prefix}-locks"))
            .expect("prefix")
            .with_owner(LockOwner::this_process("api-test")),
    );
    AppState::new(store, locks, queue, config)
}

/// The URL of the pool's database, built from DATABASE_URL with the test database's name.
pub fn database_url(pool: &PgPool) -> String {
    let database = pool
        .connect_options()
        .get_database()
        .expect("test database name")
        .to_owned();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/test exports it)");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL parses");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// Asserts the status and decodes the JSON body (with the body in the failure message).
pub async fn json_of(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("response body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?} for body {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub use crate::test_env::wait_for;

/// One parsed sample: metric name, labels, value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses Prometheus text format 0.0.4 strictly enough to catch malformed output: every sample
/// belongs to a family declared with `# TYPE` before it, names and labels are well formed, values
/// are floats, and every histogram's buckets are cumulative and end with `+Inf` equal to `_count`.
pub fn parse_prometheus(text: &str) -> Samples {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Samples::new();
    for (number, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default();
            assert!(valid_name(name), "bad family name, {}", at());
            if keyword == "TYPE" {
                let kind = parts.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad type, {}",
                    at()
                );
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "family declared twice, {}",
                    at()
                );
            } else {
                assert_eq!(keyword, "HELP", "unknown comment, {}", at());
            }
            continue;
        }
        let (name, labels, value) =
            parse_sample(line).unwrap_or_else(|| panic!("bad sample, {}", at()));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(&name)
            .to_owned();
        assert!(
            types.contains_key(&family),
            "sample before its # TYPE, {}",
            at()
        );
        assert!(
            samples.insert((name, labels), value).is_none(),
            "duplicate sample, {}",
            at()
        );
    }
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|((name, _), _)| name == &bucket)
            .map(|((_, labels), value)| {
                let le = labels.get("le").expect("bucket has le");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le is a float")
                };
                (bound, *value)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(!buckets.is_empty(), "histogram {family} has no buckets");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "histogram {family} buckets are not cumulative: {buckets:?}"
        );
        let last = buckets.last().expect("buckets");
        assert!(last.0.is_infinite(), "histogram {family} lacks +Inf");
        let count = samples
            .get(&(format!("{family}_count"), BTreeMap::new()))
            .unwrap_or_else(|| panic!("histogram {family} lacks _count"));
        assert_eq!(last.1, *count, "histogram {family}: +Inf != _count");
        assert!(
            samples.contains_key(&(format!("{family}_sum"), BTreeMap::new())),
            "histogram {family} lacks _sum"
        );
    }
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let bytes: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != '{' && bytes[i] != ' ' {
        i += 1;
    }
    let name: String = bytes[..i].iter().collect();
    if !valid_name(&name) {
        return None;
    }
    let mut labels = BTreeMap::new();
    if bytes.get(i) == Some(&'{') {
        i += 1;
        loop {
            if bytes.get(i) == Some(&'}') {
                i += 1;
                break;
            }
            let key_start = i;
            while i < bytes.len() && bytes[i] != '=' {
                i += 1;
            }
            let key: String = bytes.get(key_start..i)?.iter().collect();
            if !valid_name(&key) || bytes.get(i + 1) != Some(&'"') {
                return None;
            }
            i += 2;
            let mut value = String::new();
            loop {
                match *bytes.get(i)? {
                    '\\' => {
                        value.push(match *bytes.get(i + 1)? {
                            'n' => '\n',
                            '\\' => '\\',
                            '"' => '"',
                            _ => return None,
                        });
                        i += 2;
                    }
                    '"' => {
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            labels.insert(key, value);
            match *bytes.get(i)? {
                ',' => i += 1,
                '}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if bytes.get(i) != Some(&' ') {
        return None;
    }
    let value: String = bytes[i + 1..].iter().collect();
    let value = match value.as_str() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The value of sample `name{labels}`.
pub fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples.get(&(name.to_owned(), labels)).copied()
}
