//! A shared backend: Redis, one node (`redis://`, `rediss://` for TLS) or a cluster
//! (`redis+cluster://host:port,host:port`, `rediss+cluster://`), through the `redis` crate
//! (its connection manager reconnects by itself; its cluster client follows MOVED and ASK).
//!
//! Each session is one string key, `sessiond:{xxxxxxxx}:…`, holding its record as encoded; the
//! hash tag is the first four bytes of the id, which a session shares with the sessions that
//! take it over ([`SessionId::successor`]), so a log-in's two records sit on one cluster slot
//! and are written by one script, both or neither. Every write is a Lua script that compares
//! the stored version (bytes 1..9 of the record) with the expected one and sets the record with
//! `PXAT` its deadline: Redis drops expired sessions itself, and nothing needs purging.
//!
//! [`SessionStore::watch`]: the data connections speak RESP3 and track the session keys in
//! broadcast mode, so Redis pushes every session another process writes (see `keep_watching`).
//!
//! Calls are bounded by the timeout given at [`RedisStore::open`] (connecting and each answer);
//! a Redis that is down or frozen is [`StoreError::Unavailable`], and the next call after it is
//! back succeeds. A password in a URL is never written to an error or a log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use ::redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, SendError};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use ::redis::{
    Client, FromRedisValue, ProtocolVersion, PushInfo, PushKind, RedisError, Script,
    ScriptInvocation, Value,
};
use async_trait::async_trait;
use bytes::Bytes;
use sessiond_core::{Record, SessionId};

use crate::{Change, OnChange, SessionStore, StoreError};

/// Saves records if every stored version is the expected one: KEYS are the records' keys;
/// ARGV holds, for each, the expected version as 8 big-endian bytes (empty: the key must not
/// exist), the record, and its deadline in ms. 1 when saved, 0 on a conflict.
const PUT: &str = r"
for i, key in ipairs(KEYS) do
  if redis.call('GETRANGE', key, 1, 8) ~= ARGV[3 * i - 2] then
    return 0
  end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[3 * i - 1], 'PXAT', ARGV[3 * i])
end
return 1
";

/// Where shared values (the session signing key) are kept.
const SHARED_PREFIX: &str = "sessiond:shared:";

/// Where settings (the apps installed at run time) are kept.
const SETTING_PREFIX: &str = "sessiond:setting:";

/// Stores a setting if it still holds the expected value: KEYS[1] the setting; ARGV[1] the new
/// value, ARGV[2] `1` when the setting must not exist (else ARGV[3] is the value it must hold).
/// 1 when stored, 0 on a conflict.
const PUT_SETTING: &str = r"
local stored = redis.call('GET', KEYS[1])
if ARGV[2] == '1' then
  if stored then return 0 end
elseif stored ~= ARGV[3] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// The prefix of every session key, the one the watch asks Redis to track.
const SESSION_PREFIX: &str = "sessiond:{";

/// How often the watch checks its connection, and how long an answer may take before the
/// watch counts as lost (changes may then go unseen).
const WATCH_EVERY: Duration = Duration::from_millis(100);
const WATCH_PATIENCE: Duration = Duration::from_millis(300);

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    put: Script,
    put_setting: Script,
    /// What the data connections' pushes are told to.
    watch: Arc<Watch>,
    /// Held by every clone of the store: the watch ends when the last one is dropped.
    alive: Arc<()>,
}

/// The watch: `CLIENT TRACKING … BCAST NOLOOP` on the data connections themselves (one, or one
/// per master), so Redis pushes the keys other connections write, never this process's own.
#[derive(Default)]
struct Watch {
    on_change: OnceLock<OnChange>,
    /// Whether tracking is on for the current connection.
    live: AtomicBool,
}

impl Watch {
    fn tell(&self, change: Change) {
        if matches!(change, Change::Lost) && !self.live.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(on_change) = self.on_change.get() {
            on_change(change);
        }
    }
}

/// The pushes of the data connection, turned into [`Change`]s.
struct Pushes(Arc<Watch>);

impl AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            if let Some(id) = id_of(key) {
                                self.0.tell(Change::Session(id));
                            }
                        }
                    }
                }
                // Everything was dropped (FLUSHALL): start over.
                _ => {
                    self.0.tell(Change::Lost);
                }
            },
            PushKind::Disconnection => self.0.tell(Change::Lost),
            _ => {}
        }
        Ok(())
    }
}

