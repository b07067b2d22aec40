//! The admin API under `/_admin` (SPEC section 8), for the holder of `admin_token` (a bearer
//! token, compared in constant time): the apps of an account listed, installed and
//! uninstalled (`catalog`), a session read whole by id, its `debug` flag switched; and the web
//! console at `/_admin/ui` (a page and its assets, embedded in the binary; the page asks for
//! the token and sends it with each call). Without `admin_token` in the configuration none of
//! it is routed (404).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::catalog::CatalogError;
use crate::config::AppConfig;
use crate::tenancy::Account;

/// Longest app name accepted.
const MAX_APP_NAME: usize = 128;

/// The admin token as kept: its SHA-256, so the comparison takes the same time whatever the
/// length of what a client sends.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// The token `token` (from the configuration).
    pub fn new(token: &str) -> Self {
        AdminToken(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
        else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        given.ct_eq(&self.0).into()
    }
}

/// The admin routes (axum's syntax), for `ROUTES`.
pub const ROUTES: [&str; 6] = [
    "/_admin/accounts/{account}/apps",
    "/_admin/accounts/{account}/apps/{name}",
    "/_admin/accounts/{account}/sessions/{id}",
    "/_admin/accounts/{account}/sessions/{id}/debug",
    "/_admin/ui",
    "/_admin/ui/{asset}",
];

/// The console's assets: path, content type, bytes.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/console.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
];

/// The admin routes, the API's behind the bearer `token`.
pub fn router(token: AdminToken) -> Router<Arc<AppState>> {
    let api = Router::new()
        .route(ROUTES[0], get(list_apps))
        .route(ROUTES[1], put(install_app).delete(uninstall_app))
        .route(ROUTES[2], get(read_session))
        .route(ROUTES[3], put(set_debug))
        .route_layer(axum::middleware::from_fn_with_state(token, guard));
    api.route(ROUTES[4], get(|| async { asset("index.html") }))
        .route(
            ROUTES[5],
            get(|path: Result<Path<String>, PathRejection>| async move {
                match path {
                    Ok(Path(name)) => asset(&name),
                    Err(e) => ApiError::bad_request(format!("path: {e}")).into_response(),
                }
            }),
        )
}

/// A console asset, or 404. Its page may load only what this server serves.
fn asset(name: &str) -> Response {
    let Some((_, kind, body)) = ASSETS.iter().find(|(n, ..)| *n == name) else {
        return ApiError::not_found(format!("the console has no `{name}`")).into_response();
    };
    let mut response = (StatusCode::OK, *body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Lets through only requests that carry the admin token.
async fn guard(
    State(token): State<AdminToken>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !token.admits(request.headers()) {
        return unauthorized();
    }
    next.run(request).await
}

fn unauthorized() -> Response {
    let mut response =
        ApiError::unauthorized("the admin API needs `Authorization: Bearer <admin_token>`")
            .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sessiond admin\""),
    );
    response
}

/// The path's parameters, or a 400 naming what is wrong.
fn params<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(format!("path: {e}")))
}

/// The account named in the path, or 404.
fn account(state: &AppState, name: &str) -> Result<Arc<Account>, ApiError> {
    state
        .tenancy
        .find(name)
        .ok_or_else(|| ApiError::not_found(format!("no account is named `{name}`")))
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NoAccount(_) | CatalogError::NoApp { .. } => {
                ApiError::not_found(e.to_string())
            }
            CatalogError::Invalid(m) => ApiError::bad_request(m),
            CatalogError::Store(e) => crate::service::SessionError::from(e).into(),
            CatalogError::Busy => ApiError::conflict(e.to_string()),
        }
    }
}

/// An installed app as the admin API shows it: its entry (without its secret) and what it
/// declares.
fn listed(account: &Account, state: &AppState, position: usize) -> Value {
    let entry = &account.entries[position];
    let spec = &account.apps.index().apps()[position];
    let configured = state
        .tenancy
        .configured_apps(&account.name)
        .unwrap_or(&[])
        .contains(entry);
    let mut shown = serde_json::to_value(entry).expect("an app entry serialises");
    if let Some(fields) = shown.as_object_mut() {
        fields.remove("secret");
        fields.insert("signed".into(), Value::Bool(entry.secret.is_some()));
        fields.insert("builtin".into(), Value::Bool(entry.url.is_none()));
        fields.insert(
            "source".into(),
            Value::from(if configured { "config" } else { "admin" }),
        );
        let patterns = |m: &std::collections::BTreeMap<String, Vec<sessiond_core::KeyPattern>>| {
            m.iter()
                .map(|(ns, ps)| {
                    (
                        ns.clone(),
                        json!(ps.iter().map(|p| p.as_str()).collect::<Vec<_>>()),
                    )
                })
                .collect::<Map<_, _>>()
        };
        fields.insert(
            "declaration".into(),
            json!({
                "input": patterns(&spec.input),
                "output": spec.output,
                "runOnCreate": spec.run_on_create,
                "when": spec.when.iter().map(|c| c.describe()).collect::<Vec<_>>(),
            }),
        );
    }
    shown
}

fn json(status: StatusCode, body: &Value) -> Response {
    super::json_response(status, serde_json::to_vec(body).expect("JSON serialises"))
}

