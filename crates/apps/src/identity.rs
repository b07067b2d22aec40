//! Identity providers (SPEC §6a): how an account's identity tokens are verified, and which of
//! their claims name the user.
//!
//! An account's [`Identity`] names exactly one key source: a shared HS256 secret, one public key
//! (RSA, P-256 or Ed25519, PEM), or the JWKS document of an OpenID Connect provider, fetched at
//! start and kept fresh in the background ([`Jwks`]). The algorithm always comes from the key,
//! never from the token: `alg: none`, an HMAC token checked against a public key, or any
//! algorithm other than the key's own are refused.
//!
//! Claims follow VTEX ID by default (`sub` is the email, `userId` the id, `audience` is `admin`
//! or `webstore`); the account's identity can name other claims and audiences. The audience is
//! read from `aud` (a string or an array) and from `audience`; an `account` claim, when present,
//! must name the account; `exp` is required and `nbf` honoured with [`NBF_LEEWAY_SECS`].
//!
//! A token that verified is remembered by its SHA-256 digest until its `exp`: a visitor's
//! cookie comes with every request that re-runs the authentication app, and a public-key
//! verification costs tens of microseconds, so any key source costs one lookup per request.
//!
//! Also owns [`mint`], which signs the tokens `sessiond auth-token` prints.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::{Mutex, RwLock};
use quick_cache::sync::Cache;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// How far in the future a token's `nbf` may lie (clocks of two machines disagree a little).
pub const NBF_LEEWAY_SECS: u64 = 60;
/// Most identity tokens remembered as verified per account; past it, each new one takes the
/// place of one not used lately.
const REMEMBERED_TOKENS: usize = 1 << 16;
/// How often a JWKS document is fetched again when its answer says nothing.
const JWKS_REFRESH: Duration = Duration::from_secs(600);
/// Bounds on a `Cache-Control: max-age` the refresh follows.
const JWKS_MAX_AGE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(86_400));
/// At most one fetch asked for by tokens with an unknown key per this long.
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(10);
/// Longest wait of one fetch of a JWKS document.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a request carrying a token of an unknown key waits for the fetch it asked for; a
/// provider slower than this costs such a request this much at most and no other request
/// anything.
const JWKS_WAIT: Duration = Duration::from_millis(500);
/// Retry delays while a JWKS document cannot be fetched (doubling up to the last).
const JWKS_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 1 << 20;

/// The identity table of an account: where its identity tokens' keys come from and which claims
/// to read (VTEX ID's conventions by default).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Shared HS256 secret.
    pub hs256_secret: Option<String>,
    /// One public key, PEM (`-----BEGIN PUBLIC KEY-----`): RSA (RS256), P-256 (ES256) or
    /// Ed25519 (EdDSA).
    pub public_key_pem: Option<String>,
    /// The JWKS document of an OpenID Connect provider (`http://` or `https://`).
    pub jwks_url: Option<String>,
    /// When set, the `iss` every token must carry.
    pub issuer: Option<String>,
    /// The claim holding the user's email (default `sub`).
    pub email_claim: Option<String>,
    /// The claim holding the user's id (default `userId`).
    pub user_id_claim: Option<String>,
    /// The audience of admin tokens (default `admin`).
    pub admin_audience: Option<String>,
    /// The audience of store-user tokens (default `webstore`).
    pub store_audience: Option<String>,
}

impl Identity {
    /// The claim holding the user's email.
    pub fn email_claim(&self) -> &str {
        self.email_claim.as_deref().unwrap_or("sub")
    }

    /// The claim holding the user's id.
    pub fn user_id_claim(&self) -> &str {
        self.user_id_claim.as_deref().unwrap_or("userId")
    }

    /// The audience of admin tokens.
    pub fn admin_audience(&self) -> &str {
        self.admin_audience.as_deref().unwrap_or("admin")
    }

    /// The audience of store-user tokens.
    pub fn store_audience(&self) -> &str {
        self.store_audience.as_deref().unwrap_or("webstore")
    }

