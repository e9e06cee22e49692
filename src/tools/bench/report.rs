//! One benchmark result row, printed as a table line or a JSON object.

use serde::Serialize;

/// A scenario's figures. Fields that do not apply to a scenario are `None` and omitted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario name (`raw`, `uncontended`, ...).
    pub scenario: String,
    /// Operations per second (what an operation is depends on the scenario).
    pub ops_per_sec: f64,
    /// Median latency of one operation, µs.
    pub p50_us: u64,
    /// 99th-percentile latency of one operation, µs.
    pub p99_us: u64,
    /// Commands Redis processed per operation (`INFO stats` delta; script-internal calls count).
    pub redis_cmds_per_op: f64,
    /// Client round trips (commands sent by the client) per operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trips_per_op: Option<f64>,
    /// Total operations measured.
    pub ops: u64,
    /// Owner switches per second (contended only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_switches_per_sec: Option<f64>,
    /// Median time from a release to the next owner's acquisition, µs (contended only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_wait_p50_us: Option<u64>,
    /// 99th percentile of the same, µs (contended only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_wait_p99_us: Option<u64>,
    /// Fewest acquisitions by one contender (contended only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_per_client: Option<u64>,
    /// Most acquisitions by one contender (contended only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_client: Option<u64>,
    /// Ratio of this scenario's rate to its target reference measured in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_raw: Option<f64>,
    /// Free-form note (what an op is, settings).
    pub note: String,
}

impl Report {
    /// The table header matching [`Report::table_row`].
    pub fn table_header() -> String {
        format!(
            "{:<19} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9}  {}",
            "scenario",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "cmds/op",
            "rtt/op",
            "switch/s",
            "sw p99",
            "min/max",
            "note"
        )
    }

    /// One table line.
    pub fn table_row(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        format!(
            "{:<19} {:>12.0} {:>9} {:>9} {:>9.2} {:>9} {:>10} {:>9} {:>9}  {}",
            self.scenario,
            self.ops_per_sec,
            self.p50_us,
            self.p99_us,
            self.redis_cmds_per_op,
            opt(self.round_trips_per_op.map(|v| format!("{v:.2}"))),
            opt(self.owner_switches_per_sec.map(|v| format!("{v:.0}"))),
            opt(self.switch_wait_p99_us.map(|v| v.to_string())),
            opt(match (self.min_per_client, self.max_per_client) {
                (Some(min), Some(max)) if max > 0 =>
                    Some(format!("{:.2}", min as f64 / max as f64)),
                _ => None,
            }),
            self.note
        )
    }
}
