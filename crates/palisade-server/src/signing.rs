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

/// Most retired keys published at once. Each stays in the JWKS for an hour after its
/// rotation, so without a cap repeated rotations would grow the key set without bound.
pub const MAX_PUBLISHED_RETIRED: usize = 8;

/// Replaces the key in force in `keys` with a new one; returns the new key set and when the
/// replaced key leaves the JWKS (Unix milliseconds).
pub async fn rotate(
    store: &Store,
    actor: &Actor,
    keys: &SigningKeys,
) -> Result<(SigningKeys, i64), StoreError> {
    let now = now_ms();
    let mut retired: Vec<(Jwk, i64)> = keys
        .retired
        .iter()
        .filter(|(_, until_ms)| *until_ms > now)
        .cloned()
        .collect();
    if retired.len() >= MAX_PUBLISHED_RETIRED {
        let next_s = retired
            .iter()
            .map(|(_, until)| until / 1000)
            .min()
            .unwrap_or(0);
        return Err(StoreError::Conflict(format!(
            "{} retired signing keys are still published (at most {MAX_PUBLISHED_RETIRED}); \
             the oldest leaves the JWKS at Unix time {next_s}, rotate again after that",
            retired.len()
        )));
    }
    let max_ttl_ms =
        i64::try_from(palisade_model::egress::MAX_TOKEN_TTL.as_millis()).unwrap_or(i64::MAX);
    // A minute more than the longest lifetime, for clocks that disagree a little.
    let published_until_ms = now.saturating_add(max_ttl_ms).saturating_add(60_000);
    let retiring = keys.current.jwk();
    let jwk = serde_json::to_string(&retiring)
        .map_err(|e| StoreError::Invalid(format!("the retiring key: {e}")))?;
    let seed = store
        .rotate_signing_key(actor, keys.current.kid(), &jwk, published_until_ms, kid_of)
        .await?;
    // Committed: nothing below may fail, or the gateway would go on signing with a key
    // whose seed is gone (and every later rotation would find it not in force).
    retired.insert(0, (retiring, published_until_ms));
    let keys = SigningKeys {
        current: std::sync::Arc::new(TokenSigner::from_seed(seed)),
        retired,
    };
    Ok((keys, published_until_ms))
}