    /// The key source, checked: exactly one of the three (none at all when the account has no
    /// identity table), a usable secret, PEM or URL, and sensible claim names.
    fn source(&self) -> Result<Source, String> {
        let given = [
            self.hs256_secret.is_some(),
            self.public_key_pem.is_some(),
            self.jwks_url.is_some(),
        ];
        let count = given.iter().filter(|&&g| g).count();
        if count > 1 {
            return Err(
                "identity takes exactly one of hs256_secret, public_key_pem, jwks_url".to_owned(),
            );
        }
        if count == 0 && *self != Identity::default() {
            return Err("identity needs one of hs256_secret, public_key_pem, jwks_url".to_owned());
        }
        for (name, value) in [
            ("issuer", &self.issuer),
            ("email_claim", &self.email_claim),
            ("user_id_claim", &self.user_id_claim),
            ("admin_audience", &self.admin_audience),
            ("store_audience", &self.store_audience),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("identity {name} is empty"));
            }
        }
        for (name, claim) in [
            ("email_claim", self.email_claim()),
            ("user_id_claim", self.user_id_claim()),
        ] {
            const RESERVED: [&str; 8] = [
                "exp", "nbf", "iat", "iss", "aud", "audience", "account", "jti",
            ];
            if RESERVED.contains(&claim) {
                return Err(format!(
                    "identity {name} `{claim}` names a claim that is not the user's"
                ));
            }
        }
        if self.admin_audience() == self.store_audience() {
            return Err(format!(
                "identity admin_audience and store_audience are both `{}`: a store user's token \
                 would make them an admin",
                self.admin_audience()
            ));
        }
        if let Some(secret) = &self.hs256_secret {
            if secret.is_empty() {
                return Err("the identity hs256_secret is empty".to_owned());
            }
            return Ok(Source::Fixed(Key {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithm: Algorithm::HS256,
            }));
        }
        if let Some(pem) = &self.public_key_pem {
            return public_key(pem).map(Source::Fixed);
        }
        if let Some(url) = &self.jwks_url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| format!("the identity jwks_url `{url}` is not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(format!(
                    "the identity jwks_url `{url}` must be an http:// or https:// URL"
                ));
            }
            return Ok(Source::Jwks(parsed));
        }
        Ok(Source::None)
    }
}

/// Where the keys of an account come from, checked.
enum Source {
    None,
    Fixed(Key),
    Jwks(reqwest::Url),
}

/// One verification key and the one algorithm it takes.
#[derive(Clone)]
struct Key {
    /// The key's id (JWKS keys).
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

/// The identity cookie a token came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cookie {
    /// `VtexIdclientAutCookie`: admin tokens only.
    Admin,
    /// `VtexIdclientAutCookie_<account>`: store-user tokens, and tokens without an audience.
    Store,
}

/// A user an identity token logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: String,
    /// The user's email.
    pub email: String,
}

/// What an identity token is worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It logs this user in.
    User(User),
    /// It logs nobody in: bad signature, expired, not yet valid, another account, issuer or
    /// audience, a claim missing.
    Refused,
    /// It cannot be checked now: the key it names is not known and the provider's keys could
    /// not be fetched in time. Says why.
    Undecided(String),
}

/// What a token that verified says, as far as log-in reads it.
#[derive(Clone)]
struct Verified {
    user: User,
    /// The `account` claim, when there was one.
    account: Option<String>,
    /// Whether it has the admin audience.
    admin: bool,
    /// Whether it has the store audience, or no audience at all.
    store: bool,
    /// Seconds since the Unix epoch; valid while `exp > now`.
    exp: u64,
}

/// The outcome of checking a token's signature and claims.
enum Checked {
    Verified(Arc<Verified>),
    Refused,
    /// No key to check it with (yet): why.
    NoKey(String),
}

