//! TLS (`rediss://`): a `redis-server` with a certificate this test makes, its CA trusted
//! through `SSL_CERT_FILE` (which the client's rustls reads with the system's roots), and the
//! conformance suite over it. A binary of its own: it sets an environment variable.

use std::time::Duration;

use sessiond_store::{conformance, RedisStore};
use sessiond_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_tls_conforms() {
    let server = RedisServer::with_tls();
    // Without the CA, the server's certificate is refused.
    assert!(RedisStore::open(&server.tls_url(), Duration::from_secs(2))
        .await
        .is_err());
    std::env::set_var("SSL_CERT_FILE", server.ca_file());
    let store = RedisStore::open(&server.tls_url(), Duration::from_secs(2))
        .await
        .unwrap();
    conformance::run_all(|| store.clone()).await;
    assert_ne!(server.cli(&["dbsize"]), "0");
}
