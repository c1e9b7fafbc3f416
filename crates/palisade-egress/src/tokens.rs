//! Short-lived tokens for calls back into the SaaS's own API: compact JWTs signed with
//! Ed25519 (`alg: EdDSA`), minted by the gateway per invocation and audience and injected as a
//! header, so an extension can call the SaaS without ever holding a long-lived credential.
//! The server publishes the public keys as a JWKS; `palisade token verify` (and any JWT
//! library) checks them.

use std::sync::Arc;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use palisade_api::{Jwk, Jwks};
use serde::{Deserialize, Serialize};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The issuer every token names.
pub const ISSUER: &str = "palisade";

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// `tenant/extension`.
    pub sub: String,
    pub aud: String,
    pub tenant: String,
    pub extension: String,
    pub version: String,
    pub invocation_id: String,
    /// Unix seconds.
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// A token that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("signed by key `{0}`, which is not published")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("expired at {0}")]
    Expired(i64),
    #[error("issued for audience `{found}`, not `{expected}`")]
    WrongAudience { expected: String, found: String },
}

/// The signing key of this server.
pub struct TokenSigner {
    key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer from a 32-byte Ed25519 seed; the key id is derived from the public key.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let public = key.verifying_key().to_bytes();
        let kid = format!("ed25519-{}", &B64.encode(public)[..11]);
        Self { key, kid }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: B64.encode(self.key.verifying_key().to_bytes()),
            kid: self.kid.clone(),
            usage: "sig".into(),
            alg: "EdDSA".into(),
        }
    }

    /// A compact JWT for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: "JWT".into(),
            kid: self.kid.clone(),
        };
        let signing_input = format!("{}.{}", b64_json(&header), b64_json(claims));
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
    }
}

/// The keys behind the published JWKS: the one that signs, and retired ones, still
/// published until every token they signed has expired.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub current: Arc<TokenSigner>,
    /// Public keys of retired signers, each with the Unix millisecond it stops being
    /// published.
    pub retired: Vec<(Jwk, i64)>,
}

impl SigningKeys {
    pub fn new(current: TokenSigner) -> Self {
        Self {
            current: Arc::new(current),
            retired: Vec::new(),
        }
    }

    /// The key set to publish at `now_ms`: the signing key first.
    pub fn jwks(&self, now_ms: i64) -> Jwks {
        let retired = self
            .retired
            .iter()
            .filter(|(_, until_ms)| *until_ms > now_ms)
            .map(|(jwk, _)| jwk.clone());
        Jwks {
            keys: std::iter::once(self.current.jwk()).chain(retired).collect(),
        }
    }
}

fn b64_json(value: &impl Serialize) -> String {
    B64.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Verifies a token against published keys, its expiry (at `now`, Unix seconds) and, when
/// given, its audience.
pub fn verify(
    token: &str,
    keys: &Jwks,
    audience: Option<&str>,
    now: i64,
) -> Result<Claims, TokenError> {
    let malformed = |m: &str| TokenError::Malformed(m.to_owned());
    let mut parts = token.trim().split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected header.claims.signature"));
    };
    let header: Header = serde_json::from_slice(
        &B64.decode(header)
            .map_err(|_| malformed("header is not base64url"))?,
    )
    .map_err(|_| malformed("header is not JSON"))?;
    if header.alg != "EdDSA" {
        return Err(malformed("only EdDSA tokens are issued here"));
    }
    let jwk = keys
        .keys
        .iter()
        .find(|k| k.kid == header.kid)
        .ok_or_else(|| TokenError::UnknownKey(header.kid.clone()))?;
    let public: [u8; 32] = B64
        .decode(&jwk.x)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| malformed("published key is not 32 bytes"))?;
    let key =
        VerifyingKey::from_bytes(&public).map_err(|_| malformed("published key is invalid"))?;
    let signature: [u8; 64] = B64
        .decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| malformed("signature is not 64 bytes"))?;
    let signing_input_len =
        token.trim().len() - token.trim().rsplit('.').next().map_or(0, str::len) - 1;
    let signing_input = &token.trim()[..signing_input_len];
    key.verify(signing_input.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(
        &B64.decode(claims)
            .map_err(|_| malformed("claims are not base64url"))?,
    )
    .map_err(|_| malformed("claims are not the expected JSON"))?;
    if claims.exp <= now {
        return Err(TokenError::Expired(claims.exp));
    }
    if let Some(expected) = audience
        && claims.aud != expected
    {
        return Err(TokenError::WrongAudience {
            expected: expected.to_owned(),
            found: claims.aud,
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "acme/ext".into(),
            aud: "saas-api".into(),
            tenant: "acme".into(),
            extension: "ext".into(),
            version: "1.0.0".into(),
            invocation_id: "inv-1".into(),
            iat: 100,
            exp,
        }
    }

    #[test]
    fn tokens_verify_only_when_signed_unexpired_and_for_the_audience() {
        let signer = TokenSigner::from_seed([3u8; 32]);
        let keys = Jwks {
            keys: vec![signer.jwk()],
        };
        let token = signer.sign(&claims(200));
        assert_eq!(
            verify(&token, &keys, Some("saas-api"), 150),
            Ok(claims(200))
        );
        assert_eq!(
            verify(&token, &keys, Some("saas-api"), 200),
            Err(TokenError::Expired(200))
        );
        assert!(matches!(
            verify(&token, &keys, Some("other"), 150),
            Err(TokenError::WrongAudience { .. })
        ));
        let other = TokenSigner::from_seed([4u8; 32]);
        assert!(matches!(
            verify(
                &token,
                &Jwks {
                    keys: vec![other.jwk()]
                },
                None,
                150
            ),
            Err(TokenError::UnknownKey(_))
        ));
        // A forged claim (longer expiry) breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = B64.encode(serde_json::to_vec(&claims(9_999)).unwrap_or_default());
        assert_eq!(
            verify(&parts.join("."), &keys, None, 150),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verify("a.b", &keys, None, 150),
            Err(TokenError::Malformed(_))
        ));
    }
}
