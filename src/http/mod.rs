//! The read-only query API (`GET /api/v1/audit`, `GET /api/v1/audit/{id}`)
//! and the request-context layer that gives `audit!` in handlers the
//! request id, client address, user agent and actor.
//!
//! Both routes need the `audit:read` permission, checked before anything
//! else: no or bad credentials give 401 (with `WWW-Authenticate`), a caller
//! without the permission 403. Bad input gives 400, another method 405, a
//! database that does not answer in time 503 (with `Retry-After`). Every
//! error body is `{"error": {"code": "...", "message": "..."}}`, never a
//! stack trace or SQL. Reading the audit log is itself audited: each request
//! that passes authorization emits an `audit.read` record with the caller as
//! actor and the filters in `detail`; refused ones emit `audit.read.denied`,
//! rate-limited.

mod auth;
mod body;
mod context;
mod denied;
mod error;
#[cfg(feature = "metrics")]
mod metrics;
mod openapi;
mod outcome;
mod params;

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Extension, Router};

use self::body::JsonBody;
use self::denied::{Denial, DeniedBudget};
use self::error::ApiError;
use crate::{audit, Store};

pub use self::auth::{Authorizer, BearerTokens, Caller, Unauthenticated, AUDIT_READ};
pub use self::context::{
    record_actor, request_context, RequestContext, RequestContextLayer, RequestSpan,
    REQUEST_ID_HEADER,
};
pub use self::outcome::{audit_outcomes, AuditOutcomes, AuditOutcomesLayer, OutcomeFuture};
pub use axum_client_ip::ClientIpSource;

struct Api<A> {
    store: Store,
    authorizer: A,
    denied: DeniedBudget,
}

/// The caller the authentication middleware let through.
#[derive(Clone)]
struct Authorized(Caller);

/// The query API over `store`, guarded by `authorizer`. Merge it into your
/// application's router, whatever its state: the router is generic over
/// it, so `app.merge(router(..))` works before or after `with_state`.
///
/// Every request to its routes is authenticated first, whatever its
/// method or path parameters, and every answer that is not a success is
/// the JSON error body (a wrong method is a 405 with `Allow`). Refused
/// requests are audited as `audit.read.denied` (the caller when known,
/// `detail.reason`: `no_credentials`, `bad_credentials` or
/// `missing_permission`, plus `status`, `method` and `path`), at most 10 a
/// second per router: the refusals beyond that are counted, and the next
/// record written carries their number in `detail.suppressed`.
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
/// let app: axum::Router = axum::Router::new().merge(http::router(store, tokens));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub fn router<A: Authorizer, S>(store: Store, authorizer: A) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let api = Arc::new(Api {
        store,
        authorizer,
        denied: DeniedBudget::new(),
    });
    Router::new()
        .route(openapi::PATH, get(openapi::serve))
        .route("/api/v1/audit", guarded(&api, get(list::<A>)))
        .route(
            "/api/v1/audit/checkpoints",
            guarded(&api, get(checkpoints::<A>)),
        )
        .route("/api/v1/audit/{id}", guarded(&api, get(get_one::<A>)))
        .with_state(api)
}

/// The route with a JSON 405 for other methods, authentication in front of
/// both.
fn guarded<A: Authorizer>(
    api: &Arc<Api<A>>,
    route: MethodRouter<Arc<Api<A>>>,
) -> MethodRouter<Arc<Api<A>>> {
    let route = route
        .fallback(|| async { ApiError::method_not_allowed() })
        .layer(from_fn_with_state(api.clone(), authenticate::<A>));
    #[cfg(feature = "metrics")]
    let route = route.layer(axum::middleware::from_fn(metrics::count));
    route
}

