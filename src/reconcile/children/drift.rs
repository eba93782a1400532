//! Is a live child up to date? Compares kubundle's rendering with the object as the API server
//! stores it, which is not always the object as kubundle sent it:
//!
//! - quantities are stored in canonical form (`1000m` becomes `1`, `1024Mi` becomes `1Gi`,
//!   `1e9` becomes `1G`): under `requests`, `limits` and other quantity fields, strings are
//!   compared by the number they denote;
//! - empty values are dropped (`value: ""`, `args: []`, `labels: {}`) and the field may then be
//!   defaulted (an empty probe path becomes `/`): an empty rendered value matches anything;
//!   `false` and `0` of fields Go drops when zero match a missing value;
//! - other managers and admission webhooks add fields, map keys and list entries (a sidecar
//!   container, an env var from `kubectl set env`): those are theirs, so a rendered list of objects
//!   is matched as an ordered subsequence of the live list. Lists of scalars (`command`, `args`,
//!   CIDR ranges) are atomic in Kubernetes and must match exactly.
//!
//! Anything else that differs (a value kubundle set and someone changed, an entry of kubundle's
//! that was removed) is drift, and kubundle applies its rendering again.

use serde_json::Value;

/// Fields whose zero value means "use the default", which the API server then stores (a probe's
/// `periodSeconds: 0` is stored as 10). Only these: elsewhere a zero is a value of its own
/// (`replicas: 0`, `runAsUser: 0`) and a change from it is drift.
const DEFAULTED_WHEN_ZERO: &[&str] = &[
    "periodSeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
];

/// Map keys whose values (or whose map's values) are quantities.
const QUANTITY_KEYS: &[&str] = &["requests", "limits", "sizeLimit", "overhead", "storage"];

/// Whether `live` holds everything `desired` says, as the API server would store it.
pub fn covers(live: &Value, desired: &Value) -> bool {
    covers_at(live, desired, false)
}

fn covers_at(live: &Value, desired: &Value, quantity: bool) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| {
            let quantity = quantity || quantity_key(k);
            // An empty value is no value: the API server drops it and may default the field
            // (an empty probe path becomes "/"), so it says nothing about the live value.
            is_empty(dv)
                || (is_zero(dv) && DEFAULTED_WHEN_ZERO.contains(&k.as_str()))
                || match l.get(k) {
                    Some(lv) => covers_at(lv, dv, quantity),
                    None => is_zero(dv),
                }
        }),
        (Value::Array(l), Value::Array(d)) => {
            if d.iter().all(|v| !v.is_object()) {
                l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| covers_at(lv, dv, quantity))
            } else {
                // Each rendered entry, in order, among the live entries (others may be between).
                let mut live = l.iter();
                d.iter()
                    .all(|dv| live.by_ref().any(|lv| covers_at(lv, dv, quantity)))
            }
        }
        (Value::String(l), Value::String(d)) if quantity && l != d => {
            matches!((Quantity::parse(l), Quantity::parse(d)), (Some(a), Some(b)) if a == b)
        }
        (Value::Null, d) => is_empty(d),
        (l, d) => l == d,
    }
}

fn quantity_key(key: &str) -> bool {
    QUANTITY_KEYS.contains(&key)
}

/// Values the API server drops when it stores an object.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Zero values of fields that Go marshals with `omitempty` (`readOnly: false`): gone once stored.
fn is_zero(v: &Value) -> bool {
    matches!(v, Value::Bool(false)) || v.as_f64() == Some(0.0)
}

/// A Kubernetes quantity as an exact number: `mantissa * 10^exp10 * 2^exp2`, normalised so that
/// equal numbers compare equal.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Quantity {
    negative: bool,
    /// The value times 10^9 (Kubernetes keeps at most nanounit precision), as an integer.
    nanos: i128,
}

