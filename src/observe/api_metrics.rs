//! [`ApiMetrics`]: the API's own counters, purchases by path and result, responses by class.
//!
//! - When the API decides a synchronous purchase, then `lockstock_api_purchases_total{path,
//!   result}` grows; a `(path, result)` pair appears once it has been counted.
//! - When the API answers a request, then `lockstock_api_responses_total{class}` grows for its
//!   status class; the five classes `1xx`..`5xx` are present from the start (at 0).

use axum::http::StatusCode;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Labels of `lockstock_api_purchases_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PurchaseLabels {
    /// `with-lock` or `without-lock`.
    path: &'static str,
    /// `fulfilled` or the reject reason.
    result: &'static str,
}

/// Labels of `lockstock_api_responses_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    /// `1xx` .. `5xx`.
    class: &'static str,
}

/// The status classes, by first digit.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The API's counters (see the module docs). Clones share the values.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    /// Purchases by path and result.
    purchases: Family<PurchaseLabels, Counter>,
    /// Responses by status class.
    responses: Family<ClassLabels, Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let responses = Family::default();
        for class in CLASSES {
            drop(responses.get_or_create(&ClassLabels { class }));
        }
        Self {
            purchases: Family::default(),
            responses,
        }
    }
}

impl ApiMetrics {
    /// Counts one purchase on `path` (`with-lock` / `without-lock`) ending in `result`.
    pub(crate) fn count_purchase(&self, path: &'static str, result: &'static str) {
        self.purchases
            .get_or_create(&PurchaseLabels { path, result })
            .inc();
    }

    /// Counts one response.
    pub(crate) fn count_response(&self, status: StatusCode) {
        let index = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses
            .get_or_create(&ClassLabels {
                class: CLASSES[index],
            })
            .inc();
    }

    /// Registers both families (`api_purchases`, `api_responses`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        // The registry appends the full stop to each help text.
        registry.register(
            "api_purchases",
            "Synchronous purchases by path (with-lock, without-lock) and result",
            self.purchases.clone(),
        );
        registry.register(
            "api_responses",
            "HTTP responses by status class",
            self.responses.clone(),
        );
    }
}