/// `GET /_admin/accounts/{account}/apps`: the installed apps, in precedence order.
async fn list_apps(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let account = account(&state, &params(path)?)?;
    let apps: Vec<Value> = (0..account.entries.len())
        .map(|i| listed(&account, &state, i))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "account": account.name,
            "apps": apps,
            "warnings": crate::check::app_warnings(account.apps.index().apps()),
        }),
    ))
}

/// The app entry of an install request: an entry as in the configuration (`url`,
/// `configuration`, `run_on_create`, `timeout_ms`, `when`), or VTEX's `configuration.json`
/// (`{"<name>": {"input", "output"}}`, or the declaration alone) plus `url`.
pub(crate) fn entry(name: &str, body: &Bytes) -> Result<AppConfig, ApiError> {
    if name.is_empty()
        || name.len() > MAX_APP_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(ApiError::bad_request(format!(
            "`name`: an app name is 1 to {MAX_APP_NAME} letters, digits, `.`, `_` or `-`"
        )));
    }
    let mut fields: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => return Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    };
    // VTEX's configuration.json: the declaration keyed by the app's name.
    let keyed = fields.get(name).is_some_and(Value::is_object);
    if let Some(Value::Object(declaration)) = keyed.then(|| fields.remove(name)).flatten() {
        if fields.contains_key("configuration") {
            return Err(ApiError::bad_request(format!(
                "`configuration`: give the declaration once (`configuration` or `{name}`)"
            )));
        }
        fields.insert("configuration".into(), Value::Object(declaration));
    }
    // A declaration at the top level.
    let declared = ["input", "output", "runOnCreate", "RunOnCreate"];
    if declared.iter().any(|k| fields.contains_key(*k)) {
        if fields.contains_key("configuration") {
            return Err(ApiError::bad_request(
                "`configuration`: give the declaration once (`configuration` or `input`/`output`)",
            ));
        }
        let declaration: Map<String, Value> = declared
            .iter()
            .filter_map(|k| fields.remove(*k).map(|v| ((*k).to_owned(), v)))
            .collect();
        fields.insert("configuration".into(), Value::Object(declaration));
    }
    match fields.get("name") {
        None => {
            fields.insert("name".into(), Value::from(name));
        }
        Some(Value::String(given)) if given == name => {}
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`name`: the body names another app than the path (`{name}`)"
            )))
        }
    }
    if fields.contains_key("secret") {
        return Err(ApiError::bad_request(
            "`secret`: an app's secret stays in the configuration file (the admin API stores apps where every process can read them)",
        ));
    }
    if fields.contains_key("configuration_file") {
        return Err(ApiError::bad_request(
            "`configuration_file`: give the declaration in the body (`configuration`)",
        ));
    }
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path == "." || message.contains(&format!("`{path}`")) {
            ApiError::bad_request(message)
        } else {
            ApiError::bad_request(format!("`{path}`: {message}"))
        }
    })
}

/// `PUT /_admin/accounts/{account}/apps/{name}`: installs (or replaces) an app, validated as
/// `sessiond check` validates; 201 when it is new, 200 when it replaced one.
async fn install_app(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (account_name, name) = params(path)?;
    account(&state, &account_name)?;
    let app = entry(&name, &body)?;
    let installed = state.catalog.install(&account_name, app).await?;
    let account = installed.account;
    let position = account
        .entries
        .iter()
        .position(|a| a.name == name)
        .ok_or_else(|| ApiError::internal("installing an app", "the app is not in the result"))?;
    let status = if installed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        &json!({
            "app": listed(&account, &state, position),
            "warnings": crate::check::app_warnings(account.apps.index().apps()),
        }),
    ))
}

/// `DELETE /_admin/accounts/{account}/apps/{name}`: uninstalls an app; 204.
async fn uninstall_app(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (account_name, name) = params(path)?;
    account(&state, &account_name)?;
    state.catalog.uninstall(&account_name, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /_admin/accounts/{account}/sessions/{id}`: the whole session (identity cookie values
/// redacted) and its recent cycle traces.
async fn read_session(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (account_name, id) = params(path)?;
    let account = account(&state, &account_name)?;
    let id = session_id(&id)?;
    let inspected = state
        .service
        .inspect(&account, id, state.clock.now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("account `{}` has no session `{id}`", account.name))
        })?;
    Ok(json(StatusCode::OK, &inspected))
}

/// `PUT /_admin/accounts/{account}/sessions/{id}/debug` with `{"debug": true|false}`.
async fn set_debug(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (account_name, id) = params(path)?;
    let account = account(&state, &account_name)?;
    let id = session_id(&id)?;
    let debug = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => match (fields.get("debug"), fields.len()) {
            (Some(Value::Bool(debug)), 1) => *debug,
            (Some(_), 1) => return Err(ApiError::bad_request("`debug` must be true or false")),
            _ => {
                return Err(ApiError::bad_request(
                    "`debug`: the body is `{\"debug\": true}` or `{\"debug\": false}`",
                ))
            }
        },
        Ok(_) => return Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => return Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    };
    let inspected = state
        .service
        .set_debug(&account, id, debug, state.clock.now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("account `{}` has no session `{id}`", account.name))
        })?;
    Ok(json(StatusCode::OK, &inspected))
}

/// A session id from the path, or 400.
fn session_id(id: &str) -> Result<sessiond_core::SessionId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("`id`: `{id}` is not a session id (a UUID)")))
}
