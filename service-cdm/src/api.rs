//! The read API (docs/contract.md §6.4) and the dashboard's data, served by service-cdm beside
//! `/health` and `/metrics`; described route by route in `docs/openapi.json`.
//!
//! Everything under `/api` is routed here by hand rather than by warp filters, so that every
//! answer — an unknown path, a wrong method, a malformed id — is a JSON body with the right
//! status, and so that path segments are percent-decoded (tag names have spaces and Cyrillic).
//! The API only reads: every query is a `SELECT` on sessions that are read-only, as the
//! read-only role when `vaultctl migrate` made one (`read_only`). With `API_TOKEN` set, every
//! request under `/api` must carry it (`auth`). `HEAD` is answered like `GET` (the server
//! sends no body), since uptime checkers use it.

use std::sync::Arc;

use diesel::sql_types::{BigInt, Bool, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use tokio::sync::Semaphore;
use uuid::Uuid;
use vault_core::HashKey;
use vault_runtime::{Context, PgPool, Routes};
use warp::http::{Method, StatusCode};
use warp::{Filter, Reply};

use crate::auth::Bearer;
use crate::dashboard;
use crate::overview::Overview;
use crate::read_only;
use crate::tables::CounterTable;
use crate::tags::{self, store::RuleStatus};

/// The page size when `limit` is absent, and the largest accepted.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// The OpenAPI document of these routes, served at `/api/v1/openapi.json`.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Why a request gets no data: the status and the JSON body `{"error", "message"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header with the configured `API_TOKEN` (401).
    #[error("this API needs `Authorization: Bearer <API_TOKEN>`")]
    Unauthorized,
    /// A malformed id, limit, cursor or query string (400); `code` names which.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// An unknown route or tag (404).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// A known route asked with another method than GET or HEAD (405).
    #[error("{method} is not allowed here; the API only answers GET and HEAD")]
    MethodNotAllowed { method: Method },
    /// The warehouse could not be read (500); the cause goes to the log, not to the client.
    #[error("the warehouse could not be read")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } | Self::NotFound { code, .. } => code,
            Self::Unauthorized => "unauthorized",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Internal(_) => "internal_error",
        }
    }

    fn into_reply(self) -> Box<dyn Reply> {
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "A read API request failed.");
        }
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
        };
        let reply = warp::reply::with_status(warp::reply::json(&body), self.status());
        match self {
            Self::MethodNotAllowed { .. } => {
                Box::new(warp::reply::with_header(reply, "allow", "GET, HEAD"))
            }
            Self::Unauthorized => Box::new(warp::reply::with_header(
                reply,
                "www-authenticate",
                r#"Bearer realm="vaultline""#,
            )),
            _ => Box::new(reply),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Internal(error.into())
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

/// A route of the API, with its decoded path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    UserCounters(String),
    UserTags(String),
    Tags,
    TagUsers(String),
    Pipeline,
    PipelineHistory,
    Summary,
    OpenApi,
}

impl Route {
    /// The route of a raw (percent-encoded) path such as `/api/v1/tags/Pizza%20Lover/users`.
    pub fn of(path: &str) -> Result<Self, ApiError> {
        let not_found = || ApiError::NotFound {
            code: "not_found",
            message: format!("no route {path}; see /api/v1/openapi.json"),
        };
        let path = path.strip_suffix('/').unwrap_or(path);
        let raw: Vec<&str> = path.split('/').skip(1).collect();
        let mut segments = Vec::with_capacity(raw.len());
        for segment in raw {
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| ApiError::bad("invalid_path", "the path is not UTF-8"))?;
            segments.push(decoded.into_owned());
        }
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["api", "v1", "users", user, "counters"] => Ok(Self::UserCounters((*user).to_owned())),
            ["api", "v1", "users", user, "tags"] => Ok(Self::UserTags((*user).to_owned())),
            ["api", "v1", "tags"] => Ok(Self::Tags),
            // Postgres text cannot hold NUL: such a name can be no tag's, and asking the
            // warehouse would only earn an encoding error.
            ["api", "v1", "tags", tag, "users"] if tag.contains('\0') => Err(ApiError::bad(
                "invalid_tag",
                "a tag name cannot contain a NUL character",
            )),
            ["api", "v1", "tags", tag, "users"] if !tag.is_empty() => {
                Ok(Self::TagUsers((*tag).to_owned()))
            }
            ["api", "v1", "pipeline"] => Ok(Self::Pipeline),
            ["api", "v1", "pipeline", "history"] => Ok(Self::PipelineHistory),
            ["api", "v1", "summary"] => Ok(Self::Summary),
            ["api", "v1", "openapi.json"] => Ok(Self::OpenApi),
            _ => Err(not_found()),
        }
    }
}

