//! National sign-in: the portal as an OpenID Connect relying party of the `id` role.
//!
//! Authorization code flow with PKCE (S256), `state` and `nonce`, the client
//! authenticating with `client_secret_basic`. The provider's endpoints and keys come from
//! its discovery document and JWKS; the ID token is checked here (ES256 only, issuer,
//! audience, expiry, nonce, `at_hash`). The flow's secrets wait in the server-side session,
//! so any portal instance can finish a sign-in another one started. Metadata and keys are
//! cached for a few minutes, and the keys fetched again when a token names an unknown
//! key (rotation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_web::Session;

/// Session key of the signed-in person.
pub const SESSION_PERSON: &str = "person";
/// Session key of a sign-in under way.
const SESSION_PENDING: &str = "oidc_pending";
/// How long a discovery document and key set are reused.
const CACHE_FOR: Duration = Duration::from_secs(300);
/// Clock difference tolerated between the provider and the portal.
const SKEW_SECS: i64 = 60;

/// Who is signed in, as the ID token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedIn {
    /// The personal code (`VN…`, `EE…`).
    pub sub: String,
    pub given_name: String,
    pub family_name: String,
    /// How they authenticated (`mID`, `idcard`).
    pub amr: Vec<String>,
    /// The eIDAS level (`high`, `substantial`, `low`).
    pub acr: String,
    /// The ID token, kept as the hint for the provider's logout.
    pub id_token: String,
}

impl SignedIn {
    pub fn personal_code(&self) -> Result<PersonalCode, Error> {
        self.sub.parse::<PersonalCode>().map_err(Error::from)
    }

    /// "NGUYỄN VĂN AN": family name first, as Vietnamese names are written.
    pub fn full_name(&self) -> String {
        format!("{} {}", self.family_name, self.given_name)
            .trim()
            .to_owned()
    }
}

/// The person signed in to this session, if any.
pub fn signed_in(session: &Session) -> Option<SignedIn> {
    session.get(SESSION_PERSON)
}

/// The person signed in, or `XALO-PORTAL-005`.
pub fn require(session: &Session) -> Result<SignedIn, Error> {
    signed_in(session).ok_or_else(|| {
        Error::new(
            ErrorCode::PortalNotSignedIn,
            "sign in with national sign-in to continue",
        )
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    /// Where to go after signing in (a local path).
    next: String,
}

/// The client's registration at the provider.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The provider's issuer URL (the `id` role).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// This portal's callback, registered at the provider: `…/auth/callback`.
    pub redirect_uri: String,
    /// Where the provider sends the browser after logout (registered too).
    pub post_logout_redirect_uri: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

struct Cached {
    at: Instant,
    metadata: Metadata,
    keys: Vec<(String, Vec<u8>)>,
}

/// The relying party.
#[derive(Clone)]
pub struct RelyingParty {
    settings: Arc<ClientSettings>,
    http: reqwest::Client,
    cache: Arc<Mutex<Option<Cached>>>,
}

fn upstream(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::PortalSignIn, m)
}

fn unb64(s: &str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| upstream(format!("base64url: {e}")))
}

/// The uncompressed P-256 points of a JWK set, by key id; other key types are skipped.
fn keys_of(jwks: &Value) -> Vec<(String, Vec<u8>)> {
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kty"] == "EC" && k["crv"] == "P-256")
        .filter_map(|k| {
            let x = unb64(k["x"].as_str()?).ok()?;
            let y = unb64(k["y"].as_str()?).ok()?;
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Some((k["kid"].as_str().unwrap_or("").to_owned(), point))
        })
        .collect()
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A local path to return to: only `/…`, never `//host` or a scheme, so the sign-in
/// cannot be used to send people elsewhere.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/dossiers".to_owned(),
    }
}

