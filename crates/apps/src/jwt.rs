//! JSON Web Tokens. The workspace has one implementation of them, `jsonwebtoken`: the session
//! tokens and the identity tokens are both made, read and checked by it. This module owns its
//! cryptography: ES256, which signs a session token at every create and log-in, runs on `ring`
//! (its assembly P-256 signs several times faster than RustCrypto's); every other algorithm
//! keeps RustCrypto's, as `jsonwebtoken` ships it.
//!
//! [`install`] puts that in place for the process; everything here that makes or checks a token
//! calls it first.

use std::sync::{Arc, LazyLock};

use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as RUST_CRYPTO;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use quick_cache::sync::Cache;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};

/// The cryptography of every token of the process.
static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: RUST_CRYPTO.key_utils.clone(),
});

/// Makes `jsonwebtoken` use this module's cryptography in this process. Idempotent; when
/// something already chose another provider, that one stays (it is as correct, only slower).
pub fn install() {
    let _ = CryptoProvider::install_default(&PROVIDER);
}

/// Most ES256 signing keys kept ready (a process signs with one; tests run a few servers).
const MAX_SIGNING_KEYS: usize = 16;

/// ES256 signing keys ready to sign, by their PKCS#8 DER. Making one from its DER computes the
/// public point (as long as a signature), and `jsonwebtoken` asks for a signer per token.
static SIGNING_KEYS: LazyLock<Cache<Box<[u8]>, Arc<EcdsaKeyPair>>> =
    LazyLock::new(|| Cache::new(MAX_SIGNING_KEYS));

static RANDOM: LazyLock<SystemRandom> = LazyLock::new(SystemRandom::new);

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if *algorithm != Algorithm::ES256 {
        return (RUST_CRYPTO.signer_factory)(algorithm, key);
    }
    let der = key.as_bytes();
    let pair = match SIGNING_KEYS.get(der) {
        Some(pair) => pair,
        None => {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &*RANDOM)
                .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
            let pair = Arc::new(pair);
            SIGNING_KEYS.insert(der.into(), pair.clone());
            pair
        }
    };
    Ok(Box::new(Es256Signer(pair)))
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if *algorithm != Algorithm::ES256 {
        return (RUST_CRYPTO.verifier_factory)(algorithm, key);
    }
    let point = key.try_get_as_bytes()?;
    // ring reads the point when verifying; refuse here what it would refuse there.
    if point.len() != 65 || point[0] != 4 {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    Ok(Box::new(Es256Verifier(UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_FIXED,
        point.to_vec(),
    ))))
}

struct Es256Signer(Arc<EcdsaKeyPair>);

impl signature::Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let signature = self
            .0
            .sign(&*RANDOM, message)
            .map_err(|_| signature::Error::new())?;
        Ok(signature.as_ref().to_vec())
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

struct Es256Verifier(UnparsedPublicKey<Vec<u8>>);

impl signature::Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        self.0
            .verify(message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{decode, encode, Header, Validation};
    use ring::signature::KeyPair;
    use serde_json::{json, Value};

    /// A new P-256 key pair, as `jsonwebtoken` keys.
    fn new_key() -> (EncodingKey, DecodingKey) {
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &*RANDOM).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref(), &*RANDOM)
                .unwrap();
        (
            EncodingKey::from_ec_der(der.as_ref()),
            DecodingKey::from_ec_der(pair.public_key().as_ref()),
        )
    }

    #[test]
    fn es256_signed_with_ring_verifies_with_rust_crypto_and_back() {
        let (key, decoding) = new_key();
        let message = b"header.claims";
        let ours = signer(&Algorithm::ES256, &key).unwrap();
        let signed = signature::Signer::try_sign(&*ours, message).unwrap();
        let again = signature::Signer::try_sign(&*ours, message).unwrap();
        assert_ne!(signed, again, "ring takes a random nonce");
        assert_eq!(signed.len(), 64, "r and s, fixed size, as JWS wants");

        let theirs = (RUST_CRYPTO.verifier_factory)(&Algorithm::ES256, &decoding).unwrap();
        assert!(signature::Verifier::verify(&*theirs, message, &signed).is_ok());
        let their_signer = (RUST_CRYPTO.signer_factory)(&Algorithm::ES256, &key).unwrap();
        let theirs_signed = signature::Signer::try_sign(&*their_signer, message).unwrap();
        let check = verifier(&Algorithm::ES256, &decoding).unwrap();
        assert!(signature::Verifier::verify(&*check, message, &theirs_signed).is_ok());
        assert!(signature::Verifier::verify(&*check, message, &signed).is_ok());
        assert!(signature::Verifier::verify(&*check, b"header.other", &signed).is_err());

        let wrong_size = DecodingKey::from_ec_der(&[4u8; 64]);
        assert!(verifier(&Algorithm::ES256, &wrong_size).is_err());
        assert!(signer(&Algorithm::ES256, &EncodingKey::from_ec_der(b"not a key")).is_err());
    }

    #[test]
    fn tokens_round_trip_through_jsonwebtoken_with_either_provider() {
        install();
        let (key, decoding) = new_key();
        let claims = json!({"sub": "session", "exp": 4_000_000_000u64});
        let token = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        let validation = Validation::new(Algorithm::ES256);
        let read = decode::<Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(read.claims, claims);
        let (message, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
        assert!(decode::<Value>(&forged, &decoding, &validation).is_err());
    }
}
