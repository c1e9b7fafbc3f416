//! The token-signing keys of the egress gateway: loaded at start-up, rotated through the API.
//! A retired key never signs again (its seed is deleted) but stays in the JWKS until every
//! token it signed has expired, so the SaaS can verify any token that is still valid.

use palisade_egress::{Jwk, SigningKeys, TokenSigner};
use palisade_store::{Actor, Store, StoreError, now_ms};

fn kid_of(seed: &[u8; 32]) -> String {
    TokenSigner::from_seed(*seed).kid().to_owned()
}

/// The key in force (made on first start) and the retired keys still published.
pub async fn load(store: &Store) -> Result<SigningKeys, StoreError> {
    let seed = store.signing_seed(kid_of).await?;
    with_retired(store, TokenSigner::from_seed(seed)).await
}

async fn with_retired(store: &Store, current: TokenSigner) -> Result<SigningKeys, StoreError> {
    let mut keys = SigningKeys::new(current);
    for (jwk, until_ms) in store.retired_signing_keys(now_ms()).await? {
        let jwk: Jwk = serde_json::from_str(&jwk)
            .map_err(|e| StoreError::Corrupt(format!("a retired signing key: {e}")))?;
        keys.retired.push((jwk, until_ms));
    }
    Ok(keys)
}

/// Replaces `current` with a new key; returns the new key set and when `current` leaves the
/// JWKS (Unix milliseconds).
pub async fn rotate(
    store: &Store,
    actor: &Actor,
    current: &TokenSigner,
) -> Result<(SigningKeys, i64), StoreError> {
    let max_ttl_ms =
        i64::try_from(palisade_model::egress::MAX_TOKEN_TTL.as_millis()).unwrap_or(i64::MAX);
    // A minute more than the longest lifetime, for clocks that disagree a little.
    let published_until_ms = now_ms().saturating_add(max_ttl_ms).saturating_add(60_000);
    let jwk = serde_json::to_string(&current.jwk())
        .map_err(|e| StoreError::Invalid(format!("the retiring key: {e}")))?;
    let seed = store
        .rotate_signing_key(actor, current.kid(), &jwk, published_until_ms, kid_of)
        .await?;
    let keys = with_retired(store, TokenSigner::from_seed(seed)).await?;
    Ok((keys, published_until_ms))
}