/// Lets through only callers with `audit:read`, before anything else of
/// the request is looked at; audits the refusals.
async fn authenticate<A: Authorizer>(
    State(api): State<Arc<Api<A>>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let denial = match api.authorizer.authorize(&parts).await {
        Ok(caller) if caller.can(AUDIT_READ) => {
            let mut request = Request::from_parts(parts, body);
            request.extensions_mut().insert(Authorized(caller));
            return next.run(request).await;
        }
        Ok(caller) => Denial::Forbidden(caller),
        Err(Unauthenticated) if parts.headers.contains_key(AUTHORIZATION) => Denial::BadCredentials,
        Err(Unauthenticated) => Denial::NoCredentials,
    };
    api.denied.record(&parts, &denial);
    match denial {
        Denial::Forbidden(_) => ApiError::forbidden(),
        Denial::NoCredentials | Denial::BadCredentials => {
            ApiError::unauthorized(api.authorizer.challenge())
        }
    }
    .into_response()
}

async fn list<A: Authorizer>(
    State(api): State<Arc<Api<A>>>,
    Extension(Authorized(caller)): Extension<Authorized>,
    RawQuery(query): RawQuery,
) -> Result<JsonBody, ApiError> {
    let params = params::parse(query.as_deref())?;
    page(&api, &caller, params).await
}

/// The chains' checkpoint records (action `fabric_audit.checkpoint`),
/// newest first, a page at a time: for an auditor who verifies an export
/// against them. Filtered by time only (`from`, `to`), paged as the list.
async fn checkpoints<A: Authorizer>(
    State(api): State<Arc<Api<A>>>,
    Extension(Authorized(caller)): Extension<Authorized>,
    RawQuery(query): RawQuery,
) -> Result<JsonBody, ApiError> {
    let mut params = params::parse(query.as_deref())?;
    let q = &params.query;
    let other = [
        ("actor_id", q.actor_id.is_some()),
        ("actor_type", q.actor_type.is_some()),
        ("action", q.action.is_some()),
        ("resource_type", q.resource_type.is_some()),
        ("resource_id", q.resource_id.is_some()),
        ("has_flag", q.has_flag.is_some()),
    ];
    if let Some((name, _)) = other.iter().find(|(_, given)| *given) {
        return Err(ApiError::bad_request(format!(
            "`{name}` does not filter checkpoints: only `from`, `to`, `limit`, `cursor` and `count` do"
        )));
    }
    params.query = params.query.action(crate::verify::CHECKPOINT_ACTION);
    page(&api, &caller, params).await
}

/// A page of `params`' records, the read audited first.
async fn page<A: Authorizer>(
    api: &Api<A>,
    caller: &Caller,
    params: params::ListParams,
) -> Result<JsonBody, ApiError> {
    let params::ListParams {
        query,
        given,
        count,
    } = params;
    // The filters as given, one `filter.NAME` field per parameter.
    macro_rules! audit_read {
        ($($name:ident),*) => {
            audit!(
                action = "audit.read",
                actor = caller,
                count = count.then_some(true),
                $(filter.$name = given.$name.as_deref(),)*
            )
        };
    }
    crate::db::with_parameters!(audit_read!());
    let page = api.store.query_rows(&query).await?;
    let total = match count {
        true => Some(api.store.count(&query).await?),
        false => None,
    };
    Ok(JsonBody::page(page, total)?)
}

async fn get_one<A: Authorizer>(
    State(api): State<Arc<Api<A>>>,
    Extension(Authorized(caller)): Extension<Authorized>,
    id: Result<Path<String>, PathRejection>,
) -> Result<JsonBody, ApiError> {
    let uuid = id
        .ok()
        .and_then(|Path(id)| uuid::Uuid::try_parse(&id).ok())
        .ok_or_else(|| ApiError::bad_request("the id is not a UUID"))?;
    audit!(action = "audit.read", actor = &caller, "filter.id" = %uuid);
    match api.store.get_row(uuid).await? {
        Some(row) => Ok(JsonBody::record(row)?),
        None => Err(ApiError::not_found()),
    }
}