/// Verifies the identity tokens of one account.
pub struct Verifier {
    identity: Identity,
    keys: Keys,
    /// Tokens that verified, by SHA-256 digest of the (trimmed) token: a sharded cache of
    /// [`REMEMBERED_TOKENS`] at most. `None` when the account takes no identity tokens (an
    /// empty cache still holds its shards).
    remembered: Option<Cache<[u8; 32], Arc<Verified>>>,
}

enum Keys {
    /// The account takes no identity tokens.
    None,
    Fixed(Key),
    Jwks(Arc<Jwks>),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::None => "none".to_owned(),
            Keys::Fixed(k) => format!("{:?}", k.algorithm),
            Keys::Jwks(j) => format!("jwks {}", j.url),
        };
        f.debug_struct("Verifier").field("keys", &keys).finish()
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Verifier {
    /// The verifier of `identity`; errs, saying what is wrong, when the table is not usable.
    /// A JWKS document is fetched once [`Verifier::start`] is called.
    pub fn new(identity: &Identity) -> Result<Self, String> {
        crate::jwt::install();
        let keys = match identity.source()? {
            Source::None => Keys::None,
            Source::Fixed(key) => Keys::Fixed(key),
            Source::Jwks(url) => Keys::Jwks(Arc::new(Jwks::new(url)?)),
        };
        Ok(Verifier {
            identity: identity.clone(),
            remembered: (!matches!(keys, Keys::None)).then(|| Cache::new(REMEMBERED_TOKENS)),
            keys,
        })
    }

    /// The identity table this verifier follows.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Starts fetching the provider's keys in the background (JWKS accounts; nothing for the
    /// others, and nothing the second time). Needs a Tokio runtime.
    pub fn start(&self) {
        if let Keys::Jwks(jwks) = &self.keys {
            jwks.start();
        }
    }

    /// What `token`, sent in `cookie` of a request of `account`, is worth. With a JWKS whose
    /// keys do not include the token's, asks for the document again (at most once per
    /// [`JWKS_REFETCH_EVERY`]) and, with `may_wait`, waits for it [`JWKS_WAIT`] at most. A key
    /// still unknown is a refusal while the provider answers (it does not publish that key),
    /// and undecided only while its keys cannot be fetched.
    pub async fn verify(
        &self,
        token: &str,
        account: &str,
        cookie: Cookie,
        may_wait: bool,
    ) -> Verdict {
        let token = token.trim();
        let checked = match self.check(token, now_secs()) {
            Checked::NoKey(why) => match &self.keys {
                Keys::Jwks(jwks) => {
                    let checked = match jwks.refetch(may_wait).await {
                        true => self.check(token, now_secs()),
                        false => Checked::NoKey(why),
                    };
                    match checked {
                        Checked::NoKey(_) if jwks.healthy() => Checked::Refused,
                        checked => checked,
                    }
                }
                _ => Checked::NoKey(why),
            },
            checked => checked,
        };
        match checked {
            Checked::Verified(v) => {
                let kind = match cookie {
                    Cookie::Admin => v.admin,
                    Cookie::Store => v.store,
                };
                let account_ok = v
                    .account
                    .as_deref()
                    .is_none_or(|a| a.eq_ignore_ascii_case(account));
                if kind && account_ok {
                    Verdict::User(v.user.clone())
                } else {
                    Verdict::Refused
                }
            }
            Checked::Refused => Verdict::Refused,
            Checked::NoKey(why) => Verdict::Undecided(why),
        }
    }

    /// Checks `token` at `now`: from the memory of verified tokens, else its signature and
    /// claims (remembered when it verifies).
    fn check(&self, token: &str, now: u64) -> Checked {
        // No memory: the account takes no identity tokens.
        let Some(remembered) = &self.remembered else {
            return Checked::Refused;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(v) = remembered.get(&digest) {
            if v.exp > now {
                return Checked::Verified(v);
            }
            // Expired: checked again below (and refused); its place goes to other tokens.
            remembered.remove_if(&digest, |v| v.exp <= now);
        }
        let checked = self.check_signed(token, now);
        if let Checked::Verified(v) = &checked {
            remembered.insert(digest, Arc::clone(v));
        }
        checked
    }

    /// Checks the signature of `token` with the key it names, then its claims.
    fn check_signed(&self, token: &str, now: u64) -> Checked {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Checked::Refused;
        };
        let claims = match &self.keys {
            Keys::None => return Checked::Refused,
            Keys::Fixed(key) => match verify_with(token, key, header.alg, &self.identity) {
                Some(claims) => claims,
                None => return Checked::Refused,
            },
            Keys::Jwks(jwks) => {
                let set = jwks.keys();
                if !set.loaded {
                    return Checked::NoKey(format!(
                        "the keys at {} have not been fetched yet",
                        jwks.url
                    ));
                }
                let candidates: Vec<&Key> = match header.kid.as_deref() {
                    Some(kid) => {
                        // Every key of that id (a provider may publish one per algorithm).
                        let named: Vec<&Key> = set
                            .keys
                            .iter()
                            .filter(|k| k.kid.as_deref() == Some(kid))
                            .collect();
                        if named.is_empty() {
                            return Checked::NoKey(format!(
                                "no key `{kid}` among the keys at {}",
                                jwks.url
                            ));
                        }
                        named
                    }
                    None => set.keys.iter().collect(),
                };
                match candidates
                    .into_iter()
                    .find_map(|key| verify_with(token, key, header.alg, &self.identity))
                {
                    Some(claims) => claims,
                    None => return Checked::Refused,
                }
            }
        };
        match read_claims(&claims, &self.identity, now) {
            Some(v) => Checked::Verified(Arc::new(v)),
            None => Checked::Refused,
        }
    }
}

