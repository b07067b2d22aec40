//! Session tokens: the `vtex_session` cookie is an ES256 JWT that names a session.
//!
//! The token carries no session data, so an edit never needs a new one: a token is issued at
//! creation and reset, and re-issued when less than half of its lifetime is left. Anything
//! that is not a token we signed, for this account, and still valid is "no token".
//!
//! Verifying ES256 costs tens of microseconds, so tokens are remembered once verified, and the
//! tokens this process signs are remembered from the start (a token we just signed needs no
//! check). The memory is a bounded concurrent cache keyed by the SHA-256 of the exact token text
//! (a different text never finds another token's entry); expiry and account are still checked
//! on every use.
//!
//! A token this process has not seen needs no signature check either when the record of its
//! session holds its digest ([`token_digest`]): the session was saved with the token signed
//! for it (at creation, at a change of identity, or at its first save after a create without
//! a write), and a text with that SHA-256 is that token. So [`Keyring::lookup`] gives a token
//! it does not remember as [`Lookup::Claimed`], the caller reads the session it names, and
//! [`Keyring::confirm`] compares the digests before it falls back to the signature. A token
//! signed with a key no longer accepted is refused either way.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, LineEnding};
use prometheus::IntCounter;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::UnitWeighter;
use serde::{Deserialize, Serialize};
use sessiond_core::SessionId;
use sha2::{Digest, Sha256};

use crate::prehashed::RandomKeys;

/// The file, in the data directory, holding the generated signing key.
pub const KEY_FILE: &str = "session-signing-key.pem";

/// Most tokens remembered (about 100 bytes each); past it one not used lately is forgotten for
/// each new one (CLOCK-Pro), so a full memory never forgets every token at once (each would then
/// need a signature check again: 50 µs). Once tokens are forgotten, the memory also keeps traces
/// of up to half as many forgotten ones (as large), so that one back soon is kept longer.
const CACHE_LIMIT: usize = 1 << 21;

/// Why the signing keys could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A configured PEM could not be parsed.
    #[error("invalid {what}: {reason}")]
    Pem {
        /// Which key.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The key file could not be read or written.
    #[error("session signing key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The claims of a session token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Session id.
    pub id: String,
    /// Account name.
    pub account: String,
    /// Account UUID.
    #[serde(rename = "account.id")]
    pub account_id: String,
    /// Token format version (1).
    pub version: u64,
    /// Always `session`.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// Set when the session was not saved when the token was issued: a session that holds
    /// only what its create cycle derives is written when something first changes it, and
    /// until then it is derived again whenever its token is presented.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unsaved: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A token verified for one request: the session it names and when it should be renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The session id.
    pub id: SessionId,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// Whether it names a session that was not saved when it was issued ([`Claims::unsaved`]).
    pub unsaved: bool,
}

impl Verified {
    /// Whether less than half of the token's lifetime is left at `now` (seconds).
    pub fn needs_renewal(&self, now: u64) -> bool {
        let half = self.exp.saturating_sub(self.iat) / 2;
        self.exp.saturating_sub(now) < half
    }
}

/// The signing key and every accepted verification key, by `kid`.
///
/// Key files are read and written with `p256` (PKCS#8/SEC1 PEM); tokens are made and checked
/// by `jsonwebtoken`, with the cryptography of [`sessiond_apps::jwt`] (`ring` for ES256: a token
/// is signed at every creation).
pub struct Keyring {
    signing: EncodingKey,
    /// The header of every token signed here (`ES256`, the signing key's `kid`, `JWT`).
    header: Header,
    kid: String,
    verifiers: HashMap<String, DecodingKey>,
    /// Verified tokens by SHA-256 digest, [`CACHE_LIMIT`] at most.
    verified: TokenCache,
    /// Where the signing key came from.
    origin: KeyOrigin,
    /// The public keys, as a JWK set.
    jwks: serde_json::Value,
    /// Tokens not remembered, checked by signature and by record digest.
    checks: [AtomicU64; 2],
    /// The same, in `sessiond_token_checks_total`.
    counted: [IntCounter; 2],
}

/// Where the signing key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Given in the configuration (or by the caller).
    Given,
    /// Generated now and written to this file.
    Generated(std::path::PathBuf),
    /// Read from this file, generated by an earlier start.
    Loaded(std::path::PathBuf),
}