impl Quantity {
    /// Parses the forms core/v1 accepts: `<sign><digits>[.<digits>]<suffix>` where the suffix is
    /// binary (Ki..Ei), decimal (n, u, m, "", k, M, G, T, P, E) or an exponent (e3, E-2).
    /// Returns None for anything else, or a number too large to represent.
    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
            return None;
        }
        // digits as an integer, scaled by 10^-frac_len
        let digits = format!("{int_part}{frac_part}");
        let mut value: i128 = 0;
        for c in digits.bytes() {
            value = value.checked_mul(10)?.checked_add(i128::from(c - b'0'))?;
        }
        let mut exp10: i32 = -(frac_part.len() as i32);
        let mut exp2: u32 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            exp if exp.starts_with(['e', 'E']) => exp10 += exp[1..].parse::<i32>().ok()?,
            _ => return None,
        }
        value = value.checked_mul(1i128.checked_shl(exp2)?)?;
        // to nanounits, rounding up what is finer (as the API server does)
        let shift = exp10 + 9;
        let nanos = if shift >= 0 {
            value.checked_mul(10i128.checked_pow(shift as u32)?)?
        } else {
            let div = 10i128.checked_pow((-shift) as u32)?;
            value / div + i128::from(value % div != 0)
        };
        Some(Quantity {
            negative: negative && nanos != 0,
            nanos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_equal_as_numbers() {
        for (a, b) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1e9", "1G"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("100M", "100000k"),
            ("1E3", "1k"),
            ("0", "0m"),
            ("-0", "0"),
            ("12e-3", "12m"),
        ] {
            assert_eq!(Quantity::parse(a), Quantity::parse(b), "{a} = {b}");
            assert!(Quantity::parse(a).is_some(), "{a}");
        }
        for (a, b) in [("1", "1001m"), ("1Gi", "1G"), ("1", "-1")] {
            assert_ne!(Quantity::parse(a), Quantity::parse(b), "{a} != {b}");
        }
        for bad in ["", "lots", "1.2.3", "1Zi", ".", "1e", "--1"] {
            assert_eq!(Quantity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn stored_forms_cover_what_people_write() {
        let desired = json!({"resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"memory": "1e9"}},
                             "env": [{"name": "A", "value": ""}], "args": [], "labels": {}});
        let live = json!({"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1G"}},
                          "env": [{"name": "A"}]});
        assert!(covers(&live, &desired));
    }

    #[test]
    fn quantities_only_where_quantities_live() {
        let desired = json!({"env": [{"name": "A", "value": "1000m"}]});
        assert!(!covers(
            &json!({"env": [{"name": "A", "value": "1"}]}),
            &desired
        ));
        let desired = json!({"limits": {"cpu": "1"}});
        assert!(!covers(&json!({"limits": {"cpu": "2"}}), &desired));
    }

    #[test]
    fn entries_others_added_are_theirs() {
        let desired =
            json!({"containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}]});
        let live = json!({"containers": [
            {"name": "app", "env": [{"name": "FOO", "value": "bar"}, {"name": "A", "value": "1"}]},
            {"name": "istio-proxy"}]});
        assert!(covers(&live, &desired));
    }

    #[test]
    fn changed_or_missing_entries_are_drift() {
        let desired = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        assert!(!covers(
            &json!({"env": [{"name": "A", "value": "1"}]}),
            &desired
        ));
        assert!(!covers(
            &json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]}),
            &desired
        ));
        // order of kubundle's own entries is kept by server-side apply
        assert!(!covers(
            &json!({"env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}),
            &desired
        ));
    }

    #[test]
    fn scalar_lists_are_atomic() {
        let desired = json!({"args": ["a", "b"]});
        assert!(covers(&json!({"args": ["a", "b"]}), &desired));
        assert!(!covers(&json!({"args": ["a", "x", "b"]}), &desired));
        assert!(!covers(&json!({"args": ["a"]}), &desired));
    }

    #[test]
    fn a_removed_field_is_drift_unless_it_was_empty() {
        assert!(!covers(&json!({}), &json!({"replicas": 3})));
        assert!(covers(&json!({}), &json!({"readOnly": false, "port": 0})));
        assert!(covers(&json!({}), &json!({"x": null, "y": "", "z": []})));
        // dropped, then defaulted by the API server
        assert!(covers(&json!({"path": "/"}), &json!({"path": ""})));
        assert!(covers(
            &json!({"periodSeconds": 10}),
            &json!({"periodSeconds": 0})
        ));
        // but a zero of its own is a value
        assert!(!covers(&json!({"replicas": 3}), &json!({"replicas": 0})));
        assert!(!covers(
            &json!({"runAsUser": 1000}),
            &json!({"runAsUser": 0})
        ));
    }
}
