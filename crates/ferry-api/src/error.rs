//! The API's error: a status, a stable snake_case code and a human message.
//! Internal details (SQL, stack, paths) are logged, never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }

    /// A store error while reading `what`: "not found" names it.
    pub fn reading(what: &'static str) -> impl Fn(ferry_store::Error) -> ApiError {
        move |e| match e {
            ferry_store::Error::NotFound => ApiError::not_found(what),
            e => e.into(),
        }
    }
}

impl From<ferry_store::Error> for ApiError {
    fn from(e: ferry_store::Error) -> Self {
        use ferry_store::Error as E;
        match e {
            E::NotFound => ApiError::not_found("resource"),
            E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            E::Unavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                ApiError {
                    retry_after_s: Some(5),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the store is unavailable; try again shortly",
                    )
                }
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<ferry_core::Error> for ApiError {
    fn from(e: ferry_core::Error) -> Self {
        match e {
            ferry_core::Error::UnknownConnector(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_connector",
                format!("connector: {e}"),
            ),
            ferry_core::Error::Invalid { .. } => ApiError::invalid(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::schema::ErrorBody {
            error: crate::schema::ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// A JSON body parsed by us, so syntax errors are `400 invalid_json` and
/// shape errors `422 invalid_field`, both in the API's error format, whatever
/// the Content-Type header says.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    e.body_text(),
                )
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    // The error names the field at fault (`enabled: invalid type: …`).
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| (e.path().to_string(), e.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (String::new(), e)));
    parsed.map_err(|(path, inner)| match inner.classify() {
        serde_json::error::Category::Data if path == "." || path.is_empty() => {
            ApiError::invalid(inner.to_string())
        }
        serde_json::error::Category::Data => ApiError::invalid(format!("{path}: {inner}")),
        _ => ApiError::bad_request("invalid_json", format!("body is not valid JSON: {inner}")),
    })
}