/// The claims of `token` when it is signed by `key` with the key's own algorithm (`alg` is the
/// token's header), unexpired and from the configured issuer.
fn verify_with(
    token: &str,
    key: &Key,
    alg: Algorithm,
    identity: &Identity,
) -> Option<Map<String, Value>> {
    if alg != key.algorithm {
        return None;
    }
    let mut validation = Validation::new(key.algorithm);
    // `exp` without leeway; `nbf` is read with its own leeway in `read_claims`.
    validation.leeway = 0;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    if let Some(issuer) = &identity.issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".to_owned());
    }
    jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .ok()
        .map(|data| data.claims)
}

/// What verified `claims` say, or `None` when they log nobody in: not yet valid, the user's
/// email or id missing, an audience neither admin nor store.
fn read_claims(claims: &Map<String, Value>, identity: &Identity, now: u64) -> Option<Verified> {
    let number = |name: &str| claims.get(name).and_then(Value::as_f64);
    match claims.get("nbf") {
        None | Some(Value::Null) => {}
        // Not a number: no time it is valid from can be read, so it is not valid.
        Some(nbf) => {
            if nbf.as_f64()? > (now + NBF_LEEWAY_SECS) as f64 {
                return None;
            }
        }
    }
    let exp = number("exp")?;
    let text = |name: &str| match claims.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let user = User {
        id: text(identity.user_id_claim())?,
        email: text(identity.email_claim())?,
    };
    let account = match claims.get("account") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a.clone()),
        Some(_) => return None,
    };
    let mut audiences = BTreeSet::new();
    for name in ["aud", "audience"] {
        match claims.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(a)) => {
                audiences.insert(a.as_str());
            }
            Some(Value::Array(list)) => {
                for a in list {
                    audiences.insert(a.as_str()?);
                }
            }
            Some(_) => return None,
        }
    }
    let admin = audiences.contains(identity.admin_audience());
    let store = audiences.is_empty() || audiences.contains(identity.store_audience());
    if !admin && !store {
        return None;
    }
    Some(Verified {
        user,
        account,
        admin,
        store,
        exp: exp as u64,
    })
}

