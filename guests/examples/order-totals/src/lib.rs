//! Example extension: computes an order's subtotal, discount and total from JSON line items.
#![forbid(unsafe_code)]

use palisade_guest::{Error, Request, Response, log};
use serde::{Deserialize, Serialize};

/// Most line items accepted in one order.
const MAX_ITEMS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Order {
    currency: String,
    items: Vec<Item>,
    /// Whole percent off the subtotal, 0 to 100.
    #[serde(default)]
    discount_percent: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    sku: String,
    // Signed, so that negative values get a clear message rather than a type error.
    quantity: i64,
    unit_price_cents: i64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct Totals {
    currency: String,
    /// Units ordered: the sum of all quantities.
    item_count: u64,
    subtotal_cents: u64,
    discount_cents: u64,
    total_cents: u64,
}

fn handle(req: Request) -> Result<Response, Error> {
    let order: Order = req.json()?;
    let totals = compute(&order)?;
    log::info(&format!(
        "order totals: {} lines, {} units, total {} cents {}{}",
        order.items.len(),
        totals.item_count,
        totals.total_cents,
        totals.currency,
        req.metadata("request-id")
            .map(|id| format!(" (request {id})"))
            .unwrap_or_default(),
    ));
    Response::json(&totals)
}

fn compute(order: &Order) -> Result<Totals, Error> {
    let currency = &order.currency;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid_input(format!(
            "currency must be a three-letter ISO 4217 code such as \"EUR\", got {currency:?}"
        )));
    }
    if order.items.is_empty() {
        return Err(Error::invalid_input("order has no items"));
    }
    if order.items.len() > MAX_ITEMS {
        return Err(Error::invalid_input(format!(
            "order has {} items; at most {MAX_ITEMS} are allowed",
            order.items.len()
        )));
    }
    let discount_percent = match order.discount_percent {
        None => 0,
        Some(p @ 0..=100) => p.unsigned_abs(),
        Some(p) => {
            return Err(Error::invalid_input(format!(
                "discount_percent must be between 0 and 100, got {p}"
            )));
        }
    };

    let overflow = || Error::invalid_input("order amounts are too large (arithmetic overflow)");
    let mut item_count: u64 = 0;
    let mut subtotal_cents: u64 = 0;
    for (index, item) in order.items.iter().enumerate() {
        let line = index + 1;
        if item.sku.trim().is_empty() {
            return Err(Error::invalid_input(format!("item {line}: sku is empty")));
        }
        let quantity = u64::try_from(item.quantity)
            .ok()
            .filter(|&q| q > 0)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "item {line} ({}): quantity must be at least 1, got {}",
                    item.sku, item.quantity
                ))
            })?;
        let unit_price_cents = u64::try_from(item.unit_price_cents).map_err(|_| {
            Error::invalid_input(format!(
                "item {line} ({}): unit_price_cents must not be negative, got {}",
                item.sku, item.unit_price_cents
            ))
        })?;
        let line_cents = quantity
            .checked_mul(unit_price_cents)
            .ok_or_else(overflow)?;
        subtotal_cents = subtotal_cents
            .checked_add(line_cents)
            .ok_or_else(overflow)?;
        item_count = item_count.checked_add(quantity).ok_or_else(overflow)?;
    }

    // Rounded half up to the cent. In u128 the product cannot overflow, and the quotient is
    // at most the subtotal, so it fits back in u64.
    let discount_cents =
        u64::try_from((u128::from(subtotal_cents) * u128::from(discount_percent) + 50) / 100)
            .map_err(|_| overflow())?;
    let total_cents = subtotal_cents
        .checked_sub(discount_cents)
        .ok_or_else(overflow)?;

    Ok(Totals {
        currency: currency.clone(),
        item_count,
        subtotal_cents,
        discount_cents,
        total_cents,
    })
}

palisade_guest::extension!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    fn order(json: &str) -> Result<Totals, Error> {
        let req = Request {
            body: json.as_bytes().to_vec(),
            content_type: "application/json".into(),
            metadata: Vec::new(),
        };
        compute(&req.json()?)
    }

    #[test]
    fn sums_lines_and_applies_discount() {
        let totals = order(
            r#"{"currency":"EUR","items":[{"sku":"A-1","quantity":2,"unit_price_cents":1250},
                {"sku":"B-2","quantity":1,"unit_price_cents":999}],"discount_percent":10}"#,
        );
        assert_eq!(
            totals,
            Ok(Totals {
                currency: "EUR".into(),
                item_count: 3,
                subtotal_cents: 3499,
                discount_cents: 350,
                total_cents: 3149,
            })
        );
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            r#"{"currency":"EUR","items":[{"sku":"A","quantity":0,"unit_price_cents":1}]}"#,
            r#"{"currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":-1}]}"#,
            r#"{"currency":"EUR","items":[{"sku":"A","quantity":9223372036854775807,"unit_price_cents":3}]}"#,
            r#"{"currency":"eur","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}"#,
            r#"{"currency":"EUR","items":[]}"#,
            r#"{"currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price_cents":1}],"discount_percent":101}"#,
            r#"{"currency":"EUR""#,
            r#"{"currency":"EUR","items":[],"coupon":"FREE"}"#,
        ] {
            assert!(matches!(order(bad), Err(Error::InvalidInput(_))), "{bad}");
        }
    }

    #[test]
    fn rejects_more_than_max_items() {
        let item = r#"{"sku":"A","quantity":1,"unit_price_cents":1}"#;
        let items = |n: usize| vec![item; n].join(",");
        let json = |n: usize| format!(r#"{{"currency":"EUR","items":[{}]}}"#, items(n));
        assert_eq!(order(&json(MAX_ITEMS)).map(|t| t.total_cents), Ok(1000));
        assert!(matches!(
            order(&json(MAX_ITEMS + 1)),
            Err(Error::InvalidInput(m)) if m.contains("at most 1000")
        ));
    }
}