/// The JWK of a session-token verification key.
fn jwk(key: &VerifyingKey) -> serde_json::Value {
    let point = key.to_encoded_point(false);
    let coordinate = |c: Option<&p256::FieldBytes>| {
        URL_SAFE_NO_PAD.encode(c.map(|c| &c[..]).unwrap_or_default())
    };
    serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": coordinate(point.x()),
        "y": coordinate(point.y()),
        "kid": kid_of(key),
        "alg": "ES256",
        "use": "sig",
    })
}

/// What [`Keyring::lookup`] knows of a token before the session it names is read.
pub enum Lookup<'t> {
    /// Verified already (remembered), unexpired and for this account.
    Known(Verified),
    /// Not remembered: what it claims, unchecked, for [`Keyring::confirm`].
    Claimed(Claimed<'t>),
    /// Not a token of ours, expired, or for another account: no token.
    Invalid,
}

/// A token not verified yet, its claims and the key that would have signed it (see
/// [`Lookup::Claimed`]).
pub struct Claimed<'t> {
    token: &'t str,
    key: &'t DecodingKey,
    verified: Verified,
    account: String,
    digest: [u8; 32],
}

impl Claimed<'_> {
    /// The session the token names, if it is genuine.
    pub fn id(&self) -> SessionId {
        self.verified.id
    }
}

/// What a session's record keeps of the token it was saved with: the first 16 bytes of its
/// SHA-256 ([`sessiond_core::Session::token_digest`]).
pub fn token_digest(token: &str) -> [u8; 16] {
    let digest = Sha256::digest(token.as_bytes());
    digest[..16].try_into().expect("16 of 32 bytes")
}

/// A verified token as remembered: what it names and the account it was issued for.
type CachedToken = (Verified, Arc<str>);

/// Verified tokens by SHA-256 digest (random already: hashed by [`RandomKeys`]).
type TokenCache = Cache<[u8; 32], CachedToken, UnitWeighter, RandomKeys>;

/// A memory of at most `limit` verified tokens.
fn token_cache(limit: usize) -> TokenCache {
    Cache::with(
        limit,
        limit as u64,
        UnitWeighter,
        RandomKeys::default(),
        DefaultLifecycle::default(),
    )
}

fn kid_of(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.to_encoded_point(false).as_bytes());
    digest[..20].iter().map(|b| format!("{b:02X}")).collect()
}

fn parse_signing(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem)
        .or_else(|_| p256::SecretKey::from_sec1_pem(pem).map(SigningKey::from))
        .map_err(|e| KeyError::Pem {
            what: "session signing key (an ES256/P-256 private key in PKCS#8 or SEC1 PEM)",
            reason: e.to_string(),
        })
}

impl Keyring {
    /// Uses `signing_pem` when given, else the key in `data_dir` (generated on first start,
    /// written with mode 0600). `extra` are further public keys whose tokens are accepted.
    pub fn load(
        signing_pem: Option<&str>,
        extra: &[String],
        data_dir: &Path,
    ) -> Result<Self, KeyError> {
        let (signing, origin) = match signing_pem {
            Some(pem) => (parse_signing(pem)?, KeyOrigin::Given),
            None => load_or_generate(data_dir)?,
        };
        sessiond_apps::jwt::install();
        let mut verifiers = HashMap::new();
        let mut keys = Vec::new();
        let mut accept = |key: &VerifyingKey| {
            let point = key.to_encoded_point(false);
            if verifiers
                .insert(kid_of(key), DecodingKey::from_ec_der(point.as_bytes()))
                .is_none()
            {
                keys.push(jwk(key));
            }
        };
        for pem in extra {
            let key = VerifyingKey::from_public_key_pem(pem)
                .or_else(|_| parse_signing(pem).map(|k| *k.verifying_key()))
                .map_err(|_| KeyError::Pem {
                    what: "verification key (a P-256 public key PEM)",
                    reason: "not a P-256 public or private key".into(),
                })?;
            accept(&key);
        }
        accept(signing.verifying_key());
        let kid = kid_of(signing.verifying_key());
        let der = signing.to_pkcs8_der().map_err(|e| KeyError::Pem {
            what: "session signing key",
            reason: e.to_string(),
        })?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        Ok(Keyring {
            signing: EncodingKey::from_ec_der(der.as_bytes()),
            header,
            kid,
            verifiers,
            verified: token_cache(CACHE_LIMIT),
            origin,
            jwks: serde_json::json!({ "keys": keys }),
            checks: Default::default(),
            counted: ["signature", "record"].map(|by| {
                crate::telemetry::metrics()
                    .token_checks
                    .with_label_values(&[by])
            }),
        })
    }