/// The verification key of a public key PEM and the one algorithm it takes.
fn public_key(pem: &str) -> Result<Key, String> {
    if pem.contains("PRIVATE KEY") {
        return Err(
            "the identity public_key_pem holds a private key; configure the public key \
             (-----BEGIN PUBLIC KEY-----)"
                .to_owned(),
        );
    }
    let fixed = |key, algorithm| {
        Ok(Key {
            kid: None,
            key,
            algorithm,
        })
    };
    if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        // A P-256 point is 65 bytes uncompressed or 33 compressed; other curves are longer.
        let is_p256 = match key.try_get_as_bytes() {
            Ok(point) => matches!(
                (point.len(), point.first()),
                (65, Some(4)) | (33, Some(2 | 3))
            ),
            Err(_) => false,
        };
        if !is_p256 {
            return Err(
                "the identity public_key_pem is an EC key on a curve other than P-256 (ES256)"
                    .to_owned(),
            );
        }
        return fixed(key, Algorithm::ES256);
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem.as_bytes()) {
        return fixed(key, Algorithm::EdDSA);
    }
    match DecodingKey::from_rsa_pem(pem.as_bytes()) {
        Ok(key) => fixed(key, Algorithm::RS256),
        Err(e) => Err(format!(
            "the identity public_key_pem is not a PEM RSA, P-256 or Ed25519 public key: {e}"
        )),
    }
}

/// The keys of a JWKS document, as last fetched.
#[derive(Default)]
struct KeySet {
    /// Whether a document was ever fetched.
    loaded: bool,
    keys: Vec<Key>,
}

/// The keys an OpenID Connect provider publishes at a URL, fetched in the background: at
/// [`Jwks::start`], again after the answer's `Cache-Control: max-age` (else [`JWKS_REFRESH`]),
/// soon again after a failure, and when a token names a key not among them.
struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Counts the fetches that ended (well or not): what a waiting request watches.
    fetches: tokio::sync::watch::Sender<u64>,
    /// Wakes the background task for a fetch now.
    wake: Arc<tokio::sync::Notify>,
    /// When a token last asked for a fetch.
    last_demand: Mutex<Option<Instant>>,
    /// Whether a fetch is under way.
    fetching: AtomicBool,
    /// Whether the last fetch failed.
    failing: AtomicBool,
    started: AtomicBool,
}

impl Jwks {
    fn new(url: reqwest::Url) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .timeout(JWKS_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        Ok(Jwks {
            url,
            client,
            keys: RwLock::default(),
            fetches: tokio::sync::watch::Sender::new(0),
            wake: Arc::default(),
            last_demand: Mutex::new(None),
            // Counted as under way until the first fetch ends: a token arriving before waits
            // for it rather than asking for another.
            fetching: AtomicBool::new(true),
            failing: AtomicBool::new(false),
            started: AtomicBool::new(false),
        })
    }

    /// The keys as last fetched.
    fn keys(&self) -> Arc<KeySet> {
        self.keys.read().clone()
    }

    /// Starts the background task (once).
    fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(refresh(Arc::downgrade(self)));
    }

    /// Whether the provider's keys are known and its last fetch went well: a key it does not
    /// list is then a key it does not publish.
    fn healthy(&self) -> bool {
        self.keys().loaded && !self.failing.load(Ordering::SeqCst)
    }

    /// Asks for a fetch now, unless one was asked for less than [`JWKS_REFETCH_EVERY`] ago and
    /// none is under way, and with `wait` waits for it to end ([`JWKS_WAIT`] at most). Whether
    /// one ended meanwhile.
    async fn refetch(self: &Arc<Self>, wait: bool) -> bool {
        let mut ended = self.fetches.subscribe();
        self.start();
        if !self.fetching.load(Ordering::SeqCst) {
            let mut last = self.last_demand.lock();
            if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
            drop(last);
            self.wake.notify_one();
        }
        if !wait {
            return false;
        }
        matches!(
            tokio::time::timeout(JWKS_WAIT, ended.changed()).await,
            Ok(Ok(()))
        )
    }

    /// One fetch: the usable keys and how long the answer may be kept.
    async fn fetch(&self) -> Result<(Vec<Key>, Option<Duration>), String> {
        let response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot reach it: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("it answered HTTP {}", status.as_u16()));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        if response
            .content_length()
            .is_some_and(|n| n > JWKS_MAX_BYTES as u64)
        {
            return Err("its answer is over 1 MiB".to_owned());
        }
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading its answer failed: {e}"))?
        {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err("its answer is over 1 MiB".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((parse_jwks(&body)?, max_age))
    }
}

