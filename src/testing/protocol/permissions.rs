//! Effective permissions (protocol section 3.2, step 6) and the gateway's permission
//! expression evaluator (step 8), quirks included.

use std::collections::BTreeSet;

use super::{ResourceKind, resource_kind};
use crate::testing::model::{ScopeDefinition, TokenGrant};

/// Scopes plus scope-definition-mapped permissions, sorted bytewise, deduplicated.
pub(crate) fn effective_permissions(grant: &TokenGrant, defs: &[ScopeDefinition]) -> Vec<String> {
    let mut set: BTreeSet<String> = grant.scopes.iter().cloned().collect();
    let kind = grant.granted_resource.as_deref().and_then(resource_kind);
    let category = match kind {
        Some(ResourceKind::Organization) => Some("organization"),
        Some(ResourceKind::Workspace) => Some("workspace"),
        _ => None,
    };
    if let Some(category) = category {
        for def in defs {
            if !grant.scopes.contains(&def.scope) || def.category.trim().to_lowercase() != category {
                continue;
            }
            let permission = if kind == Some(ResourceKind::Organization) {
                def.organization_permission.as_deref()
            } else {
                def.workspace_permission.as_deref()
            };
            if let Some(permission) = permission.map(str::trim).filter(|p| !p.is_empty()) {
                set.insert(permission.to_owned());
            }
        }
    }
    // BTreeSet<String> iterates in byte order.
    set.into_iter().collect()
}

// ---------------------------------------------------------------------------------------
// Permission expressions (section 3.2 step 8)
// ---------------------------------------------------------------------------------------

/// Builds the joined expression from `required_permissions`; `None` means no check.
pub(crate) fn permission_expression(required: Option<&[String]>) -> Option<String> {
    let parts: Vec<&str> = required?.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(" AND "))
    }
}

/// Evaluates a joined permission expression against `permissions`, bug for bug.
pub(crate) fn evaluate_permissions(expression: &str, permissions: &[String]) -> bool {
    let has = |name: &str| permissions.iter().any(|p| p == name);
    if !expression.contains(" AND ") && !expression.contains(" OR ") {
        // Simple path: comma-separated list, all required.
        return expression.split(',').map(str::trim).filter(|p| !p.is_empty()).all(has);
    }
    evaluate_operators(expression, &has, 0)
}

/// Parenthesis nesting beyond this is looked up literally (false), so that a hostile
/// expression cannot overflow the stack of the test process.
const MAX_GROUP_DEPTH: usize = 32;

/// Operator path: parentheses spanning the whole expression are unwrapped; any other
/// parenthesised group is replaced by the literal word `true` or `false`, which is then
/// looked up as a permission name. `OR` binds loosest, `AND` tighter.
fn evaluate_operators(expression: &str, has: &dyn Fn(&str) -> bool, depth: usize) -> bool {
    let expr = expression.trim();
    if depth > MAX_GROUP_DEPTH {
        return has(expr);
    }
    if let Some(inner) = strip_enclosing_group(expr) {
        return evaluate_operators(inner, has, depth + 1);
    }
    let substituted = substitute_groups(expr, has, depth);
    substituted
        .split(" OR ")
        .any(|conjunction| conjunction.split(" AND ").map(str::trim).all(has))
}

/// If `expr` is one parenthesised group from its first to its last byte, its inside.
fn strip_enclosing_group(expr: &str) -> Option<&str> {
    if !expr.starts_with('(') {
        return None;
    }
    let close = matching_paren(expr, 0)?;
    (close == expr.len() - 1).then(|| &expr[1..close])
}

/// Byte index of the `)` matching the `(` at `open`.
fn matching_paren(expr: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in expr.bytes().enumerate().skip(open) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Replaces each complete top-level `( … )` group by `true`/`false` (its evaluation).
fn substitute_groups(expr: &str, has: &dyn Fn(&str) -> bool, depth: usize) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(open) = rest.find('(') {
        let Some(close) = matching_paren(rest, open) else {
            break;
        };
        out.push_str(&rest[..open]);
        let value = evaluate_operators(&rest[open + 1..close], has, depth + 1);
        out.push_str(if value { "true" } else { "false" });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}