impl RelyingParty {
    pub fn new(settings: ClientSettings, http: reqwest::Client) -> RelyingParty {
        RelyingParty {
            settings: Arc::new(settings),
            http,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    async fn fetch(&self) -> Result<Cached, Error> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let metadata: Metadata = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| upstream(format!("discovery at {url}: {e}")))?
            .json()
            .await
            .map_err(|e| upstream(format!("discovery at {url}: {e}")))?;
        if metadata.issuer.trim_end_matches('/') != issuer {
            return Err(upstream(format!(
                "the discovery document names issuer {}, not {issuer}",
                metadata.issuer
            )));
        }
        let jwks: Value = self
            .http
            .get(&metadata.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| upstream(format!("keys at {}: {e}", metadata.jwks_uri)))?
            .json()
            .await
            .map_err(|e| upstream(format!("keys at {}: {e}", metadata.jwks_uri)))?;
        Ok(Cached {
            at: Instant::now(),
            metadata,
            keys: keys_of(&jwks),
        })
    }

    /// The provider's metadata and keys, fetched when missing, old, or when `need_kid`
    /// is not among the cached keys.
    async fn provider(
        &self,
        need_kid: Option<&str>,
    ) -> Result<(Metadata, Vec<(String, Vec<u8>)>), Error> {
        let mut cache = self.cache.lock().await;
        let fresh = cache.as_ref().is_some_and(|c| {
            c.at.elapsed() < CACHE_FOR
                && need_kid.is_none_or(|k| c.keys.iter().any(|(id, _)| id == k))
        });
        if !fresh {
            *cache = Some(self.fetch().await?);
        }
        match cache.as_ref() {
            Some(c) => Ok((c.metadata.clone(), c.keys.clone())),
            None => Err(upstream("no provider metadata")),
        }
    }

    /// Begin a sign-in: remember state, nonce and verifier in the session (the caller
    /// saves it) and return the provider's authorization URL to redirect to.
    pub async fn start(
        &self,
        session: &mut Session,
        next: Option<&str>,
        scope: &str,
    ) -> Result<String, Error> {
        let (metadata, _) = self.provider(None).await?;
        let pending = Pending {
            state: xalo_web::session::random_token(),
            nonce: xalo_web::session::random_token(),
            verifier: xalo_web::session::random_token(),
            next: local_path(next),
        };
        let s = &self.settings;
        let url = format!(
            "{}{}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}\
             &code_challenge={}&code_challenge_method=S256&ui_locales={}",
            metadata.authorization_endpoint,
            if metadata.authorization_endpoint.contains('?') {
                '&'
            } else {
                '?'
            },
            encode(&s.client_id),
            encode(&s.redirect_uri),
            encode(scope),
            encode(&pending.state),
            encode(&pending.nonce),
            s256(&pending.verifier),
            session.lang.code(),
        );
        session.set(SESSION_PENDING, &pending);
        Ok(url)
    }