/// The background task of a [`Jwks`]: fetches, keeps the keys, sleeps until the next fetch is
/// due or asked for; ends when the key set is dropped. A failure streak is logged once, at
/// warn, and its end at info; the keys fetched last stay in use meanwhile.
async fn refresh(jwks: Weak<Jwks>) {
    let mut failures = 0u32;
    loop {
        let Some(this) = jwks.upgrade() else {
            return;
        };
        this.fetching.store(true, Ordering::SeqCst);
        let fetched = this.fetch().await;
        this.failing.store(fetched.is_err(), Ordering::SeqCst);
        let next = match fetched {
            Ok((keys, max_age)) => {
                if failures > 0 {
                    tracing::info!(url = %this.url, keys = keys.len(), "identity provider keys fetched again");
                }
                failures = 0;
                *this.keys.write() = Arc::new(KeySet { loaded: true, keys });
                max_age.map_or(JWKS_REFRESH, |age| {
                    age.clamp(JWKS_MAX_AGE.0, JWKS_MAX_AGE.1)
                })
            }
            Err(error) => {
                if failures == 0 {
                    tracing::warn!(url = %this.url, %error, "cannot fetch the identity provider's keys; tokens it signed with keys not fetched before are no log-in until it answers");
                }
                failures = failures.saturating_add(1);
                JWKS_RETRY
                    .0
                    .saturating_mul(1 << failures.min(8).saturating_sub(1))
                    .min(JWKS_RETRY.1)
            }
        };
        this.fetching.store(false, Ordering::SeqCst);
        this.fetches.send_modify(|n| *n = n.wrapping_add(1));
        let wake = this.wake.clone();
        drop(this);
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = wake.notified() => {}
        }
    }
}

/// The `max-age` of a `Cache-Control` value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

/// The signing keys of a JWKS document that can be used: RSA, P-256, P-384 and Ed25519 keys,
/// each with the algorithm its `alg` names or its type implies; encryption keys, HMAC keys
/// and keys whose `alg` does not fit their type are passed over. Errs when none is left.
fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document = serde_json::from_slice(body)
        .map_err(|e| format!("its answer is not a JWKS document: {e}"))?;
    let keys: Vec<Key> = document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| jwk_key(&jwk))
        .collect();
    if keys.is_empty() {
        return Err("its JWKS document holds no usable signing key".to_owned());
    }
    Ok(keys)
}

/// The verification key of one JWK, with the one algorithm it takes.
fn jwk_key(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let stated = match jwk.common.key_algorithm {
        Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => return None,
        Some(a) => Some(Algorithm::try_from(a).ok()?),
        None => None,
    };
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match stated {
            None => Algorithm::RS256,
            Some(
                a @ (Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512),
            ) => a,
            Some(_) => return None,
        },
        AlgorithmParameters::EllipticCurve(params) => {
            let by_curve = match params.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            };
            if stated.is_some_and(|a| a != by_curve) {
                return None;
            }
            by_curve
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519
                || stated.is_some_and(|a| a != Algorithm::EdDSA)
            {
                return None;
            }
            Algorithm::EdDSA
        }
        _ => return None,
    };
    Some(Key {
        kid: jwk.common.key_id.clone(),
        key: DecodingKey::from_jwk(jwk).ok()?,
        algorithm,
    })
}

