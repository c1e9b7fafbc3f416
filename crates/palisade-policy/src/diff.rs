//! Human-readable and JSON differences between two versions of a layer: limits by key,
//! policies by id, `[egress]` rules by value.

use std::fmt;

use serde::Serialize;

use crate::document::EgressRules;
use crate::engine::CompiledLayer;
use crate::limits::LimitKey;

/// How one limit changed. `None` is "not set by this layer".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitDiff {
    pub limit: LimitKey,
    pub before: Option<u64>,
    pub after: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// How one policy (by id) changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    pub id: String,
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// One `[egress]` rule added or removed. Rules have no ids, so a changed rule is the old one
/// removed and the new one added; a section whose rules only moved is `changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRuleDiff {
    /// The `[egress]` key: `allow_private`, `credentials`, `tokens`, `ca` or `client_certs`.
    pub section: &'static str,
    pub change: Change,
    /// The rule as an inline TOML value, as it would be written in the document.
    pub rule: String,
}

/// Everything that differs between two versions of one layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LayerDiff {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<(Option<String>, Option<String>)>,
    pub limits: Vec<LimitDiff>,
    pub policies: Vec<PolicyDiff>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRuleDiff>,
}

impl LayerDiff {
    /// `before` is `None` for the first version of a layer.
    pub fn between(before: Option<&CompiledLayer>, after: &CompiledLayer) -> Self {
        let mut diff = Self::default();
        let old_doc = before.map(CompiledLayer::document);
        let new_doc = after.document();
        let old_description = old_doc.and_then(|d| d.description.clone());
        if old_description != new_doc.description {
            diff.description = Some((old_description, new_doc.description.clone()));
        }
        for key in LimitKey::ALL {
            let old = old_doc.and_then(|d| d.limits.get(key));
            let new = new_doc.limits.get(key);
            if old != new {
                diff.limits.push(LimitDiff {
                    limit: key,
                    before: old,
                    after: new,
                });
            }
        }
        diff.egress = egress_changes(old_doc.map(|d| &d.egress), &new_doc.egress);
        let old_ids = before.map(CompiledLayer::policy_ids).unwrap_or_default();
        for id in old_ids {
            let old_text = before.and_then(|b| b.policy_text(id));
            match after.policy_text(id) {
                None => diff.policies.push(PolicyDiff {
                    id: id.clone(),
                    change: Change::Removed,
                    before: old_text,
                    after: None,
                }),
                Some(new_text) if Some(&new_text) != old_text.as_ref() => {
                    diff.policies.push(PolicyDiff {
                        id: id.clone(),
                        change: Change::Changed,
                        before: old_text,
                        after: Some(new_text),
                    })
                }
                Some(_) => {}
            }
        }
        for id in after.policy_ids() {
            if !old_ids.contains(id) {
                diff.policies.push(PolicyDiff {
                    id: id.clone(),
                    change: Change::Added,
                    before: None,
                    after: after.policy_text(id),
                });
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.description.is_none()
            && self.limits.is_empty()
            && self.policies.is_empty()
            && self.egress.is_empty()
    }
}

fn egress_changes(before: Option<&EgressRules>, after: &EgressRules) -> Vec<EgressRuleDiff> {
    let none = EgressRules::default();
    let before = before.unwrap_or(&none);
    let mut changes = Vec::new();
    section_changes(
        &mut changes,
        "allow_private",
        &before.allow_private,
        &after.allow_private,
    );
    section_changes(
        &mut changes,
        "credentials",
        &before.credentials,
        &after.credentials,
    );
    section_changes(&mut changes, "tokens", &before.tokens, &after.tokens);
    section_changes(&mut changes, "ca", &before.ca, &after.ca);
    section_changes(
        &mut changes,
        "client_certs",
        &before.client_certs,
        &after.client_certs,
    );
    changes
}

fn section_changes<T: PartialEq + Serialize + fmt::Debug>(
    changes: &mut Vec<EgressRuleDiff>,
    section: &'static str,
    before: &[T],
    after: &[T],
) {
    let removed = before.iter().filter(|rule| !after.contains(rule));
    let added = after.iter().filter(|rule| !before.contains(rule));
    let count = changes.len();
    for (change, rule) in removed
        .map(|rule| (Change::Removed, rule))
        .chain(added.map(|rule| (Change::Added, rule)))
    {
        changes.push(EgressRuleDiff {
            section,
            change,
            rule: inline_toml(rule),
        });
    }
    // The same rules in another order, or a duplicate dropped: still a change (the first
    // matching rule wins when two set the same header).
    if changes.len() == count && before != after {
        changes.push(EgressRuleDiff {
            section,
            change: Change::Changed,
            rule: "(the same rules, in another order or without a duplicate)".into(),
        });
    }
}

/// `{ host = "api.example.com", header = "authorization", secret = "api-key" }` with the
/// fields in the order the document declares them, or a bare value such as a CIDR string.
fn inline_toml<T: Serialize + fmt::Debug>(rule: &T) -> String {
    match toml::Value::try_from(rule) {
        // Serialized from the struct itself, not the table, to keep the declared field order.
        Ok(toml::Value::Table(_)) => match toml::to_string(rule) {
            Ok(fields) => {
                let fields: Vec<&str> = fields.lines().filter(|line| !line.is_empty()).collect();
                format!("{{ {} }}", fields.join(", "))
            }
            Err(_) => format!("{rule:?}"),
        },
        Ok(value) => value.to_string(),
        // Rules are plain strings and tables of strings, so this is not expected.
        Err(_) => format!("{rule:?}"),
    }
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|line| format!("{prefix}{line}\n"))
        .collect()
}

impl fmt::Display for LayerDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        if let Some((old, new)) = &self.description {
            writeln!(
                f,
                "description: {:?} -> {:?}",
                old.as_deref().unwrap_or(""),
                new.as_deref().unwrap_or("")
            )?;
        }
        for limit in &self.limits {
            let show = |v: Option<u64>| v.map_or("unset".to_owned(), |v| limit.limit.format(v));
            let trend = match (limit.before, limit.after) {
                (Some(old), Some(new)) if new < old => " (tightened)",
                (Some(_), Some(_)) => " (loosened)",
                (None, Some(_)) => " (now capped)",
                (Some(_), None) => " (cap removed)",
                (None, None) => "",
            };
            writeln!(
                f,
                "limits.{}: {} -> {}{trend}",
                limit.limit.as_str(),
                show(limit.before),
                show(limit.after)
            )?;
        }
        for policy in &self.policies {
            match policy.change {
                Change::Added => {
                    writeln!(f, "+ policy {}", policy.id)?;
                    f.write_str(&indent(policy.after.as_deref().unwrap_or(""), "+   "))?;
                }
                Change::Removed => {
                    writeln!(f, "- policy {}", policy.id)?;
                    f.write_str(&indent(policy.before.as_deref().unwrap_or(""), "-   "))?;
                }
                Change::Changed => {
                    writeln!(f, "~ policy {}", policy.id)?;
                    f.write_str(&indent(policy.before.as_deref().unwrap_or(""), "-   "))?;
                    f.write_str(&indent(policy.after.as_deref().unwrap_or(""), "+   "))?;
                }
            }
        }
        for rule in &self.egress {
            let sign = match rule.change {
                Change::Added => '+',
                Change::Removed => '-',
                Change::Changed => '~',
            };
            writeln!(f, "{sign} egress.{} {}", rule.section, rule.rule)?;
        }
        Ok(())
    }
}
