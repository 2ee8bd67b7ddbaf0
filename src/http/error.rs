//! The API's error answers: a status and `{"error": {"code", "message"}}`.

use axum::http::header::{HeaderName, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// How long a client is asked to wait after a 503, in seconds.
const RETRY_AFTER_SECONDS: u32 = 5;

/// An error answer of the query API.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    /// The message the body carries.
    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A 401 with the authorizer's challenge in `WWW-Authenticate`.
    pub(crate) fn unauthorized(challenge: HeaderValue) -> Self {
        Self {
            header: Some((WWW_AUTHENTICATE, challenge)),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid credentials",
            )
        }
    }

    pub(crate) fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the audit:read permission is required",
        )
    }

    pub(crate) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no audit record has this id",
        )
    }

    /// A method the route does not have (axum adds the `Allow` header).
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route only answers GET",
        )
    }

    /// The database did not answer in time: worth trying again soon.
    fn unavailable(error: &crate::Error) -> Self {
        let error = crate::error::Chain(error);
        tracing::warn!(target: "fabric_audit", %error, "audit log unavailable");
        Self {
            header: Some((RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS))),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the audit log is not available; try again later",
            )
        }
    }

    /// A failure of ours: logged in full, answered without detail (no SQL,
    /// no stack trace, no server names in responses).
    pub(crate) fn internal(error: &crate::Error) -> Self {
        let error = crate::error::Chain(error);
        tracing::error!(target: "fabric_audit", %error, "audit query failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the audit log could not be read",
        )
    }
}

impl From<crate::Error> for ApiError {
    fn from(error: crate::Error) -> Self {
        if error.is_invalid_input() {
            Self::bad_request(error.to_string())
        } else if error.is_unavailable() {
            Self::unavailable(&error)
        } else {
            Self::internal(&error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(error: ApiError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        use http_body_util::BodyExt;
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn store_errors_map_to_their_status() {
        let cases = [
            (crate::Error::invalid("`limit` is bad"), 400, "bad_request"),
            (crate::Error::unavailable("timed out"), 503, "unavailable"),
            (
                crate::Error::database("syntax error at SELECT"),
                500,
                "internal",
            ),
        ];
        for (error, status, code) in cases {
            let (got, headers, body) = parts(ApiError::from(error)).await;
            assert_eq!(got.as_u16(), status);
            assert_eq!(body["error"]["code"], code, "{body}");
            assert_eq!(
                headers.get(RETRY_AFTER).is_some(),
                status == 503,
                "Retry-After only on a 503"
            );
            let message = body["error"]["message"].as_str().unwrap();
            assert!(!message.contains("SELECT") && !message.contains("timed out"));
        }
    }

    #[tokio::test]
    async fn a_401_carries_its_challenge() {
        let challenge = HeaderValue::from_static("Bearer realm=\"audit\"");
        let (status, headers, body) = parts(ApiError::unauthorized(challenge.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers.get(WWW_AUTHENTICATE), Some(&challenge));
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}