/// What [`mint`] signs a token for.
#[derive(Clone, Copy, Debug)]
pub struct Mint<'a> {
    /// The account the token is for (its `account` claim).
    pub account: &'a str,
    /// The user's email.
    pub email: &'a str,
    /// The user's id.
    pub user_id: &'a str,
    /// An admin token (the admin audience) rather than a store-user token.
    pub admin: bool,
    /// Issued at, seconds since the Unix epoch.
    pub now_secs: u64,
    /// Lifetime, seconds.
    pub ttl_secs: u64,
}

/// Signs an identity token as VTEX ID issues them: the email and the user id in the account's
/// claims (`sub`, `userId` by default), `account`, `audience` (the account's admin or store
/// audience), `sess`, `type: "user"`, `iss` (the configured issuer, else VTEX ID's
/// `token-emitter`), `jti`, `isRepresentative: false`, `iat`, `exp`.
///
/// Signed with the account's `hs256_secret`, or with `signing_key_pem` (the private key
/// whose public half is the account's `public_key_pem`: RSA, P-256 or Ed25519). Errs when the
/// account has neither, when the key does not parse, when the account takes its keys from a
/// JWKS (the provider signs those), and when the token would not verify with the account's key.
pub fn mint(
    identity: &Identity,
    what: &Mint<'_>,
    signing_key_pem: Option<&str>,
) -> Result<String, String> {
    let verifier = Verifier::new(identity)?;
    let Keys::Fixed(public) = &verifier.keys else {
        return Err(match verifier.keys {
            Keys::Jwks(_) => format!(
                "account {} takes identity tokens from its provider (jwks_url); sign them there",
                what.account
            ),
            _ => format!(
                "account {} has no identity keys (hs256_secret or public_key_pem)",
                what.account
            ),
        });
    };
    let (key, algorithm) = match (public, signing_key_pem) {
        (key, None) if key.algorithm == Algorithm::HS256 => {
            let secret = identity.hs256_secret.as_deref().unwrap_or_default();
            (
                EncodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
        }
        (_, None) => {
            return Err(format!(
                "account {} verifies identity tokens with a public key: give the private key \
                 that signs them (--signing-key FILE)",
                what.account
            ))
        }
        (key, Some(pem)) => {
            let parsed = match key.algorithm {
                Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
                Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
                _ => {
                    return Err(format!(
                    "account {} signs identity tokens with hs256_secret; no signing key is needed",
                    what.account
                ))
                }
            };
            let key_kind = match key.algorithm {
                Algorithm::ES256 => "a P-256",
                Algorithm::EdDSA => "an Ed25519",
                _ => "an RSA",
            };
            let parsed = parsed.map_err(|e| {
                format!("the signing key is not {key_kind} private key in PEM (the account's public key is {key_kind} key): {e}")
            })?;
            (parsed, key.algorithm)
        }
    };
    if identity.email_claim() == identity.user_id_claim() {
        return Err(format!(
            "account {}: email_claim and user_id_claim are both `{}`; a token cannot hold both",
            what.account,
            identity.email_claim()
        ));
    }
    let mut claims = Map::new();
    claims.insert(identity.email_claim().to_owned(), Value::from(what.email));
    claims.insert(
        identity.user_id_claim().to_owned(),
        Value::from(what.user_id),
    );
    let audience = if what.admin {
        identity.admin_audience()
    } else {
        identity.store_audience()
    };
    let extra = [
        ("account", Value::from(what.account)),
        ("audience", Value::from(audience)),
        ("sess", Value::from(uuid::Uuid::new_v4().to_string())),
        ("type", Value::from("user")),
        (
            "iss",
            Value::from(identity.issuer.as_deref().unwrap_or("token-emitter")),
        ),
        ("jti", Value::from(uuid::Uuid::new_v4().to_string())),
        ("isRepresentative", Value::from(false)),
        ("iat", Value::from(what.now_secs)),
        (
            "exp",
            Value::from(what.now_secs.saturating_add(what.ttl_secs)),
        ),
    ];
    for (name, value) in extra {
        claims.entry(name).or_insert(value);
    }
    let mut header = Header::new(algorithm);
    header.typ = Some("jwt".to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| format!("cannot sign the identity token: {e}"))?;
    // The signature alone: a token minted already expired (for a test) is still well signed.
    let mut signature_only = Validation::new(algorithm);
    signature_only.validate_exp = false;
    signature_only.validate_aud = false;
    signature_only.required_spec_claims.clear();
    match jsonwebtoken::decode::<Map<String, Value>>(&token, &public.key, &signature_only) {
        Ok(_) => Ok(token),
        Err(_) => Err(format!(
            "the signing key does not match account {}'s public_key_pem",
            what.account
        )),
    }
}

#[cfg(test)]
impl Verifier {
    /// How many verified tokens are remembered.
    pub(crate) fn remembered_len(&self) -> usize {
        self.remembered.as_ref().map_or(0, Cache::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hs256() -> Verifier {
        Verifier::new(&Identity {
            hs256_secret: Some("s".into()),
            ..Identity::default()
        })
        .unwrap()
    }

    fn verified(exp: u64) -> Verified {
        Verified {
            user: User {
                id: "u".into(),
                email: "e".into(),
            },
            account: None,
            admin: false,
            store: true,
            exp,
        }
    }

    #[test]
    fn remembered_tokens_count_until_their_exp_and_the_memory_is_bounded() {
        let v = hs256();
        let memory = v.remembered.as_ref().unwrap();
        let digest: [u8; 32] = Sha256::digest(b"not-a-jwt").into();
        memory.insert(digest, Arc::new(verified(100)));
        assert!(matches!(v.check("not-a-jwt", 99), Checked::Verified(_)));
        // At its exp the entry no longer counts: the token is checked again (and refused).
        assert!(matches!(v.check("not-a-jwt", 100), Checked::Refused));
        assert!(
            matches!(v.check("not-a-jwt", 99), Checked::Refused),
            "and forgotten"
        );
        // Twice as many tokens as the memory holds: it keeps no more than its bound.
        for i in 0..2 * REMEMBERED_TOKENS as u32 {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            memory.insert(d, Arc::new(verified(u64::MAX)));
        }
        let full = v.remembered_len();
        assert!(
            full <= REMEMBERED_TOKENS && full > REMEMBERED_TOKENS / 2,
            "{full} remembered"
        );
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a@b.c", "userId": "u", "exp": now_secs() + 60}),
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(matches!(v.check(&token, now_secs()), Checked::Verified(_)));
        // Full, a new token takes the place of an old one: it is remembered, the bound holds.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert!(memory.contains_key(&digest), "a new token is remembered");
        assert!(v.remembered_len() <= REMEMBERED_TOKENS);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            max_age("Max-Age=\"60\", must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn jwks_keys_take_the_algorithm_of_their_type() {
        // Ed25519 public key of RFC 8037, and P-256 / P-384 points of RFC 7515 / 7520.
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let p256 = json!({"kty": "EC", "crv": "P-256", "kid": "p256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let rsa = json!({"kty": "RSA", "kid": "rsa", "e": "AQAB",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        let keys = parse_jwks(
            json!({"keys": [
                ed, p256, rsa,
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {"kty": "RSA", "use": "enc", "kid": "enc", "e": "AQAB", "n": "0vx7"},
                {"kty": "EC", "crv": "P-256", "alg": "ES384", "kid": "mismatch",
                 "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                 "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
                {"kty": "RSA", "alg": "HS256", "kid": "liar", "e": "AQAB", "n": "0vx7"},
                {"kty": "weird"},
            ]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let found: Vec<(Option<&str>, Algorithm)> = keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.algorithm))
            .collect();
        assert_eq!(
            found,
            [
                (Some("ed"), Algorithm::EdDSA),
                (Some("p256"), Algorithm::ES256),
                (Some("rsa"), Algorithm::RS256),
            ]
        );
        let err = |body: &[u8]| parse_jwks(body).err().unwrap();
        assert!(err(br#"{"keys": []}"#).contains("no usable"));
        assert!(err(b"<html>").contains("not a JWKS"));
    }
}
