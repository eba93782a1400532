//! The API server's field paths said in the AppBundle's terms.
//!
//! The API server names what it refuses by its own paths: in a Deployment,
//! `spec.template.spec.initContainers[1].image`; in a pod, `spec.initContainers[1].image`. The
//! AppBundle's user wrote `spec.sidecars[1].image` (sidecars are rendered first among the init
//! containers, then the init containers proper) or `spec.image` (the main container). Each such
//! path in a message is followed by the AppBundle's own in parentheses.

use crate::api::AppBundleSpec;

/// `message` with the AppBundle's path after each pod path it names.
pub fn in_bundle_terms(message: &str, spec: &AppBundleSpec) -> String {
    let sidecars = spec.sidecars.as_ref().map_or(0, Vec::len);
    let mut out = String::with_capacity(message.len() + 32);
    let mut rest = message;
    while let Some((at, prefix)) = next_pod_path(rest) {
        out.push_str(&rest[..at]);
        let after_prefix = &rest[at + prefix.len()..];
        // The path runs to the first character that cannot be part of it (a sentence's final
        // dot is not).
        let len = after_prefix
            .find(|c: char| !(c.is_ascii_alphanumeric() || "[]._-".contains(c)))
            .unwrap_or(after_prefix.len());
        let tail = after_prefix[..len].trim_end_matches('.');
        out.push_str(prefix);
        out.push_str(tail);
        if let Some(ours) = translate(tail, sidecars) {
            out.push_str(&format!(" ({ours})"));
        }
        rest = &rest[at + prefix.len() + tail.len()..];
    }
    out.push_str(rest);
    out
}

/// The first pod path in `text`: its offset and its prefix (the part up to the containers).
fn next_pod_path(text: &str) -> Option<(usize, &'static str)> {
    ["spec.template.spec.", "spec."]
        .iter()
        .filter_map(|p| {
            // The pod part must follow the prefix directly: `initContainers[` or `containers[`.
            let mut from = 0;
            while let Some(i) = text[from..].find(p) {
                let at = from + i;
                let after = &text[at + p.len()..];
                if after.starts_with("initContainers[") || after.starts_with("containers[") {
                    return Some((at, *p));
                }
                from = at + p.len();
            }
            None
        })
        .min_by_key(|(at, p)| (*at, std::cmp::Reverse(p.len())))
}

/// `initContainers[i].x` or `containers[0].x` as the AppBundle's path.
fn translate(pod_path: &str, sidecars: usize) -> Option<String> {
    let (list, rest) = pod_path.split_once('[')?;
    let (index, rest) = rest.split_once(']')?;
    let index: usize = index.parse().ok()?;
    let field = rest.strip_prefix('.').unwrap_or(rest);
    let joined = |base: String| {
        if field.is_empty() {
            base
        } else {
            format!("{base}.{field}")
        }
    };
    match list {
        "initContainers" if index < sidecars => Some(joined(format!("spec.sidecars[{index}]"))),
        "initContainers" => Some(joined(format!("spec.initContainers[{}]", index - sidecars))),
        // The main container's fields are the spec's own (image, env, resources, probes).
        "containers" if index == 0 => Some(if field.is_empty() {
            "spec".to_string()
        } else {
            format!("spec.{field}")
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sidecars: usize) -> AppBundleSpec {
        let mut s: AppBundleSpec =
            serde_json::from_value(serde_json::json!({"image": "nginx"})).unwrap();
        if sidecars > 0 {
            s.sidecars = Some(
                (0..sidecars)
                    .map(|i| {
                        serde_json::from_value(serde_json::json!({"name": format!("s{i}")}))
                            .unwrap()
                    })
                    .collect(),
            );
        }
        s
    }

    #[test]
    fn sidecars_init_containers_and_the_main_container_are_named_as_written() {
        let m = "Deployment.apps \"web\" is invalid: spec.template.spec.initContainers[1].resources.requests: \
                 Invalid value: \"2\": must be less than or equal to cpu limit of 1";
        assert_eq!(
            in_bundle_terms(m, &spec(2)),
            "Deployment.apps \"web\" is invalid: spec.template.spec.initContainers[1].resources.requests \
             (spec.sidecars[1].resources.requests): Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        );
        assert!(
            in_bundle_terms(m, &spec(1)).contains("(spec.initContainers[0].resources.requests)")
        );
        let pod = "pods \"web-1\" is forbidden: spec.containers[0].image: Required value, spec.initContainers[0]: x";
        assert_eq!(
            in_bundle_terms(pod, &spec(1)),
            "pods \"web-1\" is forbidden: spec.containers[0].image (spec.image): Required value, \
             spec.initContainers[0] (spec.sidecars[0]): x"
        );
        let plain = "spec.selector: Invalid value: immutable";
        assert_eq!(in_bundle_terms(plain, &spec(1)), plain);
    }
}
