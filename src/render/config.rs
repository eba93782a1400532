//! The ConfigMaps and Secrets an AppBundle's pods use, and the digest of their contents that rolls
//! the pods when they change (`spec.rolloutOnConfigChange`). Pure: the reconciler reads the
//! objects (reconcile/observe/config_tracker.rs) and hands their contents in.
//!
//! A Deployment rolls its pods when its pod template changes, and a ConfigMap's new contents do
//! not change the template. So kubundle writes a digest of the contents into a pod template
//! annotation: new contents, a new digest, a rolling update. A write that changes nothing leaves
//! the digest, and the pods, as they are.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Volume};

use crate::api::AppBundleSpec;
use crate::hash::Fnv;

/// The pod template annotation holding the digest of the configuration the pods use.
pub const CONFIG_DIGEST: &str = "kubundle.dev/config-digest";

/// A kind of object holding configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        }
    }
}

/// One ConfigMap or Secret the pods use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
    /// Every use of it is marked optional: the pods start without it.
    pub optional: bool,
    /// The first field that uses it, e.g. `spec.env[2]` or `spec.podTemplate.volumes[0]`.
    pub field: String,
}

/// A container's path in the spec, and where its environment comes from.
type EnvSources<'a> = (
    String,
    Option<&'a Vec<EnvVar>>,
    Option<&'a Vec<EnvFromSource>>,
);

/// Every ConfigMap and Secret the pods use (env valueFrom, envFrom, volumes, projected volumes),
/// in every container (the main one, sidecars, init containers), each once, sorted by kind and
/// name.
pub fn references(spec: &AppBundleSpec) -> Vec<ConfigRef> {
    let mut found: BTreeMap<(ConfigKind, String), ConfigRef> = BTreeMap::new();
    let mut add = |kind: ConfigKind, name: &str, optional: Option<bool>, field: String| {
        if name.is_empty() {
            return;
        }
        let optional = optional.unwrap_or(false);
        found
            .entry((kind, name.to_string()))
            .and_modify(|r| r.optional &= optional)
            .or_insert(ConfigRef {
                kind,
                name: name.to_string(),
                optional,
                field,
            });
    };
    let mut containers: Vec<EnvSources> = vec![(
        "spec".to_string(),
        spec.env.as_ref(),
        spec.env_from.as_ref(),
    )];
    for (list, items) in [
        ("sidecars", spec.sidecars.as_ref()),
        ("initContainers", spec.init_containers.as_ref()),
    ] {
        for (i, c) in items.into_iter().flatten().enumerate() {
            containers.push((
                format!("spec.{list}[{i}]"),
                c.env.as_ref(),
                c.env_from.as_ref(),
            ));
        }
    }
    for (path, env, env_from) in containers {
        for (i, e) in env.into_iter().flatten().enumerate() {
            let Some(from) = e.value_from.as_ref() else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                add(
                    ConfigKind::ConfigMap,
                    &r.name,
                    r.optional,
                    format!("{path}.env[{i}]"),
                );
            }
            if let Some(r) = &from.secret_key_ref {
                add(
                    ConfigKind::Secret,
                    &r.name,
                    r.optional,
                    format!("{path}.env[{i}]"),
                );
            }
        }
        for (i, e) in env_from.into_iter().flatten().enumerate() {
            if let Some(r) = &e.config_map_ref {
                add(
                    ConfigKind::ConfigMap,
                    &r.name,
                    r.optional,
                    format!("{path}.envFrom[{i}]"),
                );
            }
            if let Some(r) = &e.secret_ref {
                add(
                    ConfigKind::Secret,
                    &r.name,
                    r.optional,
                    format!("{path}.envFrom[{i}]"),
                );
            }
        }
    }
    let volumes: &[Volume] = spec
        .pod_template
        .as_ref()
        .and_then(|p| p.volumes.as_deref())
        .unwrap_or_default();
    for (i, v) in volumes.iter().enumerate() {
        let field = format!("spec.podTemplate.volumes[{i}]");
        if let Some(c) = &v.config_map {
            add(ConfigKind::ConfigMap, &c.name, c.optional, field.clone());
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            add(ConfigKind::Secret, name, s.optional, field.clone());
        }
        let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in sources.into_iter().flatten() {
            if let Some(c) = &source.config_map {
                add(ConfigKind::ConfigMap, &c.name, c.optional, field.clone());
            }
            if let Some(s) = &source.secret {
                add(ConfigKind::Secret, &s.name, s.optional, field.clone());
            }
        }
    }
    found.into_values().collect()
}

/// The hash of one object's contents, as 16 hex digits: its entries (`data`, then `binaryData`
/// or a Secret's `data`), each section in key order.
pub fn content_hash<'a>(sections: &[&[(&'a str, &'a [u8])]]) -> String {
    let mut h = Fnv::default();
    for entries in sections {
        h.field(&(entries.len() as u64).to_le_bytes());
        for (k, v) in *entries {
            h.field(k.as_bytes());
            h.field(v);
        }
    }
    h.hex()
}

