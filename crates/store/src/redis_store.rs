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
//! Calls are bounded by the timeout given at [`RedisStore::open`] (connecting and each answer);
//! a Redis that is down or frozen is [`StoreError::Unavailable`], and the next call after it is
//! back succeeds. A password in a URL is never written to an error or a log.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, FromRedisValue, RedisError, Script, ScriptInvocation};
use async_trait::async_trait;
use bytes::Bytes;
use sessiond_core::{Record, SessionId};

use crate::{SessionStore, StoreError};

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

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    put: Script,
}

#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
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
fn key(id: SessionId) -> String {
    use std::fmt::Write;
    let bytes = id.as_bytes();
    let mut key = String::with_capacity(45);
    key.push_str("sessiond:{");
    for b in &bytes[..4] {
        let _ = write!(key, "{b:02x}");
    }
    key.push_str("}:");
    for b in &bytes[4..] {
        let _ = write!(key, "{b:02x}");
    }
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
        // TLS runs on rustls with ring (as everything else here); a provider chosen earlier
        // by the process stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bad =
            |why: String| StoreError::Unavailable(format!("store `{}`: {why}", redacted(url)));
        let cluster = url
            .strip_prefix("redis+cluster://")
            .map(|rest| ("redis", rest))
            .or_else(|| {
                url.strip_prefix("rediss+cluster://")
                    .map(|rest| ("rediss", rest))
            });
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
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(timeout);
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
            connection,
            put: Script::new(PUT),
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
                .arg(record.bytes().as_ref())
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

    async fn put_record(&self, record: &Record, expected: Option<u64>) -> Result<(), StoreError> {
        self.put_together(&[(record, expected)]).await
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
        for (i, (record, expected)) in puts.iter().enumerate() {
            if let Err(e) = self.put_record(record, *expected).await {
                for (written, _) in puts[..i].iter().filter(|(_, e)| e.is_none()) {
                    self.delete(written.id()).await?;
                }
                return Err(e);
            }
        }
        Ok(())
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
    fn a_session_and_its_successor_share_a_hash_tag() {
        let id = SessionId::random();
        let k = key(id);
        assert_eq!(k.len(), 44);
        assert!(
            k.starts_with("sessiond:{") && k.as_bytes()[18] == b'}',
            "{k}"
        );
        let next = key(id.successor());
        assert_eq!(k[..19], next[..19]);
        assert_ne!(k, next);
    }
}