    /// Finish a sign-in at the callback: check `state`, redeem the code, check the ID token,
    /// and put the person in the session (the caller saves it). Returns where to go next.
    pub async fn finish(
        &self,
        session: &mut Session,
        code: &str,
        state: &str,
    ) -> Result<String, Error> {
        let pending: Pending = session
            .get(SESSION_PENDING)
            .ok_or_else(|| upstream("no sign-in was started in this browser session"))?;
        // Spent whatever happens: a callback is good for one try.
        session.remove(SESSION_PENDING);
        if !xalo_web::session::constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
            return Err(upstream("the sign-in answer's state does not match"));
        }
        let (metadata, _) = self.provider(None).await?;
        let s = &self.settings;
        // RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
        let basic = STANDARD.encode(format!(
            "{}:{}",
            encode(&s.client_id),
            encode(&s.client_secret)
        ));
        let response = self
            .http
            .post(&metadata.token_endpoint)
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
                encode(code),
                encode(&s.redirect_uri),
                encode(&pending.verifier)
            ))
            .send()
            .await
            .map_err(|e| upstream(format!("token endpoint: {e}")))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| upstream(format!("token endpoint: {e}")))?;
        if !status.is_success() {
            return Err(upstream(format!(
                "token endpoint answered {status}: {} {}",
                body["error"].as_str().unwrap_or(""),
                body["error_description"].as_str().unwrap_or("")
            )));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| upstream("the token answer has no id_token"))?;
        let access_token = body["access_token"].as_str().unwrap_or("");
        let claims = self.verify(id_token, &pending.nonce, access_token).await?;
        let text = |k: &str| claims[k].as_str().unwrap_or("").to_owned();
        let person = SignedIn {
            sub: text("sub"),
            given_name: text("given_name"),
            family_name: text("family_name"),
            amr: claims["amr"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            acr: text("acr"),
            id_token: id_token.to_owned(),
        };
        person.personal_code()?;
        session.set(SESSION_PERSON, &person);
        Ok(pending.next)
    }

    /// Check an ID token: ES256 signature by a published key, issuer, audience, time and
    /// nonce, and `at_hash` when there is an access token.
    pub async fn verify(&self, jwt: &str, nonce: &str, access_token: &str) -> Result<Value, Error> {
        let bad = |m: &str| upstream(format!("ID token: {m}"));
        let mut parts = jwt.split('.');
        let (Some(h), Some(c), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a compact JWS"));
        };
        let header: Value =
            serde_json::from_slice(&unb64(h)?).map_err(|_| bad("header is not JSON"))?;
        if header["alg"] != "ES256" {
            return Err(bad("only ES256 is accepted"));
        }
        let kid = header["kid"].as_str();
        let (metadata, keys) = self.provider(kid).await?;
        let signature = unb64(sig)?;
        let input = format!("{h}.{c}");
        let verified = keys
            .iter()
            .filter(|(k, _)| kid.is_none_or(|kid| kid == k))
            .any(|(_, point)| {
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_FIXED,
                    point,
                )
                .verify(input.as_bytes(), &signature)
                .is_ok()
            });
        if !verified {
            return Err(bad(
                "the signature does not verify with the provider's keys",
            ));
        }
        let claims: Value =
            serde_json::from_slice(&unb64(c)?).map_err(|_| bad("payload is not JSON"))?;
        if claims["iss"].as_str() != Some(metadata.issuer.as_str()) {
            return Err(bad("issued by another provider"));
        }
        let client = self.settings.client_id.as_str();
        let audience_ok = match &claims["aud"] {
            Value::String(a) => a == client,
            Value::Array(list) => list.iter().any(|a| a == client),
            _ => false,
        };
        if !audience_ok {
            return Err(bad("issued to another client"));
        }
        let now = crate::dossier::unix_now();
        if claims["exp"]
            .as_i64()
            .is_none_or(|exp| exp + SKEW_SECS < now)
        {
            return Err(bad("expired"));
        }
        if claims["iat"]
            .as_i64()
            .is_some_and(|iat| iat > now + SKEW_SECS)
        {
            return Err(bad("issued in the future"));
        }
        if !claims["nonce"]
            .as_str()
            .is_some_and(|n| xalo_web::session::constant_time_eq(n.as_bytes(), nonce.as_bytes()))
        {
            return Err(bad("the nonce does not match this sign-in"));
        }
        if !access_token.is_empty()
            && let Some(at_hash) = claims["at_hash"].as_str()
        {
            let digest = Sha256::digest(access_token.as_bytes());
            if URL_SAFE_NO_PAD.encode(&digest[..16]) != at_hash {
                return Err(bad("at_hash does not match the access token"));
            }
        }
        Ok(claims)
    }

    /// The provider's logout URL for `person`, returning to the portal when registered.
    pub async fn logout_url(&self, person: &SignedIn) -> Result<Option<String>, Error> {
        let (metadata, _) = self.provider(None).await?;
        Ok(metadata.end_session_endpoint.map(|end| {
            let mut url = format!("{end}?id_token_hint={}", encode(&person.id_token));
            if let Some(back) = &self.settings.post_logout_redirect_uri {
                url.push_str(&format!("&post_logout_redirect_uri={}", encode(back)));
            }
            url
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_local() {
        assert_eq!(local_path(Some("/dossiers/X-1")), "/dossiers/X-1");
        assert_eq!(local_path(Some("//evil.example/")), "/dossiers");
        assert_eq!(local_path(Some("https://evil.example/")), "/dossiers");
        assert_eq!(local_path(Some("/\\evil.example")), "/dossiers");
        assert_eq!(local_path(None), "/dossiers");
    }

    #[test]
    fn pkce_challenge_is_rfc7636() {
        // RFC 7636 appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