/// `{user}`: a source user id (24 hex digits) or a user hub key (a uuid), as its hub key.
pub fn parse_user(text: &str) -> Result<Uuid, ApiError> {
    if text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(HashKey::of(text).as_uuid());
    }
    if text.len() == 36 {
        if let Ok(uuid) = Uuid::parse_str(text) {
            return Ok(uuid);
        }
    }
    Err(ApiError::bad(
        "invalid_user",
        format!("`{text}` is neither a source user id (24 hex digits) nor a user hub key (a uuid)"),
    ))
}

/// One page's position: how many holders, after which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub after: Option<Uuid>,
}

impl Page {
    /// Reads `limit` (1..=1000, default 100) and `after` (a cursor from an earlier page) from
    /// a raw query string; other parameters are ignored.
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::bad("invalid_query", "the query string is malformed"))?;
        let mut page = Page {
            limit: DEFAULT_LIMIT,
            after: None,
        };
        for (name, value) in pairs {
            match name.as_str() {
                "limit" => {
                    page.limit = value
                        .parse()
                        .ok()
                        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                        .ok_or_else(|| {
                            ApiError::bad(
                                "invalid_limit",
                                format!("limit `{value}` is not a number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                "after" => page.after = Some(decode_cursor(&value)?),
                _ => {}
            }
        }
        Ok(page)
    }
}

/// The cursor after a holder: the 32 hex digits of its hub key. Opaque to clients.
pub fn encode_cursor(user: Uuid) -> String {
    user.simple().to_string()
}

pub fn decode_cursor(text: &str) -> Result<Uuid, ApiError> {
    let malformed = || {
        ApiError::bad(
            "invalid_cursor",
            format!("cursor `{text}` is not one this API gave out (use `next` of a page)"),
        )
    };
    if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(malformed());
    }
    Uuid::try_parse(text).map_err(|_| malformed())
}

/// The routes: the dashboard at `/`, the API under `/api`.
pub fn routes(context: &Context) -> Routes {
    // A pool of its own, read-only, half the size of the batches' (`read_only`): a burst of
    // reads never holds up the consume loop.
    let readers = (context.settings.postgres.pool_size as usize / 2).max(1);
    let api = Arc::new(Api {
        pool: read_only::pool(&context.settings, readers as u32),
        readers: Semaphore::new(readers),
        overview: Overview::new(&context.settings),
    });
    let bearer = Bearer::from_settings(&context.settings);
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let api_routes = warp::path("api")
        .and(warp::path::full())
        .and(warp::method())
        .and(query)
        .and(warp::header::headers_cloned())
        .then(
            move |path: warp::path::FullPath,
                  method: Method,
                  query: String,
                  headers: warp::http::HeaderMap| {
                let api = api.clone();
                // Before anything else, so that without the token not even which routes
                // exist can be learnt. (A header that is not text is no token.)
                let authorization = headers
                    .get(warp::http::header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok());
                let allowed = bearer.allows(authorization);
                async move {
                    if !allowed {
                        return ApiError::Unauthorized.into_reply();
                    }
                    match api.answer(path.as_str(), &method, &query).await {
                        Ok(reply) => reply,
                        Err(error) => error.into_reply(),
                    }
                }
            },
        );
    dashboard::route().or(api_routes).unify().boxed()
}

/// What the API reads from.
#[derive(Debug)]
struct Api {
    pool: PgPool,
    /// How many requests may hold a pooled connection at once.
    readers: Semaphore,
    /// The cached aggregates and the pipeline sampler behind the dashboard.
    overview: Overview,
}

impl Api {
    async fn answer(
        &self,
        path: &str,
        method: &Method,
        query: &str,
    ) -> Result<Box<dyn Reply>, ApiError> {
        let route = Route::of(path)?;
        // HEAD goes through GET's work: the server drops the body and keeps the headers.
        if method != Method::GET && method != Method::HEAD {
            return Err(ApiError::MethodNotAllowed {
                method: method.clone(),
            });
        }
        if route == Route::OpenApi {
            return Ok(Box::new(warp::reply::with_header(
                OPENAPI,
                "content-type",
                "application/json",
            )));
        }
        // From memory (the service's own samples): no reader slot needed.
        if route == Route::Pipeline {
            return Ok(json(&*self.overview.pipeline().await));
        }
        if route == Route::PipelineHistory {
            return Ok(json(&self.overview.pipeline_history().await));
        }
        let _reader = self.readers.acquire().await.map_err(anyhow::Error::from)?;
        let body = match route {
            Route::UserCounters(user) => json(&self.user_counters(parse_user(&user)?).await?),
            Route::UserTags(user) => json(&self.user_tags(parse_user(&user)?).await?),
            Route::Tags => json(&self.tags().await?),
            Route::TagUsers(tag) => json(&self.tag_users(&tag, Page::from_query(query)?).await?),
            Route::Summary => json(&*self.overview.summary(&self.pool).await?),
            Route::Pipeline | Route::PipelineHistory | Route::OpenApi => {
                unreachable!("answered above")
            }
        };
        Ok(body)
    }

    async fn user_counters(&self, user: Uuid) -> Result<UserCounters, ApiError> {
        let mut conn = self.pool.get().await.map_err(anyhow::Error::from)?;
        // The same query on both datamarts; each row type names its key and label columns.
        let of = |CounterTable { table, key, name }: CounterTable| {
            format!(
                "SELECT {key}, {name}, order_cnt FROM {table} \
                 WHERE user_id = $1 AND order_cnt > 0 ORDER BY order_cnt DESC, {name}, {key}"
            )
        };
        let products = diesel::sql_query(of(CounterTable::PRODUCTS))
            .bind::<SqlUuid, _>(user)
            .load(&mut conn)
            .await?;
        let categories = diesel::sql_query(of(CounterTable::CATEGORIES))
            .bind::<SqlUuid, _>(user)
            .load(&mut conn)
            .await?;
        Ok(UserCounters {
            user_id: user,
            products,
            categories,
        })
    }

    async fn user_tags(&self, user: Uuid) -> Result<UserTags, ApiError> {
        let mut conn = self.pool.get().await.map_err(anyhow::Error::from)?;
        let tags = diesel::sql_query(
            "SELECT tag, order_cnt, granted_at FROM cdm.user_tags WHERE user_id = $1 ORDER BY tag",
        )
        .bind::<SqlUuid, _>(user)
        .load(&mut conn)
        .await?;
        Ok(UserTags {
            user_id: user,
            tags,
        })
    }

    async fn tags(&self) -> Result<Tags, ApiError> {
        let holders = self.overview.holders(&self.pool).await?;
        let mut conn = self.pool.get().await.map_err(anyhow::Error::from)?;
        let rules = tags::store::statuses(&mut conn).await?;
        let tags = rules
            .into_iter()
            .map(|status| TagStatus {
                holders: holders.get(&status.rule.tag).copied().unwrap_or(0),
                status,
            })
            .collect();
        Ok(Tags {
            tags,
            holders_as_of: self.overview.holders_as_of(),
        })
    }

    async fn tag_users(&self, tag: &str, page: Page) -> Result<TagUsers, ApiError> {
        let mut conn = self.pool.get().await.map_err(anyhow::Error::from)?;
        // One more than the page holds, to know whether there is a next page.
        let fetch = page.limit + 1;
        let mut users: Vec<Holder> = match page.after {
            None => {
                diesel::sql_query(
                    "SELECT user_id, order_cnt, granted_at FROM cdm.user_tags \
                 WHERE tag = $1 ORDER BY user_id LIMIT $2",
                )
                .bind::<Text, _>(tag)
                .bind::<BigInt, _>(fetch)
                .load(&mut conn)
                .await?
            }
            Some(after) => {
                diesel::sql_query(
                    "SELECT user_id, order_cnt, granted_at FROM cdm.user_tags \
                 WHERE tag = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
                )
                .bind::<Text, _>(tag)
                .bind::<SqlUuid, _>(after)
                .bind::<BigInt, _>(fetch)
                .load(&mut conn)
                .await?
            }
        };
        if users.is_empty() {
            let known: Flag = diesel::sql_query(
                "SELECT EXISTS (SELECT 1 FROM cdm.tag_rules WHERE tag = $1) \
                     OR EXISTS (SELECT 1 FROM cdm.user_tags WHERE tag = $1) AS flag",
            )
            .bind::<Text, _>(tag)
            .get_result(&mut conn)
            .await?;
            if !known.flag {
                return Err(ApiError::NotFound {
                    code: "unknown_tag",
                    message: format!("no rule and no holder for the tag `{tag}`"),
                });
            }
        }
        let more = users.len() as i64 > page.limit;
        users.truncate(page.limit as usize);
        let next = more
            .then(|| users.last().map(|last| encode_cursor(last.user_id)))
            .flatten();
        Ok(TagUsers {
            tag: tag.to_owned(),
            users,
            next,
        })
    }
}

fn json<T: Serialize>(body: &T) -> Box<dyn Reply> {
    Box::new(warp::reply::json(body))
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// `GET /api/v1/users/{user}/counters`.
#[derive(Debug, Serialize)]
struct UserCounters {
    user_id: Uuid,
    products: Vec<ProductCounter>,
    categories: Vec<CategoryCounter>,
}

#[derive(Debug, Serialize, QueryableByName)]
struct ProductCounter {
    #[diesel(sql_type = SqlUuid)]
    product_id: Uuid,
    #[diesel(sql_type = Text)]
    product_name: String,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
}

#[derive(Debug, Serialize, QueryableByName)]
struct CategoryCounter {
    #[diesel(sql_type = SqlUuid)]
    category_id: Uuid,
    #[diesel(sql_type = Text)]
    category_name: String,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
}

/// `GET /api/v1/users/{user}/tags`.
#[derive(Debug, Serialize)]
struct UserTags {
    user_id: Uuid,
    tags: Vec<UserTag>,
}

#[derive(Debug, Serialize, QueryableByName)]
struct UserTag {
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
    #[diesel(sql_type = Timestamptz)]
    granted_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /api/v1/tags`.
#[derive(Debug, Serialize)]
struct Tags {
    tags: Vec<TagStatus>,
    /// When the holder counts were taken (they are cached for a few seconds).
    holders_as_of: Option<chrono::DateTime<chrono::Utc>>,
}

/// A rule with whether it is applied, and how many users hold its tag (cached).
#[derive(Debug, Serialize)]
struct TagStatus {
    #[serde(flatten)]
    status: RuleStatus,
    holders: i64,
}

/// `GET /api/v1/tags/{tag}/users`.
#[derive(Debug, Serialize)]
struct TagUsers {
    tag: String,
    users: Vec<Holder>,
    /// The cursor of the next page (`after=`), absent on the last page.
    next: Option<String>,
}

#[derive(Debug, Serialize, QueryableByName)]
struct Holder {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Integer)]
    order_cnt: i32,
    #[diesel(sql_type = Timestamptz)]
    granted_at: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(error: ApiError) -> &'static str {
        error.code()
    }

    #[test]
    fn a_source_user_id_is_read_as_its_hub_key() {
        let key = parse_user("626a81ce9a8cd1920641e296").expect("a source id");
        assert_eq!(key.to_string(), "a9e6edc4-db91-3f11-a278-f773f3273ae0");
    }

    #[test]
    fn a_hub_key_is_read_as_it_is() {
        let key = parse_user("a9e6edc4-db91-3f11-a278-f773f3273ae0").expect("a hub key");
        assert_eq!(key.to_string(), "a9e6edc4-db91-3f11-a278-f773f3273ae0");
    }

    #[test]
    fn anything_else_is_a_malformed_user() {
        for bad in [
            "",
            "626a81ce9a8cd1920641e29",
            "626a81ce9a8cd1920641e29g",
            "a9e6edc4db913f11a278f773f3273ae0",
            "a9e6edc4-db91-3f11-a278-f773f3273ae",
            "x".repeat(36).as_str(),
        ] {
            let error = parse_user(bad).expect_err(bad);
            assert_eq!(code(error), "invalid_user", "{bad}");
        }
    }

    #[test]
    fn tag_names_are_percent_decoded_from_the_path() {
        assert_eq!(
            Route::of(
                "/api/v1/tags/%D0%9B%D1%8E%D0%B1%D0%B8%D1%82%D0%B5%D0%BB%D1%8C%20pizza/users"
            )
            .expect("a route"),
            Route::TagUsers("Любитель pizza".to_owned())
        );
    }

    #[test]
    fn a_tag_name_with_a_nul_character_is_a_bad_request() {
        let error = Route::of("/api/v1/tags/a%00b/users").expect_err("a NUL in the tag");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(code(error), "invalid_tag");
    }

    #[test]
    fn unknown_paths_under_api_are_not_found() {
        for path in [
            "/api",
            "/api/v2/tags",
            "/api/v1/users/x",
            "/api/v1/tags//users",
            "/api/v1/users/x/counters/more",
        ] {
            let error = Route::of(path).expect_err(path);
            assert_eq!(error.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn a_page_defaults_to_a_hundred_holders_from_the_start() {
        assert_eq!(
            Page::from_query("").expect("empty query"),
            Page {
                limit: 100,
                after: None
            }
        );
    }

    #[test]
    fn a_limit_outside_one_to_a_thousand_is_refused() {
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten", "limit="] {
            let error = Page::from_query(bad).expect_err(bad);
            assert_eq!(code(error), "invalid_limit", "{bad}");
        }
        assert_eq!(Page::from_query("limit=1000").expect("max").limit, 1000);
    }

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let user = Uuid::new_v4();
        let page = Page::from_query(&format!("after={}", encode_cursor(user))).expect("cursor");
        assert_eq!(page.after, Some(user));
        for bad in [
            "after=",
            "after=xyz",
            "after=A9E6EDC4DB913F11A278F773F3273AE0",
            "after=a9e6edc4-db91-3f11-a278-f773f3273ae0",
        ] {
            let error = Page::from_query(bad).expect_err(bad);
            assert_eq!(code(error), "invalid_cursor", "{bad}");
        }
    }

    #[test]
    fn errors_carry_their_status() {
        assert_eq!(
            ApiError::MethodNotAllowed {
                method: Method::POST
            }
            .status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            ApiError::Internal(anyhow::anyhow!("down")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