    /// Where the signing key came from.
    pub fn origin(&self) -> &KeyOrigin {
        &self.origin
    }

    /// Every public key whose tokens are accepted, as a JWK set (RFC 7517).
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// The key id of the signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs a token for session `id` of `account`, valid for `ttl_secs` from `now`.
    pub fn issue(
        &self,
        id: SessionId,
        account: &str,
        account_id: &str,
        now: u64,
        ttl_secs: u64,
    ) -> String {
        self.issue_for(id, (account, account_id), now, ttl_secs, false)
            .0
    }

    /// [`Keyring::issue`] for a session that is stored or, with `unsaved`, not yet; with the
    /// token's digest as a record keeps it ([`token_digest`]).
    pub fn issue_for(
        &self,
        id: SessionId,
        (account, account_id): (&str, &str),
        now: u64,
        ttl_secs: u64,
        unsaved: bool,
    ) -> (String, [u8; 16]) {
        let claims = Claims {
            id: id.to_string(),
            account: account.to_owned(),
            account_id: account_id.to_owned(),
            version: 1,
            sub: "session".into(),
            iss: "sessiond".into(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
            jti: uuid::Uuid::new_v4().to_string(),
            unsaved,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.signing)
            .expect("signing with a valid P-256 key and the system RNG does not fail");
        let verified = Verified {
            id,
            exp: claims.exp,
            iat: claims.iat,
            unsaved,
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.verified
            .insert(digest, (verified, claims.account.into()));
        (token, digest[..16].try_into().expect("16 of 32 bytes"))
    }

    /// The session a token names, if the token is ours, unexpired at `now` (seconds) and
    /// issued for `account`. Anything else is `None`: the caller treats it as no token.
    pub fn verify(&self, token: &str, account: &str, now: u64) -> Option<Verified> {
        match self.lookup(token, account, now) {
            Lookup::Known(verified) => Some(verified),
            Lookup::Claimed(claimed) => self.confirm(claimed, None),
            Lookup::Invalid => None,
        }
    }

    /// A token as remembered, or else what it claims (unchecked) if it could be a token of
    /// ours that is unexpired at `now` (seconds) and issued for `account`: a JWT within 4 KiB,
    /// of a `kid` whose tokens are accepted, naming a session.
    pub fn lookup<'t>(&'t self, token: &'t str, account: &str, now: u64) -> Lookup<'t> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let valid = |v: &Verified, of: &str| v.exp > now && of.eq_ignore_ascii_case(account);
        if let Some((verified, token_account)) = self.verified.get(&digest) {
            return match valid(&verified, &token_account) {
                true => Lookup::Known(verified),
                false => Lookup::Invalid,
            };
        }
        match self.claims(token) {
            Some((key, verified, token_account)) if valid(&verified, &token_account) => {
                Lookup::Claimed(Claimed {
                    token,
                    key,
                    verified,
                    account: token_account,
                    digest,
                })
            }
            _ => Lookup::Invalid,
        }
    }

    /// The token of `claimed` as verified: by `stored`, the digest kept in the record of the
    /// session it names, when that is the token's; else by its signature. Remembered either
    /// way.
    pub fn confirm(&self, claimed: Claimed<'_>, stored: Option<&[u8; 16]>) -> Option<Verified> {
        let by_record = stored.is_some_and(|d| d[..] == claimed.digest[..16]);
        self.checks[by_record as usize].fetch_add(1, Ordering::Relaxed);
        self.counted[by_record as usize].inc();
        if !by_record {
            // The claims are those of the signed text: only the signature is left to check.
            let (message, signature) = claimed.token.rsplit_once('.')?;
            jsonwebtoken::crypto::verify(
                signature,
                message.as_bytes(),
                claimed.key,
                Algorithm::ES256,
            )
            .ok()
            .filter(|&holds| holds)?;
        }
        self.verified
            .insert(claimed.digest, (claimed.verified, claimed.account.into()));
        Some(claimed.verified)
    }

    /// How many tokens it did not remember it checked: by signature, and by the digest kept
    /// in their session's record.
    pub fn checks(&self) -> (u64, u64) {
        let [signature, record] = &self.checks;
        (
            signature.load(Ordering::Relaxed),
            record.load(Ordering::Relaxed),
        )
    }

    /// The claims of `token`, unchecked, and the key that would have signed it, if its header
    /// says ES256 and names a key whose tokens are accepted.
    fn claims(&self, token: &str) -> Option<(&DecodingKey, Verified, String)> {
        if token.len() > 4096 {
            return None;
        }
        let data = jsonwebtoken::dangerous::insecure_decode::<Claims>(token).ok()?;
        if data.header.alg != Algorithm::ES256 {
            return None;
        }
        let key = self.verifiers.get(data.header.kid.as_deref()?)?;
        let claims = data.claims;
        if claims.sub != "session" {
            return None;
        }
        let id = claims.id.parse().ok()?;
        Some((
            key,
            Verified {
                id,
                exp: claims.exp,
                iat: claims.iat,
                unsaved: claims.unsaved,
            },
            claims.account,
        ))
    }
}

/// A new session signing key (P-256), as PKCS#8 PEM.
pub fn generate_pem() -> Result<String, KeyError> {
    let key = SigningKey::random(&mut rand_core::OsRng);
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| KeyError::Pem {
            what: "generated signing key",
            reason: e.to_string(),
        })
}

