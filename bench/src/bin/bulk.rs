//! Adds N sessions straight into a stopped sessiond's data directory (the embedded store), for
//! the measurements at 10,000,000 sessions: through the API that takes ~20 minutes, here about
//! one. Each new session is a copy of a template session (one the API created, named by its
//! token) under a new id, created now, stored as sessiond stores it. The session tokens of one
//! session in EVERY are signed with the data directory's key and written to OUT_FILE, one per
//! line, like `prepare` writes them; those sessions' records keep the digest of their token, as
//! sessiond's records of the sessions it creates do (the others keep none).
//!
//! Usage: `bulk DATA_DIR TEMPLATE_TOKEN COUNT EVERY OUT_FILE`

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine as _;
use sessiond::token::{token_digest, Keyring};
use sessiond_core::{Record, SessionId};
use sessiond_store::{EmbeddedOptions, EmbeddedStore, SessionStore};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sessions written in one store commit.
const BATCH: usize = 2048;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, template, count, every, out] = args.as_slice() else {
        bail!("usage: bulk DATA_DIR TEMPLATE_TOKEN COUNT EVERY OUT_FILE");
    };
    let count: usize = count.parse().context("COUNT must be a number")?;
    let every: usize = every.parse().context("EVERY must be a number")?;
    let dir = Path::new(dir);
    let payload = template
        .split('.')
        .nth(1)
        .context("TEMPLATE_TOKEN is not a JWT")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    let text = |name: &str| {
        claims[name]
            .as_str()
            .with_context(|| format!("no `{name}` in the template token"))
    };
    let id: SessionId = text("id")?.parse().context("the template's id")?;
    let (account, account_id) = (text("account")?, text("account.id")?);

    let store = EmbeddedStore::open(dir, EmbeddedOptions::default())?;
    let keys = Keyring::load(None, &[], dir)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let now_ms = now.as_millis() as u64;
    let record = store
        .get_record(id, now_ms)
        .await?
        .context("the template session is not stored (was it saved?)")?;
    let template = record.decode()?;
    let ttl_ms = template.expires_at.saturating_sub(template.updated_at);
    let segment = record.segment_token().to_owned();

    let mut tokens = std::io::BufWriter::new(std::fs::File::create(out)?);
    let started = std::time::Instant::now();
    let mut written = 0;
    while written < count {
        let n = BATCH.min(count - written);
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let mut session = template.clone();
                session.id = SessionId::random();
                (session.created_at, session.updated_at) = (now_ms, now_ms);
                session.expires_at = now_ms + ttl_ms;
                session.version = 1;
                session.token_digest = None;
                if (written + i) % every == 0 {
                    let token = keys.issue(
                        session.id,
                        account,
                        account_id,
                        now.as_secs(),
                        ttl_ms / 1000,
                    );
                    writeln!(tokens, "{token}")?;
                    session.token_digest = Some(token_digest(&token));
                }
                Ok(Record::encode(&session, Some(&segment)))
            })
            .collect::<anyhow::Result<_>>()?;
        let puts: Vec<_> = records.iter().map(|r| (r, None)).collect();
        store.put_records(&puts).await?;
        written += n;
    }
    tokens.flush()?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "added {count} sessions in {secs:.1} s ({:.0}/s), a token for one in {every}",
        count as f64 / secs
    );
    Ok(())
}
