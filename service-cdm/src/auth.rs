//! Who may read (docs/read-api.md, "Access"): with `API_TOKEN` set, every request under `/api`
//! must carry `Authorization: Bearer <token>`; without it, or with another token, the answer is
//! 401. `/health` and `/metrics` never ask (probes and scrapers), nor does `GET /`, which
//! serves only the dashboard's code: everything it shows comes from `/api`.
//!
//! The token is compared in constant time, as SHA-256 digests, so neither its bytes nor its
//! length can be learnt from how long a refusal takes. Neither the expected nor the offered
//! token is ever logged.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vault_runtime::Settings;

/// The bearer token the API requires, if any.
#[derive(Clone)]
pub struct Bearer {
    /// The digest of the configured token; `None`: the API is open.
    expected: Option<[u8; 32]>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("required", &self.expected.is_some())
            .finish()
    }
}

impl Bearer {
    pub fn from_settings(settings: &Settings) -> Self {
        let bearer = Self {
            expected: settings
                .api_token
                .as_ref()
                .map(|token| digest(token.expose())),
        };
        if bearer.expected.is_none() {
            tracing::warn!(
                "The read API answers anyone: API_TOKEN is not set. Set it to require \
                 `Authorization: Bearer <token>` on /api (docs/read-api.md, \"Access\")."
            );
        }
        bearer
    }

    /// Whether a request with this `Authorization` header value may read.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        let Some(offered) = authorization.and_then(bearer_token) else {
            return false;
        };
        bool::from(digest(offered).ct_eq(expected))
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive,
/// RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requiring(token: &str) -> Bearer {
        Bearer {
            expected: Some(digest(token)),
        }
    }

    #[test]
    fn only_the_configured_token_is_let_in() {
        let bearer = requiring("s3cret-token-of-some-length");
        assert!(bearer.allows(Some("Bearer s3cret-token-of-some-length")));
        assert!(bearer.allows(Some("bearer s3cret-token-of-some-length")));
        for refused in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cret-token-of-some-lengt"),
            Some("Bearer s3cret-token-of-some-length2"),
            Some("Basic s3cret-token-of-some-length"),
            Some("s3cret-token-of-some-length"),
        ] {
            assert!(!bearer.allows(refused), "{refused:?}");
        }
    }

    #[test]
    fn without_a_token_everyone_is_let_in() {
        let open = Bearer { expected: None };
        assert!(open.allows(None));
        assert!(open.allows(Some("Bearer anything")));
    }

    #[test]
    fn debug_shows_no_token() {
        let printed = format!("{:?}", requiring("s3cret-token-of-some-length"));
        assert!(!printed.contains("s3cret"), "{printed}");
    }
}
