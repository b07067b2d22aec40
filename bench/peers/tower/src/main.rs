//! A peer of sessiond in the load benchmark: axum with tower-sessions, answering the three
//! operations of `bench/run` the way a storefront's own session layer would.
//!
//! - `GET /api/sessions`: the session's namespaces as JSON;
//! - `PATCH /api/sessions` with `{"public":{"k":{"value":…}}}`: that key set, session saved;
//! - `POST /api/sessions` with the same shape: a new session holding the namespaces sessiond's
//!   demo account derives on create plus the posted ones (201).
//!
//! The session cookie is named `vtex_session` so the same load generator drives it.
//!
//! Usage: `peer-tower-sessions memory|redis://HOST:PORT [ADDR]`; prints `listening on http://ADDR`.

use axum::extract::Json;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::{Listener, ListenerExt};
use axum::Router;
use serde_json::{json, Map, Value};
use tower_sessions::{MemoryStore, Session, SessionManagerLayer};
use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
use tower_sessions_redis_store::RedisStore;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "namespaces";

/// What sessiond's demo account holds after its create cycle (account and store namespaces).
fn created() -> Map<String, Value> {
    let value = json!({
        "account": {
            "accountName": {"value": "demo"},
            "id": {"value": "6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51", "keepAlive": true}
        },
        "store": {
            "channel": {"value": "1"},
            "channelPrivacy": {"value": "public"},
            "countryCode": {"value": "BRA"},
            "cultureInfo": {"value": "pt-BR"},
            "currencyCode": {"value": "BRL"},
            "currencySymbol": {"value": "R$"}
        }
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

/// Sets every namespace and key of a request body into the namespaces.
fn merge(namespaces: &mut Map<String, Value>, body: Value) -> Result<(), StatusCode> {
    let Value::Object(body) = body else {
        return Err(StatusCode::BAD_REQUEST);
    };
    for (namespace, keys) in body {
        let Value::Object(keys) = keys else {
            return Err(StatusCode::BAD_REQUEST);
        };
        let target = namespaces
            .entry(namespace)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(target) = target {
            target.extend(keys);
        }
    }
    Ok(())
}

fn answer(session: &Session, namespaces: Map<String, Value>) -> Json<Value> {
    let id = session.id().map(|id| id.to_string());
    Json(json!({"id": id, "namespaces": namespaces}))
}

async fn read(session: Session) -> Result<Json<Value>, StatusCode> {
    let namespaces: Option<Map<String, Value>> = session
        .get(KEY)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let namespaces = namespaces.ok_or(StatusCode::NOT_FOUND)?;
    Ok(answer(&session, namespaces))
}

async fn write(session: Session, Json(body): Json<Value>) -> Result<Json<Value>, StatusCode> {
    let namespaces: Option<Map<String, Value>> = session
        .get(KEY)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let mut namespaces = namespaces.ok_or(StatusCode::NOT_FOUND)?;
    merge(&mut namespaces, body)?;
    session
        .insert(KEY, &namespaces)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(answer(&session, namespaces))
}

async fn create(
    session: Session,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), StatusCode> {
    let mut namespaces = created();
    merge(&mut namespaces, body)?;
    session
        .insert(KEY, &namespaces)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((StatusCode::CREATED, answer(&session, namespaces)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let store = args.next().ok_or("usage: peer-tower-sessions memory|redis://HOST:PORT [ADDR]")?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let routes = Router::new().route("/api/sessions", get(read).patch(write).post(create));
    let app = if store == "memory" {
        let layer = SessionManagerLayer::new(MemoryStore::default())
            .with_name("vtex_session")
            .with_secure(false);
        routes.layer(layer)
    } else {
        let pool = Pool::new(Config::from_url(&store)?, None, None, None, 4)?;
        pool.connect();
        pool.wait_for_connect().await?;
        let layer = SessionManagerLayer::new(RedisStore::new(pool))
            .with_name("vtex_session")
            .with_secure(false);
        routes.layer(layer)
    };
    // Answers leave at once, as sessiond's and the baseline's do.
    let listener = tokio::net::TcpListener::bind(&addr)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
