//! Compact JWS with ES256 (RFC 7515/7518): signing ID tokens, publishing keys as JWKs,
//! and checking `private_key_jwt` client assertions. Hand-written because it is small and
//! fixes the one algorithm the provider accepts, so `alg` confusion cannot arise.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::{SigningKey, VerifyingKey};
use serde_json::{Value, json};
use xalo_core::{Error, ErrorCode};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| Error::new(ErrorCode::AuthInvalidToken, format!("base64url: {e}")))
}

/// A new random P-256 key.
pub fn generate_key() -> Result<SigningKey, Error> {
    for _ in 0..8 {
        if let Ok(k) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
            return Ok(k);
        }
    }
    Err(Error::new(
        ErrorCode::AuthSigningKey,
        "no valid P-256 scalar drawn",
    ))
}

/// The ring key pair of `key`, for [`sign_with`]: building it checks the public key
/// against the private one (a scalar multiplication), so a signer keeps it.
pub fn ring_key_pair(key: &SigningKey) -> Result<ring::signature::EcdsaKeyPair, Error> {
    let public = key.verifying_key().to_encoded_point(false);
    ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.to_bytes(),
        public.as_bytes(),
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|e| Error::new(ErrorCode::AuthSigningKey, format!("ES256 key: {e}")))
}

/// Sign `claims` as a compact JWS with header `{"alg":"ES256","typ":"JWT","kid":…}`.
pub fn sign(kid: &str, key: &SigningKey, claims: &Value) -> Result<String, Error> {
    sign_with(kid, &ring_key_pair(key)?, claims)
}

/// [`sign`] with a key pair made once by [`ring_key_pair`].
pub fn sign_with(
    kid: &str,
    key: &ring::signature::EcdsaKeyPair,
    claims: &Value,
) -> Result<String, Error> {
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    // ring's P-256 is several times faster than the portable implementation; a token
    // request signs once and a relying party verifies once.
    let signature = key
        .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
        .map_err(|_| Error::new(ErrorCode::AuthSigningKey, "ES256 signing failed"))?;
    Ok(format!("{input}.{}", b64(signature.as_ref())))
}

/// The header and claims of a compact JWS, not yet verified.
pub fn peek(jwt: &str) -> Result<(Value, Value), Error> {
    let bad = |m: &str| Error::new(ErrorCode::AuthInvalidToken, m.to_owned());
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a compact JWS"));
    };
    let header: Value =
        serde_json::from_slice(&unb64(h)?).map_err(|_| bad("JWS header is not JSON"))?;
    let claims: Value =
        serde_json::from_slice(&unb64(c)?).map_err(|_| bad("JWS payload is not JSON"))?;
    Ok((header, claims))
}

/// Verify an ES256 compact JWS with one of `keys` (matched by `kid` when the header has
/// one); returns the claims.
pub fn verify(jwt: &str, keys: &[(String, VerifyingKey)]) -> Result<Value, Error> {
    let bad = |m: &str| Error::new(ErrorCode::AuthInvalidToken, m.to_owned());
    let (header, claims) = peek(jwt)?;
    if header["alg"] != "ES256" {
        return Err(bad("only ES256 is accepted"));
    }
    let (input, sig) = jwt
        .rsplit_once('.')
        .ok_or_else(|| bad("not a compact JWS"))?;
    let signature = unb64(sig)?;
    if signature.len() != 64 {
        return Err(bad("bad ES256 signature"));
    }
    let kid = header["kid"].as_str();
    let ok = keys
        .iter()
        .filter(|(k, _)| kid.is_none_or(|kid| kid == k))
        .any(|(_, vk)| {
            let point = vk.to_encoded_point(false);
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point.as_bytes(),
            )
            .verify(input.as_bytes(), &signature)
            .is_ok()
        });
    if ok {
        Ok(claims)
    } else {
        Err(bad("the signature does not verify"))
    }
}

/// A public key as a JWK.
pub fn jwk(kid: &str, key: &VerifyingKey) -> Value {
    let point = key.to_encoded_point(false);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": point.x().map(|x| b64(x)).unwrap_or_default(),
        "y": point.y().map(|y| b64(y)).unwrap_or_default(),
        "use": "sig",
        "alg": "ES256",
        "kid": kid,
    })
}

/// The P-256 keys of a JWK set (other key types are skipped).
pub fn keys_of_jwks(jwks: &Value) -> Vec<(String, VerifyingKey)> {
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kty"] == "EC" && k["crv"] == "P-256")
        .filter_map(|k| {
            let x: [u8; 32] = unb64(k["x"].as_str()?).ok()?.try_into().ok()?;
            let y: [u8; 32] = unb64(k["y"].as_str()?).ok()?.try_into().ok()?;
            let point = p256::EncodedPoint::from_affine_coordinates(
                &p256::FieldBytes::from(x),
                &p256::FieldBytes::from(y),
                false,
            );
            let vk = VerifyingKey::from_encoded_point(&point).ok()?;
            Some((k["kid"].as_str().unwrap_or("").to_owned(), vk))
        })
        .collect()
}

/// `at_hash`: the left half of SHA-256 of the access token, base64url.
pub fn half_hash(value: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.as_bytes());
    b64(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_jwks() {
        let key = generate_key().unwrap();
        let jwt = sign("k1", &key, &json!({"sub": "VN001203012345"})).unwrap();
        let jwks = json!({ "keys": [jwk("k1", key.verifying_key())] });
        let keys = keys_of_jwks(&jwks);
        assert_eq!(verify(&jwt, &keys).unwrap()["sub"], "VN001203012345");
        let other = generate_key().unwrap();
        let wrong = vec![("k1".to_owned(), *other.verifying_key())];
        assert!(verify(&jwt, &wrong).is_err());
        let mut tampered = jwt.clone();
        tampered.insert(jwt.find('.').unwrap() + 2, 'A');
        assert!(verify(&tampered, &keys).is_err());
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(b"{}"));
        assert!(verify(&none, &keys).is_err());
    }
}