/// The session id of a session key (see [`key`]).
fn id_of(key: &[u8]) -> Option<SessionId> {
    let rest = key.strip_prefix(SESSION_PREFIX.as_bytes())?;
    let hex: Vec<u8> = rest
        .iter()
        .copied()
        .filter(|b| !b"}:".contains(b))
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        bytes[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(SessionId::from_bytes(bytes))
}

/// Whether a `CLIENT TRACKINGINFO` answer says tracking is on (its `flags` hold `on`).
fn tracking_on(info: &Value) -> bool {
    match info {
        Value::SimpleString(s) => s == "on",
        Value::BulkString(b) => b == b"on",
        Value::Array(items) | Value::Set(items) => items.iter().any(tracking_on),
        Value::Map(pairs) => pairs.iter().any(|(k, v)| tracking_on(k) || tracking_on(v)),
        _ => false,
    }
}

/// A command's routing to every master of a cluster.
fn all_masters(policy: Option<ResponsePolicy>) -> RoutingInfo {
    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, policy))
}

/// Keeps `watch` on `connection` while the store lives (`alive`): every [`WATCH_EVERY`] it
/// asks whether tracking is on for every connection that carries sessions (after a
/// reconnection, or on a new master, it is not), turns it on anew when it is not, and tells
/// [`Change::Resumed`] once it is on everywhere, or [`Change::Lost`] when it is off somewhere or
/// no answer comes within [`WATCH_PATIENCE`].
async fn keep_watching(alive: Weak<()>, watch: Arc<Watch>, mut connection: Connection) {
    while alive.strong_count() > 0 {
        let answer = tokio::time::timeout(WATCH_PATIENCE, connection.tracking())
            .await
            .ok()
            .and_then(Result::ok);
        match answer {
            Some(true) => {
                if !watch.live.swap(true, Ordering::SeqCst) {
                    watch.tell(Change::Resumed);
                }
            }
            Some(false) => {
                watch.tell(Change::Lost);
                let _ = tokio::time::timeout(WATCH_PATIENCE, connection.track()).await;
            }
            None => watch.tell(Change::Lost),
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Whether tracking is on for every connection that carries sessions (each master's, on
    /// a cluster).
    async fn tracking(&mut self) -> Result<bool, RedisError> {
        let mut info = ::redis::cmd("CLIENT");
        info.arg("TRACKINGINFO");
        match self {
            Connection::Node(c) => Ok(tracking_on(&info.query_async::<Value>(c).await?)),
            Connection::Cluster(c) => match c.route_command(info, all_masters(None)).await? {
                Value::Map(answers) => {
                    Ok(!answers.is_empty() && answers.iter().all(|(_, info)| tracking_on(info)))
                }
                _ => Ok(false),
            },
        }
    }

    /// Turns tracking of the session keys on, anew, for every connection that carries them.
    async fn track(&mut self) -> Result<(), RedisError> {
        let mut off = ::redis::cmd("CLIENT");
        off.arg("TRACKING").arg("OFF");
        let mut on = ::redis::cmd("CLIENT");
        on.arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(SESSION_PREFIX)
            .arg("NOLOOP");
        match self {
            Connection::Node(c) => {
                off.query_async::<Value>(c).await?;
                on.query_async::<Value>(c).await?;
            }
            Connection::Cluster(c) => {
                let all = || all_masters(Some(ResponsePolicy::AllSucceeded));
                c.route_command(off, all()).await?;
                c.route_command(on, all()).await?;
            }
        }
        Ok(())
    }

    async fn query<T: FromRedisValue>(&self, cmd: &::redis::Cmd) -> Result<T, RedisError> {
        match self {
            Connection::Node(c) => cmd.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        match self {
            Connection::Node(c) => invocation.invoke_async(&mut c.clone()).await,
            Connection::Cluster(c) => invocation.invoke_async(&mut c.clone()).await,
        }
    }
}

/// `url` with the password of its user part, if any, replaced by `***`: what may be shown.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_owned();
    };
    let user = rest[..at].split(':').next().unwrap_or("");
    format!("{scheme}://{user}:***{}", &rest[at..])
}

/// The Redis error as a store error, saying what went wrong without the URL.
fn unavailable(e: RedisError) -> StoreError {
    let what = if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.kind() == ::redis::ErrorKind::AuthenticationFailed {
        "authentication failed (check the password in the store URL)".to_owned()
    } else {
        e.to_string()
    };
    StoreError::Unavailable(format!("redis: {what}"))
}

/// The key of session `id`: `sessiond:{` the first four bytes in hex `}:` the rest in hex.
fn key(id: SessionId) -> Vec<u8> {
    let bytes = id.as_bytes();
    let mut key = vec![0u8; 44];
    key[..10].copy_from_slice(SESSION_PREFIX.as_bytes());
    hex::encode_to_slice(&bytes[..4], &mut key[10..18]).expect("8 hex digits");
    key[18..20].copy_from_slice(b"}:");
    hex::encode_to_slice(&bytes[4..], &mut key[20..]).expect("24 hex digits");
    key
}

/// The hash tag of session `id`'s key (see [`key`]).
fn tag(id: SessionId) -> [u8; 4] {
    id.as_bytes()[..4].try_into().expect("4 bytes")
}

impl RedisStore {
    /// Connects to the Redis that `url` names; every call, connecting included, is bounded by
    /// `timeout`. Fails when it cannot connect or log in.
    pub async fn open(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let bad =
            |why: String| StoreError::Unavailable(format!("store `{}`: {why}", redacted(url)));
        let cluster = url
            .strip_prefix("redis+cluster://")
            .map(|rest| ("redis", rest))
            .or_else(|| {
                url.strip_prefix("rediss+cluster://")
                    .map(|rest| ("rediss", rest))
            });
        let watch = Arc::new(Watch::default());
        let connection = match cluster {
            Some((scheme, rest)) => {
                let rest = rest.trim_end_matches('/');
                let (user, hosts) = match rest.rsplit_once('@') {
                    Some((user, hosts)) => (format!("{user}@"), hosts),
                    None => (String::new(), rest),
                };
                let nodes: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{scheme}://{user}{h}"))
                    .collect();
                if nodes.is_empty() {
                    return Err(bad("no node is named".into()));
                }
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(Pushes(watch.clone()))
                    .build()
                    .map_err(|e| bad(unavailable(e).to_string()))?;
                let connection = tokio::time::timeout(timeout, client.get_async_connection())
                    .await
                    .map_err(|_| bad("no answer in time".into()))?
                    .map_err(|e| bad(unavailable(e).to_string()))?;
                Connection::Cluster(connection)
            }
            None => {
                let client = Client::open(url).map_err(|e| bad(unavailable(e).to_string()))?;
                // RESP3, so that Redis can push what changed on the same connection.
                let info = client.get_connection_info().clone();
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let client = Client::open(info.set_redis_settings(settings))
                    .map_err(|e| bad(unavailable(e).to_string()))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(timeout)
                    .set_push_sender(Pushes(watch.clone()));
                let connection = tokio::time::timeout(
                    timeout,
                    ConnectionManager::new_with_config(client, config),
                )
                .await
                .map_err(|_| bad("no answer in time".into()))?
                .map_err(|e| bad(unavailable(e).to_string()))?;
                Connection::Node(connection)
            }
        };
        let store = RedisStore {
            watch,
            alive: Arc::new(()),
            connection,
            put: Script::new(PUT),
            put_setting: Script::new(PUT_SETTING),
        };
        store.ping().await.map_err(|e| bad(e.to_string()))?;
        Ok(store)
    }

    /// Runs the put script on `puts`, all of whose keys share one hash tag.
    async fn put_together(&self, puts: &[(&Record, Option<u64>)]) -> Result<(), StoreError> {
        let mut invocation = self.put.prepare_invoke();
        for (record, expected) in puts {
            invocation
                .key(key(record.id()))
                .arg(
                    expected
                        .map(|v| v.to_be_bytes().to_vec())
                        .unwrap_or_default(),
                )
                .arg(record.stored().as_ref())
                .arg(record.expires_at());
        }
        let saved: i64 = self
            .connection
            .invoke(&invocation)
            .await
            .map_err(unavailable)?;
        if saved == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn get_record(&self, id: SessionId, now_ms: u64) -> Result<Option<Record>, StoreError> {
        let stored: Option<Vec<u8>> = self
            .connection
            .query(::redis::cmd("GET").arg(key(id)))
            .await
            .map_err(unavailable)?;
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let record = Record::parse(Bytes::from(bytes))?;
        Ok((!record.is_expired(now_ms)).then_some(record))
    }

    /// A new session (`expected` `None`) with `SET … NX`: the same condition as the put script's
    /// (no stored record under the key), without the script, which costs Redis several times a
    /// `SET` (`INFO commandstats` under load: ~20 µs per call against ~5 µs). A stored version
    /// to compare needs the script.
    async fn put_record(&self, record: &Record, expected: Option<u64>) -> Result<(), StoreError> {
        if expected.is_some() {
            return self.put_together(&[(record, expected)]).await;
        }
        let mut set = ::redis::cmd("SET");
        set.arg(key(record.id()))
            .arg(record.stored().as_ref())
            .arg("PXAT")
            .arg(record.expires_at())
            .arg("NX");
        let saved: Value = self.connection.query(&set).await.map_err(unavailable)?;
        match saved {
            Value::Nil => Err(StoreError::Conflict),
            _ => Ok(()),
        }
    }

    /// One script when every record has the same hash tag (a session and its successor always
    /// do); otherwise in order, the new records removed again when a later condition fails.
    async fn put_records(&self, puts: &[(&Record, Option<u64>)]) -> Result<(), StoreError> {
        let Some(((first, _), rest)) = puts.split_first() else {
            return Ok(());
        };
        if rest.iter().all(|(r, _)| tag(r.id()) == tag(first.id())) {
            return self.put_together(puts).await;
        }
        crate::put_in_order(self, puts).await
    }

    async fn delete(&self, id: SessionId) -> Result<bool, StoreError> {
        let removed: i64 = self
            .connection
            .query(::redis::cmd("DEL").arg(key(id)))
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    /// Redis removes a session at its deadline (`PXAT`): there is nothing to purge.
    async fn purge_expired(&self, _now_ms: u64) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn expires_by_itself(&self) -> bool {
        true
    }

    /// Redis pushes, on the data connections (each master's, on a cluster), the session keys
    /// other processes write (`CLIENT TRACKING ON BCAST PREFIX sessiond:{ NOLOOP`).
    async fn watch(&self, on_change: OnChange) -> Result<bool, StoreError> {
        if self.watch.on_change.set(on_change).is_err() {
            return Ok(true);
        }
        tokio::spawn(keep_watching(
            Arc::downgrade(&self.alive),
            self.watch.clone(),
            self.connection.clone(),
        ));
        Ok(true)
    }

    async fn agree(&self, name: &str, value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let earlier: Option<Vec<u8>> = self
            .connection
            .query(
                ::redis::cmd("SET")
                    .arg(format!("{SHARED_PREFIX}{name}"))
                    .arg(value)
                    .arg("NX")
                    .arg("GET"),
            )
            .await
            .map_err(unavailable)?;
        Ok(Some(earlier.unwrap_or_else(|| value.to_vec())))
    }

    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.connection
            .query(::redis::cmd("GET").arg(format!("{SETTING_PREFIX}{name}")))
            .await
            .map_err(unavailable)
    }

    async fn put_setting(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut invocation = self.put_setting.key(format!("{SETTING_PREFIX}{name}"));
        invocation
            .arg(value)
            .arg(if expected.is_none() { "1" } else { "0" })
            .arg(expected.unwrap_or_default());
        let stored: i64 = self
            .connection
            .invoke(&invocation)
            .await
            .map_err(unavailable)?;
        if stored == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .connection
            .query(&::redis::cmd("PING"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            redacted("redis://:s3cret@localhost:6379/2"),
            "redis://:***@localhost:6379/2"
        );
        assert_eq!(
            redacted("rediss://app:s3cret@cache.example:6380"),
            "rediss://app:***@cache.example:6380"
        );
        assert_eq!(
            redacted("redis+cluster://:pw@a:7000,b:7001"),
            "redis+cluster://:***@a:7000,b:7001"
        );
        assert_eq!(redacted("redis://localhost:6379"), "redis://localhost:6379");
        assert_eq!(redacted("not a url"), "not a url");
    }

    #[test]
    fn tracking_info_is_read_in_both_protocols() {
        let on = Value::Map(vec![(
            Value::BulkString(b"flags".to_vec()),
            Value::Set(vec![
                Value::SimpleString("on".into()),
                Value::SimpleString("bcast".into()),
            ]),
        )]);
        assert!(tracking_on(&on));
        let off = Value::Array(vec![
            Value::BulkString(b"flags".to_vec()),
            Value::Array(vec![Value::BulkString(b"off".to_vec())]),
            Value::BulkString(b"prefixes".to_vec()),
            Value::Array(vec![]),
        ]);
        assert!(!tracking_on(&off));
    }

    #[tokio::test]
    async fn a_refused_url_names_no_password() {
        for url in ["redis://:s3cret@[::1", "redis://:s3cret@127.0.0.1:1/x"] {
            let e = match RedisStore::open(url, Duration::from_millis(500)).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{url} opened"),
            };
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_key_names_its_session() {
        let id = SessionId::random();
        assert_eq!(id_of(&key(id)), Some(id));
        assert_eq!(id_of(b"sessiond:shared:session-signing-key"), None);
        assert_eq!(id_of(b"sessiond:{zz}:00"), None);
    }

    #[test]
    fn a_session_and_its_successor_share_a_hash_tag() {
        let id = SessionId::random();
        let k = String::from_utf8(key(id)).unwrap();
        let hex: String = id.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(k, format!("sessiond:{{{}}}:{}", &hex[..8], &hex[8..]));
        let next = String::from_utf8(key(id.successor())).unwrap();
        assert_eq!(k[..19], next[..19]);
        assert_ne!(k, next);
    }
}
