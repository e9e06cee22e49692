//! Who may change things: the bearer token on mutating routes, and where the server may listen.
//!
//! - When an API token is configured, then a handler that takes [`Authorized`] answers 401
//!   (with `WWW-Authenticate: Bearer`) unless the request carries `Authorization: Bearer
//!   <token>`; the scheme is matched without regard to case (`BEARER x` works, RFC 9110 §11.1);
//!   the comparison takes the same time wherever the first difference is.
//! - When the API also requires the token for reads ([`super::ApiConfig::token_for_reads`]), then
//!   `guard.rs` applies the same check to every route but `/`, `/healthz` and `/readyz`.
//! - When no token is configured, then [`Authorized`] lets every request through, and
//!   [`check_bind`] refuses any listen address that is not loopback unless the operator
//!   explicitly allowed a public, unauthenticated server.
//! - The token itself is never logged or echoed; `Debug` of the config prints `<set>`.
//! - Not guaranteed: transport security. Put a TLS-terminating proxy in front when the token
//!   crosses a network.

use std::net::SocketAddr;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};
use subtle::ConstantTimeEq;

use super::{AppState, error::ApiError};

/// Proof that the request may mutate state (see the module docs). Take it as a handler argument.
#[derive(Debug, Clone, Copy)]
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.config().token.as_deref() else {
            return Ok(Authorized);
        };
        if bearer_matches(&parts.headers, expected) {
            Ok(Authorized)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// Whether `headers` carry `Authorization: Bearer <expected>` (scheme in any case).
pub(crate) fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, token)| constant_time_eq(token.trim().as_bytes(), expected.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths (`subtle`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Why the server refuses to listen on an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// A non-loopback address without a token and without the explicit override.
    #[error(
        "refusing to listen on {0} without API_TOKEN: mutating routes would be open to the network \
         (set API_TOKEN, bind to 127.0.0.1, or pass --allow-public)"
    )]
    PublicWithoutToken(SocketAddr),
}

/// Checks a listen address against the loopback rule (see the module docs).
///
/// - When `has_token` is true, or every address is loopback, or `allow_public` is true, then
///   `Ok`.
/// - Otherwise [`BindError::PublicWithoutToken`] naming the first public address.
pub fn check_bind(
    addresses: &[SocketAddr],
    has_token: bool,
    allow_public: bool,
) -> Result<(), BindError> {
    if has_token || allow_public {
        return Ok(());
    }
    match addresses.iter().find(|addr| !addr.ip().is_loopback()) {
        Some(public) => Err(BindError::PublicWithoutToken(*public)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback is always fine; public needs a token or the override.
    #[test]
    fn public_addresses_need_a_token_or_the_override() {
        let loopback: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:3000".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:3000".parse().unwrap();
        assert!(check_bind(&[loopback, v6_loopback], false, false).is_ok());
        assert_eq!(
            check_bind(&[loopback, public], false, false),
            Err(BindError::PublicWithoutToken(public))
        );
        assert!(check_bind(&[public], true, false).is_ok());
        assert!(check_bind(&[public], false, true).is_ok());
    }

    /// The scheme is case-insensitive; the token is not.
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        for value in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR  tok "] {
            assert!(bearer_matches(&with(value), "tok"), "{value}");
        }
        for value in ["Bearer TOK", "Basic tok", "tok", "Bearertok"] {
            assert!(!bearer_matches(&with(value), "tok"), "{value}");
        }
        assert!(!bearer_matches(&HeaderMap::new(), "tok"));
    }

    #[test]
    fn token_comparison_needs_equal_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
