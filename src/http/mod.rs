//! The read-only query API (`GET /api/v1/audit`, `GET /api/v1/audit/{id}`)
//! and the request-context layer that gives `audit!` in handlers the
//! request id, client address, user agent and actor.
//!
//! Both routes need the `audit:read` permission: no or bad credentials give
//! 401, a caller without the permission 403. Bad input gives 400. Every
//! error body is `{"error": {"code": "...", "message": "..."}}`, never a
//! stack trace or SQL. Reading the audit log is itself audited: each request
//! that passes authorization emits an `audit.read` record with the caller as
//! actor and the filters in `detail`.

mod auth;
mod context;
mod error;
mod outcome;
mod params;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};

use self::error::ApiError;
use crate::{audit, Store};

pub use self::auth::{Authorizer, BearerTokens, Caller, Unauthenticated, AUDIT_READ};
pub use self::context::{
    request_context, RequestContext, RequestContextLayer, RequestSpan, REQUEST_ID_HEADER,
};
pub use self::outcome::{audit_outcomes, AuditOutcomes, AuditOutcomesLayer, OutcomeFuture};

struct Api<A> {
    store: Store,
    authorizer: A,
}

/// The query API over `store`, guarded by `authorizer`. Merge it into your
/// application's router.
///
/// # Examples
///
/// ```no_run
/// use fabric_audit::http::{self, BearerTokens};
/// use fabric_audit::Store;
///
/// # async fn docs() -> fabric_audit::Result<()> {
/// let store = Store::connect("sqlite://logs/audit.db").await?;
/// let tokens = BearerTokens::new().token("ops", "s3cret", [http::AUDIT_READ]);
/// let app = axum::Router::new().merge(http::router(store, tokens));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub fn router<A: Authorizer>(store: Store, authorizer: A) -> Router {
    let api = Arc::new(Api { store, authorizer });
    Router::new()
        .route("/api/v1/audit", get(list::<A>))
        .route("/api/v1/audit/{id}", get(get_one::<A>))
        .with_state(api)
}

impl<A: Authorizer> Api<A> {
    async fn caller(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let caller = self
            .authorizer
            .authorize(parts)
            .await
            .map_err(|Unauthenticated| ApiError::unauthorized())?;
        if caller.can(AUDIT_READ) {
            Ok(caller)
        } else {
            Err(ApiError::forbidden())
        }
    }
}

async fn list<A: Authorizer>(
    State(api): State<Arc<Api<A>>>,
    RawQuery(query): RawQuery,
    parts: Parts,
) -> Result<Json<PageBody>, ApiError> {
    let caller = api.caller(&parts).await?;
    let (query, f) = params::parse(query.as_deref())?;
    audit!(
        action = "audit.read",
        actor = &caller,
        "filter.actor_id" = f.actor_id.as_deref(),
        "filter.actor_type" = f.actor_type.as_deref(),
        "filter.action" = f.action.as_deref(),
        "filter.resource_type" = f.resource_type.as_deref(),
        "filter.resource_id" = f.resource_id.as_deref(),
        "filter.from" = f.from.as_deref(),
        "filter.to" = f.to.as_deref(),
        "filter.has_flag" = f.has_flag.as_deref(),
        "filter.limit" = f.limit.as_deref(),
        "filter.cursor" = f.cursor.as_deref(),
    );
    let page = api.store.query(&query).await?;
    Ok(Json(PageBody {
        items: page.items,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// The list's answer; a struct, so that each record keeps its field order.
#[derive(serde::Serialize)]
struct PageBody {
    items: Vec<crate::AuditRecord>,
    next_cursor: Option<String>,
}

async fn get_one<A: Authorizer>(
    State(api): State<Arc<Api<A>>>,
    Path(id): Path<String>,
    parts: Parts,
) -> Result<Json<crate::AuditRecord>, ApiError> {
    let caller = api.caller(&parts).await?;
    let uuid =
        uuid::Uuid::try_parse(&id).map_err(|_| ApiError::bad_request("the id is not a UUID"))?;
    audit!(action = "audit.read", actor = &caller, "filter.id" = %uuid);
    match api.store.get(uuid).await? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::not_found()),
    }
}