/// The digest of the configuration: 16 hex digits of FNV-1a (64 bit) over each object's kind,
/// name and content hash ([`content_hash`]; `None`: it does not exist), in [`references`] order.
/// Stable across kubundle versions and restarts: a new digest means new contents, and so new pods.
pub fn digest(objects: &[(&ConfigRef, Option<&str>)]) -> String {
    let mut h = Fnv::default();
    for (r, contents) in objects {
        h.field(r.kind.name().as_bytes());
        h.field(r.name.as_bytes());
        h.field(contents.unwrap_or("absent").as_bytes());
    }
    h.hex()
}

/// Puts the digest on the Deployment's pod template.
pub fn annotate(deployment: &mut Deployment, digest: &str) {
    let meta = deployment
        .spec
        .as_mut()
        .map(|s| s.template.metadata.get_or_insert_with(Default::default));
    if let Some(meta) = meta {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(CONFIG_DIGEST.to_string(), digest.to_string());
    }
}

/// The digest on a live Deployment's pod template, if it has one.
pub fn digest_of(deployment: &Deployment) -> Option<&str> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_DIGEST))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> AppBundleSpec {
        let mut base = json!({"image": "app:1", "ports": [{"containerPort": 80}]});
        base.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn every_kind_of_use_in_every_container_is_found_once() {
        let s = spec(json!({
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "b"}}},
                {"name": "C", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "c", "optional": true}}},
            ],
            "envFrom": [{"configMapRef": {"name": "app"}}],
            "sidecars": [{"name": "proxy", "image": "p", "envFrom": [{"secretRef": {"name": "proxy-creds"}}]}],
            "initContainers": [{"name": "migrate", "image": "m",
                "env": [{"name": "D", "valueFrom": {"configMapKeyRef": {"name": "migrations", "key": "d"}}}]}],
            "podTemplate": {"volumes": [
                {"name": "conf", "configMap": {"name": "files", "optional": true}},
                {"name": "tls", "secret": {"secretName": "tls"}},
                {"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "files"}},
                    {"secret": {"name": "creds"}},
                    {"serviceAccountToken": {"path": "token"}}
                ]}}
            ]},
        }));
        let refs = references(&s);
        let summary: Vec<(ConfigKind, String, bool, String)> = refs
            .into_iter()
            .map(|r| (r.kind, r.name, r.optional, r.field))
            .collect();
        use ConfigKind::*;
        let expected: Vec<(ConfigKind, String, bool, String)> = [
            (ConfigMap, "app", false, "spec.env[1]"),
            // optional in one use, required in another: required
            (ConfigMap, "files", false, "spec.podTemplate.volumes[0]"),
            (
                ConfigMap,
                "migrations",
                false,
                "spec.initContainers[0].env[0]",
            ),
            (Secret, "creds", false, "spec.env[2]"),
            (Secret, "proxy-creds", false, "spec.sidecars[0].envFrom[0]"),
            (Secret, "tls", false, "spec.podTemplate.volumes[1]"),
        ]
        .into_iter()
        .map(|(k, n, o, f)| (k, n.to_string(), o, f.to_string()))
        .collect();
        assert_eq!(summary, expected);
    }

    #[test]
    fn an_optional_only_use_stays_optional() {
        let s = spec(json!({"podTemplate": {"volumes": [
            {"name": "conf", "configMap": {"name": "files", "optional": true}}]}}));
        assert!(references(&s)[0].optional);
    }

    #[test]
    fn the_digest_follows_the_contents_only() {
        let r = ConfigRef {
            kind: ConfigKind::ConfigMap,
            name: "app".into(),
            optional: false,
            field: "spec.env[0]".into(),
        };
        let hash = |pairs: &[(&str, &str)]| {
            let entries: Vec<(&str, &[u8])> =
                pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
            content_hash(&[&entries, &[]])
        };
        let one = hash(&[("a", "1"), ("b", "2")]);
        let other = hash(&[("a", "1"), ("b", "3")]);
        let shifted = hash(&[("a", "1b"), ("", "2")]);
        let moved: String = {
            let entries: Vec<(&str, &[u8])> = vec![("a", b"1"), ("b", b"2")];
            content_hash(&[&[], &entries])
        };
        assert_ne!(one, other);
        assert_ne!(one, shifted);
        assert_ne!(one, moved, "data and binaryData are told apart");
        let d = |c: Option<&str>| digest(&[(&r, c)]);
        assert_eq!(d(Some(&one)), d(Some(&hash(&[("a", "1"), ("b", "2")]))));
        assert_ne!(d(Some(&one)), d(Some(&other)));
        assert_ne!(d(Some(&one)), d(None));
        assert_eq!(d(Some(&one)).len(), 16);
    }
}
