//! The operator console: one page, served at `/` from assets compiled into the binary (no CDN,
//! works offline), that calls the same `/v1` API as everyone else.
//!
//! It signs in with an API token (`POST /console/session`), which answers with a session
//! cookie (see [`crate::api_auth`]: `HttpOnly`, `SameSite=Strict`, stateless across
//! replicas) and the session's CSRF token, which the page sends with every request that
//! changes state. The token itself is never kept by the page, nor put in a URL. What a
//! `read` token cannot see (raw bodies) or do (replay, pause, ...) the API refuses; the page
//! only hides what would be refused.
//!
//! Every page is served with a Content Security Policy that allows this origin's script
//! and style only, and the script writes data as text, never as markup.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::api_auth::{self, Scope};
use crate::Service;

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// Allows this origin's script, style, images and requests only: data shown in the page can
/// neither run script nor load anything from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The console's routes: the page, its assets and its session. They are not part of the
/// API (the OpenAPI document leaves them out): the data comes from `/v1`.
pub(crate) fn router() -> Router<Arc<Service>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/console/session",
            get(session).post(sign_in).delete(sign_out),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // A new build's page and script arrive together.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
}

/// `GET /console/session`: who is signed in, with what, and the session's CSRF token; 401
/// when no one is. While the API is open (no token configured) everyone is, with every
/// scope, and no CSRF token is needed.
async fn session(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    let auth = service.api_auth();
    if !auth.enforced() {
        return Json(json!({
            "name": null,
            "scopes": [Scope::Read, Scope::Admin],
            "csrf": null,
            "expires": null,
            "open": true,
        }))
        .into_response();
    }
    match auth.session(&headers, Utc::now()) {
        Ok(Some(session)) => Json(json!({
            "name": session.name,
            "scopes": session.scopes,
            "csrf": session.csrf,
            "expires": session.expires,
            "open": false,
        }))
        .into_response(),
        Ok(None) => signed_out("not signed in"),
        Err(rejection) => {
            let mut response = rejection.into_response();
            clear_cookie(&mut response, &headers);
            response
        }
    }
}

/// `POST /console/session` with `{"token": "..."}`: a session for the token's holder, in a
/// cookie. Refused from another site, like every request that changes state.
async fn sign_in(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let auth = service.api_auth();
    let Ok(SignIn { token }) = serde_json::from_slice::<SignIn>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "send {\"token\": \"<API token>\"}"})),
        )
            .into_response();
    };
    if api_auth::from_another_site(&headers) {
        return api_auth::Rejection::CrossSite.into_response();
    }
    match auth.sign_in(&token, Utc::now()) {
        Ok(session) => {
            tracing::info!(token = %session.name, "console sign-in");
            let cookie = api_auth::session_set_cookie(&session, host(&headers));
            let mut response = Json(json!({
                "name": session.name,
                "scopes": session.scopes,
                "csrf": session.csrf,
                "expires": session.expires,
                "open": false,
            }))
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(rejection) => {
            service.observer.metrics.api_rejected(rejection.reason());
            tracing::info!(reason = rejection.reason(), "refused console sign-in");
            signed_out("unknown token")
        }
    }
}

/// `DELETE /console/session`: forgets the session in this browser.
async fn sign_out(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    clear_cookie(&mut response, &headers);
    response
}

fn signed_out(message: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": message}))).into_response()
}

fn clear_cookie(response: &mut Response, headers: &HeaderMap) {
    if let Ok(value) = HeaderValue::from_str(&api_auth::session_clear_cookie(host(headers))) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
}