fn load_or_generate(data_dir: &Path) -> Result<(SigningKey, KeyOrigin), KeyError> {
    let path = data_dir.join(KEY_FILE);
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(pem) => return Ok((parse_signing(&pem)?, KeyOrigin::Loaded(path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let pem = generate_pem()?;
    let key = parse_signing(&pem)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(pem.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((key, KeyOrigin::Generated(path)))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((
            parse_signing(&std::fs::read_to_string(&path).map_err(io)?)?,
            KeyOrigin::Loaded(path),
        )),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn ring(dir: &Path) -> Keyring {
        Keyring::load(None, &[], dir).unwrap()
    }

    #[test]
    fn session_tokens_are_signed_by_ring() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring(dir.path());
        // RustCrypto's ECDSA nonces are deterministic (RFC 6979), ring's are random: the same
        // claims signed twice differ only with ring.
        let claims = serde_json::json!({"sub": "session"});
        let a = jsonwebtoken::encode(&keys.header, &claims, &keys.signing).unwrap();
        let b = jsonwebtoken::encode(&keys.header, &claims, &keys.signing).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_full_token_memory_forgets_one_token_per_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = ring(dir.path());
        keys.verified = token_cache(4);
        let tokens: Vec<_> = (0..10)
            .map(|i| {
                let id = SessionId::random();
                let token = keys.issue(id, "demo", "uuid", 1000, 100);
                assert_eq!(keys.verified.len(), (i + 1).min(4));
                (id, token)
            })
            .collect();
        assert_eq!(keys.verified.len(), 4);
        let last: [u8; 32] = Sha256::digest(tokens[9].1.as_bytes()).into();
        assert!(keys.verified.contains_key(&last));
        // A forgotten token is checked again (and remembered again).
        for (id, token) in &tokens {
            assert_eq!(keys.verify(token, "demo", 1000).map(|v| v.id), Some(*id));
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            assert!(keys.verified.contains_key(&digest));
        }
        assert_eq!(keys.verified.len(), 4);
    }

    #[test]
    fn issued_tokens_verify_for_their_account_only() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring(dir.path());
        let id = SessionId::random();
        let t = keys.issue(id, "demo", "uuid", 1000, 100);
        assert_eq!(keys.verify(&t, "demo", 1000).map(|v| v.id), Some(id));
        assert_eq!(keys.verify(&t, "DEMO", 1050).map(|v| v.id), Some(id));
        assert!(keys.verify(&t, "other", 1000).is_none());
        assert!(keys.verify(&t, "demo", 1100).is_none(), "expired");
    }

    #[test]
    fn generated_key_persists_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = ring(dir.path());
        let b = ring(dir.path());
        assert_eq!(a.kid(), b.kid());
        let t = a.issue(SessionId::random(), "demo", "u", 0, 100);
        assert!(b.verify(&t, "demo", 1).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn rotation_accepts_configured_old_keys() {
        let old_dir = tempfile::tempdir().unwrap();
        let old = ring(old_dir.path());
        let old_pem = std::fs::read_to_string(old_dir.path().join(KEY_FILE)).unwrap();
        let new_dir = tempfile::tempdir().unwrap();
        let new = Keyring::load(None, &[old_pem], new_dir.path()).unwrap();
        let t = old.issue(SessionId::random(), "demo", "u", 0, 100);
        assert!(new.verify(&t, "demo", 1).is_some());
        let unknown = ring(tempfile::tempdir().unwrap().path());
        assert!(unknown.verify(&t, "demo", 1).is_none());
    }

    #[test]
    fn tampered_and_foreign_tokens_are_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring(dir.path());
        let t = keys.issue(SessionId::random(), "demo", "u", 0, 100);
        let parts: Vec<&str> = t.split('.').collect();
        // Payload swapped for another session id.
        let forged_claims = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap()
                .replace("\"sub\"", "\"sub2\""),
        );
        let tampered = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert!(keys.verify(&tampered, "demo", 1).is_none());
        // alg none, no signature.
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(keys
            .verify(&format!("{none_header}.{}.", parts[1]), "demo", 1)
            .is_none());
        // HS256 with the public kid.
        let hs = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, keys.kid()));
        assert!(keys
            .verify(&format!("{hs}.{}.{}", parts[1], parts[2]), "demo", 1)
            .is_none());
        for junk in ["", "a.b", "a.b.c.d", "invalidToken", "...."] {
            assert!(keys.verify(junk, "demo", 1).is_none(), "{junk}");
        }
    }

    /// What a process that has not seen `token` makes of it, with `stored` as the digest its
    /// session's record keeps.
    fn checked(
        keys: &Keyring,
        token: &str,
        stored: Option<[u8; 16]>,
        now: u64,
    ) -> Option<Verified> {
        match keys.lookup(token, "demo", now) {
            Lookup::Known(verified) => Some(verified),
            Lookup::Claimed(claimed) => keys.confirm(claimed, stored.as_ref()),
            Lookup::Invalid => None,
        }
    }

    #[test]
    fn a_token_whose_record_keeps_its_digest_needs_no_signature_check() {
        let dir = tempfile::tempdir().unwrap();
        let id = SessionId::random();
        let (token, digest) = ring(dir.path()).issue_for(id, ("demo", "u"), 1000, 100, false);
        assert_eq!(digest, token_digest(&token));
        assert_eq!(digest[..], Sha256::digest(token.as_bytes())[..16]);
        // Another process with the same key: by the record, then remembered.
        let other = ring(dir.path());
        assert_eq!(
            checked(&other, &token, Some(digest), 1000).map(|v| v.id),
            Some(id)
        );
        assert_eq!(other.checks(), (0, 1));
        assert!(matches!(other.lookup(&token, "demo", 1000), Lookup::Known(v) if v.id == id));
        assert!(matches!(
            other.lookup(&token, "other", 1000),
            Lookup::Invalid
        ));
        // A record keeping another token's digest (or none): by signature.
        for stored in [Some([0; 16]), None] {
            let third = ring(dir.path());
            assert_eq!(
                checked(&third, &token, stored, 1000).map(|v| v.id),
                Some(id)
            );
            assert_eq!(third.checks(), (1, 0));
        }
        // Expired, or for another account: refused before any check.
        let fourth = ring(dir.path());
        assert!(checked(&fourth, &token, Some(digest), 1100).is_none());
        assert!(matches!(
            fourth.lookup(&token, "other", 1000),
            Lookup::Invalid
        ));
        assert_eq!(fourth.checks(), (0, 0));
        // Claims changed under the original signature: the digest is not the record's, and
        // the signature fails.
        let parts: Vec<&str> = token.split('.').collect();
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let longer = claims.replace("\"exp\":1100", "\"exp\":9100");
        assert_ne!(claims, longer);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(longer),
            parts[2]
        );
        assert!(checked(&fourth, &forged, Some(digest), 1000).is_none());
        assert_eq!(fourth.checks(), (1, 0));
        // A process that no longer accepts the signing key refuses the token, digest or not.
        let rotated = ring(tempfile::tempdir().unwrap().path());
        assert!(matches!(
            rotated.lookup(&token, "demo", 1000),
            Lookup::Invalid
        ));
        assert_eq!(rotated.checks(), (0, 0));
    }

    #[test]
    fn renewal_after_half_life() {
        let v = Verified {
            id: SessionId::random(),
            iat: 0,
            exp: 100,
            unsaved: false,
        };
        assert!(!v.needs_renewal(49));
        assert!(v.needs_renewal(51));
    }
}
